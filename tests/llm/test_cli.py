"""`autointerp llm check` against the local fake server (and its error paths)."""

from __future__ import annotations

import json

import pytest

from .conftest import SECRET


class Run:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the CLI in this process (as `autointerp ...` would), capturing its output."""
    from autointerp.cli import main

    def run(*args, env_extra=None):
        for k, v in (env_extra or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


def test_check_json(server, api_key, run_cli):
    r = run_cli("llm", "check", "--llm", "openai:test-model", "--llm-base-url", server.url, "--json",
                env_extra={"OPENAI_API_KEY": SECRET})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["backend"] == "openai" and info["model"] == "test-model" and info["prompt_logprobs"] is True
    assert info["latency_s"] >= 0 and info["base_url"] == server.url
    assert SECRET not in r.stdout + r.stderr


def test_check_no_logprobs_human(server, api_key, run_cli):
    del server.default["/v1/completions"]
    r = run_cli("llm", "check", "--llm", "openai:m", "--llm-base-url", server.url, env_extra={"OPENAI_API_KEY": SECRET})
    assert r.returncode == 0, r.stderr
    assert "prompt logprobs: no" in r.stdout


def test_check_bad_key_and_unknown_model(server, api_key, run_cli):
    server.queue("chat/completions", 401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    r = run_cli("llm", "check", "--llm", "openai:m", "--llm-base-url", server.url, env_extra={"OPENAI_API_KEY": SECRET})
    assert r.returncode == 1 and "rejected the API key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and SECRET not in r.stderr + r.stdout
    server.queue("chat/completions", 404, {"error": {"message": "model 'nope' not found"}})
    r = run_cli("llm", "check", "--llm", "openai:nope", "--llm-base-url", server.url, "--json")
    assert r.returncode == 1 and "no model 'nope'" in r.stderr and r.stdout == ""


def test_check_unreachable(api_key, run_cli):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_cli("llm", "check", "--llm", "openai:m", "--llm-base-url", f"http://127.0.0.1:{port}/v1",
                env_extra={"AUTOINTERP_LLM_MAX_ATTEMPTS": "1"})
    assert r.returncode == 1 and "cannot reach" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_spec(run_cli):
    r = run_cli("llm", "check", "--llm", "gpt-4")
    assert r.returncode == 2 and "unknown LLM spec" in r.stderr


def test_check_fails_on_an_empty_reply(server, api_key, run_cli):
    from .conftest import chat_body

    server.queue("chat/completions", 200, chat_body(["   "]))
    r = run_cli("llm", "check", "--llm", "openai:m", "--llm-base-url", server.url)
    assert r.returncode == 1 and "empty reply" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_check_llm_timeout_flag(server, api_key, run_cli, tmp_path):
    from .conftest import chat_body

    server.queue("chat/completions", 200, chat_body(["late"]), delay=2.0, times=3)
    db = tmp_path / "c.db"
    r = run_cli("llm", "check", "--llm", "openai:m", "--llm-base-url", server.url, "--llm-timeout", "0.25", "--store", str(db))
    assert r.returncode == 1 and "timed out (waited 0.25s, 0.5s; 2 attempts" in r.stderr
    assert server.hits["/v1/chat/completions"] == 2
    from autointerp.store import Store

    with Store(db) as s:
        errs = [row["error"] for row in s.query("select error from llm_calls order by id")]
    assert len(errs) == 2 and "read timeout" in errs[0]
    r = run_cli("llm", "check", "--llm-timeout", "0")
    assert r.returncode == 2 and "--llm-timeout" in r.stderr


def test_timeout_flag_in_help(run_cli):
    for cmd in (["llm", "check"], ["explain"]):
        r = run_cli(*cmd, "--help")
        assert "--llm-timeout" in r.stdout


def test_settings_resolved_by_the_cli_reach_the_llm_the_pipeline_makes(server, api_key, tiny_llama, tmp_path, capsys,
                                                                          monkeypatch):
    """explain makes its LLM inside the pipeline: the command's flags and config file still reach it
    (resolved once by the CLI and passed down; nothing global)."""
    import random

    from tinykit import WORDS, run_cli as run_in_process, save_model_dir

    from .conftest import chat_body

    model = save_model_dir(tiny_llama, tmp_path / "model")
    rng = random.Random(0)
    (tmp_path / "c.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(200)))
    toml = tmp_path / "autointerp.toml"
    toml.write_text("llm_timeout = 0.25\nllm_max_attempts = 2\n")
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(toml))
    for k in ("AUTOINTERP_LLM_TIMEOUT", "AUTOINTERP_LLM_MAX_ATTEMPTS"):
        monkeypatch.delenv(k, raising=False)
    server.queue("chat/completions", 200, chat_body(["late"]), delay=1.5, times=6)
    args = ["explain", "--unit", "L1/N3", "--model", model, "--device", "cpu", "--corpus", tmp_path / "c.txt",
            "--n-tokens", "4096", "--llm", "openai:m", "--llm-base-url", server.url, "--store", tmp_path / "s.db"]
    code, out, err = run_in_process(capsys, *args)                    # the config file's timeout and attempts
    assert code == 1 and "timed out (waited 0.25s, 0.5s; 2 attempts" in err, err
    code, out, err = run_in_process(capsys, *args, "--llm-timeout", "0.3")     # the flag over the file
    assert code == 1 and "timed out (waited 0.3s, 0.6s; 2 attempts" in err, err
