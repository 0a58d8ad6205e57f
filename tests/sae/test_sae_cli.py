"""The SAE faces end to end on a tiny model saved to disk: `sae train` writes an SAE that
`mine --sae` and `explain --unit L1/F<i> --sae` use; bad SAE input exits 2 with one line."""

from __future__ import annotations

import json

import pytest

from tinykit import word_corpus


def _main(args, capsys):
    from tinykit import run_cli_lines

    return run_cli_lines(args, capsys)


@pytest.fixture(scope="module")
def env(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    tiny_llama.model.save_pretrained(d / "model")
    tiny_llama.tokenizer.save_pretrained(d / "model")
    word_corpus(d / "c.txt", 120, seed=1)
    return d


def test_train_mine_explain_from_the_cli(env, capsys):
    m, c, s, st = str(env / "model"), str(env / "c.txt"), str(env / "l1"), str(env / "s.db")
    common = ["--model", m, "--device", "cpu"]
    code, out, err = _main(["sae", "train", *common, "--layer", "1", "--latents", "128", "--k", "4", "--tokens", "2048",
                            "--corpus", c, "--context-len", "32", "--minibatch", "64", "--lr", "3e-3", "--out", s, "--json"],
                           capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["latents"] == 128 and rep["l0"] <= 4 and 0 < rep["explained_variance"] <= 1
    code, out, err = _main(["mine", *common, "--sae", s, "--tokens", "2048", "--context-len", "32", "--corpus", c,
                            "--top-k", "6", "--random", "4", "--quantiles", "3", "--store", st, "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["units"] == "latents" and got["saes"][0]["name"] == "l1" and got["n_units"] == 128
    assert got["latents"][0]["d_sae"] == 128 and got["records"]["top"] > 0
    d = got["latents"][0]
    assert 0 < d["median_freq"] <= d["max_freq"] <= 1 and 0 < d["l0"] <= 4
    code, out, err = _main(["mine", *common, "--sae", s, "--tokens", "2048", "--context-len", "32", "--corpus", c,
                            "--top-k", "6", "--random", "4", "--quantiles", "3", "--store", st], capsys)
    assert code == 0, err                                 # the same run again (stored): the human summary
    assert f"SAE l1 (blocks.1.resid_post, 128 latents): L0 {d['l0']:.1f}, dead {d['dead']}" in out
    from autointerp.store import Store

    stats = Store(st).query("select unit, frac_active from unit_stats where unit like 'L1/F%@l1' order by frac_active desc")
    assert len(stats) == 128
    busiest = stats[0]["unit"].split("@")[0]
    code, out, err = _main(["explain", *common, "--unit", busiest, "--sae", s, "--explainer", "baseline", "--store", st,
                            "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["unit"] == busiest + "@l1" and res["run_id"] == got["run_id"] and res["baseline"]["text"]
    code, out, err = _main(["explain", *common, "--unit", busiest + "@l1", "--explainer", "baseline", "--store", st,
                            "--json"], capsys)                    # the registered name alone finds the SAE
    assert code == 0, err and json.loads(out)["unit"] == busiest + "@l1"
    code, out, err = _main(["sae", "list", "--store", st, "--json"], capsys)
    assert code == 0 and json.loads(out)[0]["name"] == "l1"
    code, out, err = _main(["show", busiest + "@l1", "--model", m, "--store", st, "--json"], capsys)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["kind"] == "latent" and [b["text"] for b in shown["baselines"]] == [res["baseline"]["text"]]


@pytest.mark.parametrize("args,msg", [
    (["explain", "--unit", "L1/F999", "--sae", "SAE"], "latent 999 out of range"),
    (["explain", "--unit", "L2/F3", "--sae", "SAE"], "reads layer 1"),
    (["explain", "--unit", "L1/F3", "--sae", "MISSING"], "no SAE directory"),
    (["explain", "--unit", "L1/F3"], "give the SAE"),
    (["mine", "--sae", "BADHOOK", "--tokens", "64", "--context-len", "32"], "reads d_in=64 values but blocks.1.mlp.post"),
    (["mine", "--sae", "GATED"], "unknown SAE architecture 'gated'"),
])
def test_bad_sae_input_is_one_line_and_exit_2(env, capsys, args, msg, tmp_path):
    from autointerp.models.sae import load_sae

    test_dir = env / "l1"
    if not test_dir.exists():
        pytest.skip("needs the trained SAE of test_train_mine_explain_from_the_cli")
    sae = load_sae(test_dir)
    bad = sae.save(tmp_path / "badhook")
    cfg = json.loads((bad / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = cfg["hook_name"] = "blocks.1.mlp.hook_post"
    (bad / "cfg.json").write_text(json.dumps(cfg))
    gated = sae.save(tmp_path / "gated")
    (gated / "cfg.json").write_text((gated / "cfg.json").read_text().replace('"topk"', '"gated"'))
    subs = {"SAE": str(test_dir), "MISSING": str(tmp_path / "nope"), "BADHOOK": str(bad), "GATED": str(gated)}
    args = [subs.get(a, a) for a in args] + ["--model", str(env / "model"), "--device", "cpu",
                                              "--store", str(tmp_path / "s.db"), "--corpus", str(env / "c.txt")]
    code, out, err = _main(args, capsys)
    err = [ln for ln in err if "Loading weights" not in ln]         # the model loader's progress bar
    assert code == 2 and len(err) == 1 and msg in err[0], err


def test_the_library_binds_and_mines_what_the_cli_passes(env, tmp_path):
    """pipeline.bind_saes binds a latent to its SAE (and refuses a mismatch); pipeline.mine_corpus
    returns the MineResult whose dump is `mine --json` (the text face's extra fields left out)."""
    from autointerp.core.units import Unit
    from autointerp.errors import UnitError
    from autointerp.pipeline import MineResult, mine_corpus
    from autointerp.pipeline.saes import bind_saes

    sae_dir = env / "l1"
    if not sae_dir.exists():
        pytest.skip("needs the trained SAE of test_train_mine_explain_from_the_cli")
    u, saes = bind_saes("L1/F3", (str(sae_dir),))
    assert u == Unit.latent(1, 3, saes[0].name) and saes[0].layer == 1
    assert bind_saes("L1/N3") == (Unit.parse("L1/N3"), [])
    for unit, specs, msg in (("L1/N3", (str(sae_dir),), "applies to SAE latents"), ("L2/F3", (str(sae_dir),), "reads layer 1"),
                             ("L1/F3", (), "give the SAE")):
        with pytest.raises(UnitError, match=msg):
            bind_saes(unit, specs)
    res = mine_corpus(tmp_path / "s.db", str(env / "model"), device="cpu", sae_specs=(str(sae_dir),),
                      corpus=str(env / "c.txt"), n_tokens=512, context_len=32, progress=False)
    assert isinstance(res, MineResult) and res.units == "latents" and res.layers == [1] and res.records
    doc = res.model_dump()
    assert list(doc)[:3] == ["run_id", "model", "corpus"] and "d_mlp" not in doc and "layer" not in doc["saes"][0]
    assert doc["saes"][0]["d_sae"] == 128 and res.saes[0].layer == 1
