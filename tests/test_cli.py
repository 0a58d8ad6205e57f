"""The CLI's contract: commands listed, one-line errors, exit codes, --json only JSON."""

import json
import subprocess
import sys


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "autointerp", *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ["models", "trace"]:
        assert cmd in r.stdout


def test_models_json():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    aliases = {row["alias"] for row in rows}
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b"} <= aliases


def test_models_table():
    r = run("models")
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m *" in r.stdout and "pip install" in r.stdout


def test_unknown_model_is_one_line_error():
    r = run("trace", "hello", "--model", "no-such-model-xyz")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_command_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2
    assert r.stderr.startswith("error:")
