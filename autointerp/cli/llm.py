"""`autointerp llm check`: the first thing to run on a new endpoint."""

from __future__ import annotations

import click

from . import cli
from .common import emit, json_option, llm_options, settings


@cli.group("llm")
def llm_group() -> None:
    """The LLM that explains and simulates: embedded:SPEC (in-process) or openai:MODEL (any OpenAI-compatible server)."""


@llm_group.command("check")
@llm_options
@json_option
def check(llm_spec: str | None, llm_base_url: str | None, as_json: bool) -> None:
    """Connect, send one tiny request, and report the model, latency and whether prompt logprobs work.

    \b
    autointerp llm check                                    # embedded:smollm2-135m
    OPENAI_API_KEY=... autointerp llm check --llm openai:gpt-4o-mini
    autointerp llm check --llm openai:qwen --llm-base-url http://127.0.0.1:8000/v1
    """
    from ..llm import get_llm
    from ..llm.check import check_llm

    s = settings(llm=llm_spec, llm_base_url=llm_base_url)
    llm = get_llm(s.llm, base_url=s.llm_base_url, settings=s)
    info = check_llm(llm)

    def human() -> None:
        where = f" at {info['base_url']}" if info.get("base_url") else ""
        click.echo(f"ok: {info['name']}{where} answered in {info['latency_s']:.2f}s: {info['reply']!r}")
        if info["prompt_logprobs"]:
            click.echo(f"prompt logprobs: yes ({info['prompt_logprobs_note']})")
        else:
            click.echo(f"prompt logprobs: no, the JSON simulator will be used ({info['prompt_logprobs_note']})")

    emit(as_json, info, human)
