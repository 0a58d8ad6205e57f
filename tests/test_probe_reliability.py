"""The fast part of scripts/probe_reliability.py (issue #25 item 9), run as tests: bad values for
the commands that load a model, and LLM faults through `explain` and `pairs`, each case its own
`autointerp` process with a timeout (the slow probes, kill -9 x3 and 3 workers + merge + serve,
run in the script; tests/batch covers one kill and two workers)."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_reliability", ROOT / "scripts" / "probe_reliability.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def probe_tmp(tmp_path_factory, probe):
    tmp = tmp_path_factory.mktemp("probe")
    probe.tiny_model(tmp)
    return tmp


def test_bad_values_to_model_commands_are_clean(probe, probe_tmp):
    """One bad value per numeric option of explain, pairs and batch (the value cycles through the
    bad kinds): exit 2, one error line, no traceback, nothing made, the model never used."""
    model_dir, _ = probe.tiny_model(probe_tmp)
    cases = probe.bad_input_cases(model_dir, only={"explain", "pairs", "batch"})
    picked = cases[::16]
    assert len(picked) >= 4
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda ia: probe.run_bad_input(ia[1], probe_tmp / "cases", ia[0]), enumerate(picked)))
    unclean = [(" ".join(r["argv"][:4]), r["problems"], r["error"]) for r in results if not r["clean"]]
    assert not unclean, unclean
    assert all(r["seconds"] < 30 for r in results), [(r["argv"][:4], r["seconds"]) for r in results]


@pytest.mark.parametrize("cmd,faults", [("explain", ("trickle",)), ("pairs", ("garbage",))])
def test_llm_faults_bounded_one_line_nothing_stored(probe, probe_tmp, cmd, faults):
    said = []
    r = probe.probe_llm_faults(probe_tmp, faults=faults, commands=(cmd,), llm_timeout=3.0, bound=45.0, say=said.append)
    assert r["tried"] == len(faults)
    bad = [c for c in r["cases"] if not c["clean"]]
    assert not bad, bad
    for c in r["cases"]:
        assert c["exit"] != 0, c          # a faulty LLM cannot make this succeed
        assert c["error"].startswith("error:"), c
    assert said[-1].startswith(f"SUMMARY llm_faults: {len(faults)} tried")
