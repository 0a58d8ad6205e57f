"""`autointerp plant` (issue #17): model B of a planted difference, made by one command. On the
hand-built induction GPT-2 it must find and zero the induction head (L1/H0), print its score,
write a model directory that loads and differs from A only in that head's W_O, and refuse an
existing non-empty --out with one line, before the model loads."""

import json
import re

import pytest
import torch
from tinykit import induction_gpt2, run_cli_lines, save_model_dir

from autointerp.models import HookedModel


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model_dir(induction_gpt2(spec="toy-a"), tmp_path_factory.mktemp("a") / "A")


def test_plant_zeroes_the_induction_head(model_dir, tmp_path, capsys):
    out = tmp_path / "B"
    code, stdout, err = run_cli_lines(["plant", "--model", model_dir, "--heads", "1", "--out", out, "--json"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    assert [h["unit"] for h in rec["heads"]] == ["L1/H0"] and rec["heads"][0]["score"] > 0.5
    assert rec["chosen"] == "strongest" and rec["detector"] == "induction" and rec["out"] == str(out)
    assert json.loads((out / "plant.json").read_text()) == rec
    a, b = HookedModel.load(str(model_dir), progress=False), HookedModel.load(str(out), progress=False)
    assert float(b.W_O(1)[0].abs().sum()) == 0.0 < float(a.W_O(1)[0].abs().sum())
    changed = [n for (n, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters())
               if not torch.equal(pa, pb)]
    assert changed == ["transformer.h.1.attn.c_proj.weight"]
    assert torch.equal(b.W_O(1)[1:], a.W_O(1)[1:]) and torch.equal(b.W_O(0), a.W_O(0))
    # the human form names the head and its score; given heads are zeroed as given
    out2 = tmp_path / "B2"
    code, stdout, err = run_cli_lines(["plant", "--model", model_dir, "--heads", "L0/H1,L1/H0", "--out", out2], capsys)
    assert code == 0, err
    assert re.search(r"zeroed \(as given; induction score\): L0/H1 0\.0\d, L1/H0 0\.6\d", stdout), stdout
    assert f"next: autointerp diff {model_dir} {out2}" in stdout
    b2 = HookedModel.load(str(out2), progress=False)
    assert float(b2.W_O(0)[1].abs().sum()) == 0.0 == float(b2.W_O(1)[0].abs().sum())


@pytest.mark.parametrize("args,names,before_load", [
    (["--heads", "0"], "--heads", True),
    (["--heads", ","], "--heads", True),
    (["--heads", "L1/N3"], "not a head", True),
    (["--heads", "L1/H0,zz"], "--heads zz: not a head", True),
    (["--out", "NONEMPTY"], "not empty", True),
    (["--out", "FILE"], "a file", True),
    (["--detector", "nope"], "--detector", True),
    (["--heads", "99"], "--heads 99", False),      # the model has 8 heads
    (["--heads", "L5/H0"], "out of range", False),
])
def test_bad_input_is_one_line(args, names, before_load, model_dir, tmp_path, capsys, monkeypatch):
    if before_load:                                 # a load now would fail the command with exit 1
        from autointerp.models import hooked

        monkeypatch.setattr(hooked.HookedModel, "load", classmethod(lambda *a, **k: 1 / 0))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [{"NONEMPTY": str(full), "FILE": str(afile)}.get(a, a) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "B")]
    code, out, err = run_cli_lines(["plant", "--model", model_dir, *args], capsys)
    err = [ln for ln in err if not ln.startswith("Loading weights")]    # the loader's progress bar, if it loaded
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and names in err[0], err
    assert (full / "keep.txt").read_text() == "mine" and sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert afile.read_text() == "x" and not (tmp_path / "B").exists()
