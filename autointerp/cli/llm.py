"""`autointerp llm check` and `autointerp llm serve`."""

from __future__ import annotations

import click

from . import cli
from .common import emit, json_option, llm_options, settings, store_option


@cli.group("llm")
def llm_group() -> None:
    """The LLM that explains and simulates: embedded:SPEC (in-process) or openai:MODEL (any OpenAI-compatible server)."""


@llm_group.command("check")
@llm_options
@store_option
@json_option
def check(llm_spec: str | None, llm_base_url: str | None, store_path, as_json: bool) -> None:
    """Connect, send one tiny request, probe what the endpoint really returns (prompt logprobs
    lined up with the prompt, top-k width, chat-only), and say which simulator and judge a run
    will use. Fails (exit 1, one line) on an unreachable endpoint or an empty/unusable reply.
    With --store the check's LLM calls are recorded there.

    \b
    autointerp llm check                                    # embedded:smollm2-135m
    OPENAI_API_KEY=... autointerp llm check --llm openai:gpt-4o-mini
    autointerp llm check --llm openai:smollm2-135m --llm-base-url http://127.0.0.1:8000/v1
    """
    from ..llm import get_llm
    from ..llm.check import check_llm

    s = settings(llm=llm_spec, llm_base_url=llm_base_url, store=store_path)
    store = None
    if store_path is not None:
        from ..store import Store

        store = Store(s.store)
    try:
        llm = get_llm(s.llm, base_url=s.llm_base_url, settings=s, store=store)
        info = check_llm(llm)
    finally:
        if store is not None:
            store.close()

    def human() -> None:
        where = f" at {info['base_url']}" if info.get("base_url") else ""
        click.echo(f"ok: {info['name']}{where} answered in {info['latency_s']:.2f}s: {info['reply']!r}")
        caps = info["capabilities"]
        if caps.get("completions") is False:
            click.echo("completions: no (a chat-only endpoint)")
        if info["prompt_logprobs"]:
            width = f", top-{info['top_k']}" if info.get("top_k") else ""
            click.echo(f"prompt logprobs: yes{width} ({info['prompt_logprobs_note']})")
        else:
            click.echo(f"prompt logprobs: no ({info['prompt_logprobs_note']})")
        click.echo(f"simulator: {info['simulator']} ({info['simulator_note']})")
        click.echo(f"judge: {info['judge']} ({info['judge_note']})")

    emit(as_json, info, human)


@llm_group.command("serve")
@click.option("--model", "model_spec", default="smollm2-135m", show_default=True,
              help="The embedded model to serve (packaged alias, .gguf file, local dir or hub id).")
@click.option("--mode", type=click.Choice(["vllm", "llamacpp", "chat-only", "structured"]), default="vllm", show_default=True,
              help="vllm: echo gives prompt logprobs; llamacpp: logprobs for generated tokens only; chat-only: no "
                   "/v1/completions; structured: vllm + chat honours a JSON schema (response_format / guided_json).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port; 0 picks a free one.")
@click.option("--latency", type=float, default=0.0, show_default=True, help="Seconds added to every request.")
@click.option("--served-name", default=None, help="Model name clients ask for [default: the model spec].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None, help="Device [default: auto].")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None, help="Weights dtype [default: float32].")
@click.option("--verbose", is_flag=True, help="Log every request on stderr.")
def serve(model_spec, mode, host, port, latency, served_name, device, dtype, verbose) -> None:
    """Serve the embedded model over an OpenAI-compatible HTTP API (/v1/models,
    /v1/chat/completions, /v1/completions), so tests, benchmarks and several batch workers share
    one model process. Prints the base URL, then serves until interrupted.

    \b
    autointerp llm serve --port 0                      # prints http://127.0.0.1:PORT/v1
    autointerp llm serve --mode llamacpp --latency 0.5
    autointerp llm check --llm openai:smollm2-135m --llm-base-url http://127.0.0.1:8000/v1
    """
    from ..errors import UsageError
    from ..llm.embedded import EmbeddedLLM
    from ..llm.serve import LLMServer

    if latency < 0:
        raise UsageError(f"--latency must be 0 or more, got {latency:g}")
    s = settings(device=device, dtype=dtype)
    llm = EmbeddedLLM(model_spec, device=s.device, dtype=s.dtype)
    try:
        srv = LLMServer(llm, host=host, port=port, mode=mode, latency=latency, served_name=served_name, quiet=not verbose)
    except OSError as e:
        raise UsageError(f"cannot bind {host}:{port}: {e.strerror or e}") from None
    click.echo(f"serving {llm.name} as {srv.served_name!r} ({mode} mode) at {srv.url}", err=False)
    click.echo(f"  autointerp llm check --llm openai:{srv.served_name} --llm-base-url {srv.url}")
    import sys

    sys.stdout.flush()
    try:
        srv.serve_forever()
    finally:
        srv.httpd.server_close()
