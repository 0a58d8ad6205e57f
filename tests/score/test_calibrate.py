"""calibrate end to end on planted units mined from a real text file with the tiny tokenizer:
a simulator that reads explanations right is found to discriminate (AUROC 1), the exact scorer
too, results are stored; a malformed --units file fails in one line before any model loads."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

from autointerp.pipeline.calibrate import CalibrateSettings, calibrate
from autointerp.score.splits import SplitSizes
from autointerp.store import Store
from tinykit import WORDS, run_cli, tiny_tokenizer

_spec = importlib.util.spec_from_file_location("_explain_conftest", Path(__file__).parents[1] / "explain" / "conftest.py")
_ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ex)

UNITS = [
    {"name": "pets", "explanation": 'the tokens "cat" and "dog"', "rule": {"tokens": ["cat", "dog"]},
     "decoys": [{"text": 'the tokens "house" and "tree"', "rule": {"tokens": ["house", "tree"]}}]},
    {"name": "colours", "explanation": 'the tokens "red" and "blue"', "rule": {"tokens": ["red", "blue"]},
     "decoys": [{"text": 'the tokens "big" and "small"', "rule": {"tokens": ["big", "small"]}}, "the weather"]},
    {"name": "names", "explanation": 'the tokens "mary" and "john"', "rule": {"tokens": ["mary", "john"]},
     "decoys": [{"text": 'the tokens "park" and "store"', "rule": {"tokens": ["park", "store"]}}]},
]


@pytest.fixture
def setup(tmp_path):
    rng = random.Random(0)
    words = [w for w in WORDS if w not in ".,"]
    (tmp_path / "c.txt").write_text(" ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) + " ."
                                             for _ in range(900)))
    (tmp_path / "units.json").write_text(json.dumps({"units": UNITS}))
    store = Store(tmp_path / "cal.db")
    return tmp_path, store


def test_calibrate_finds_the_true_explanations(setup):
    tmp, store = setup
    llm = _ex.FakeLLM(replies=['"cat" and "dog"'], store=store)
    s = CalibrateSettings(n_tokens=64 * 120, corpus=str(tmp / "c.txt"), scorers=("simulation", "exact"),
                          sizes=SplitSizes(n_train=4, n_calib=0, n_test=3), n_boot=100)
    rep = calibrate(store, llm, tokenizer=tiny_tokenizer(), model_id="tiny", units_file=tmp / "units.json", settings=s)
    assert rep["summary"]["n_units"] == 3 and not rep["skipped"]
    sim, ex = (rep["scorers"][k] for k in ("simulation", "exact"))
    assert sim["auroc"] == 1.0 and sim["n_true"] == 3 and sim["n_decoy"] == 3 and sim["units_true_beats_all"] == 3
    assert sim["n_null"] == 1                                  # "the weather" quotes nothing: a constant simulation
    assert ex["auroc"] == 1.0 and ex["n_decoy"] == 3            # the rule-less decoy has no exact score
    # recovery: the fake explainer always says "cat" and "dog": right for pets only
    rec = sim["recovery"]
    assert rec["n"] == 3 and rec["llm_beats_all_decoys"] >= 1
    # stored, with its LLM and templates, for explain/stats/viewer
    (row,) = store.calibrations("fake:fake-1")
    assert row["results"]["summary"]["simulation_auroc"] == 1.0 and row["templates"]["simulation"]
    assert store.stats()["calibrations"]["fake:fake-1"]["simulation_auroc"] == 1.0


def test_a_scorer_that_cannot_read_explanations_is_at_chance(setup):
    tmp, store = setup

    class Blind(_ex.FakeLLM):
        name = "fake:blind"

        @staticmethod
        def _words(text):          # ignores the explanation: the same guess whatever it says
            return {"cat"}

    s = CalibrateSettings(n_tokens=64 * 120, corpus=str(tmp / "c.txt"), scorers=("simulation",), explain=False,
                          sizes=SplitSizes(n_train=4, n_calib=0, n_test=3), n_boot=100)
    rep = calibrate(store, Blind(store=store), tokenizer=tiny_tokenizer(), model_id="tiny",
                    units_file=tmp / "units.json", settings=s)
    assert rep["scorers"]["simulation"]["auroc"] == 0.5      # every explanation gets the same score


def test_bad_units_file_is_one_line_before_the_model_loads(tmp_path, capsys):
    bad = tmp_path / "u.json"
    bad.write_text('{"units": [{"name": "x", "explanation": "y", "rule": {"regex": "("}}]}')
    code, out, err = run_cli(capsys, "calibrate", "--units", bad, "--store", tmp_path / "s.db", "--model", "/nonexistent")
    assert code == 2 and err.count("\n") == 1 and "bad regular expression" in err
    assert not (tmp_path / "s.db").exists()
