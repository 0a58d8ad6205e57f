"""`graph --explain N`: the most influential latents of a graph, from transcoders of several layers
sharing the set's name, mined in one pass, explained (exact baseline) and scored through the
pipeline, stored as units L<l>/F<i>@set, and shown by the graph output."""

from __future__ import annotations

import json
import random

import pytest

from autointerp.mine.sae_train import train_transcoders
from autointerp.models.transcoders import TranscoderSet, load_transcoder_set, model_fingerprint
from autointerp.pipeline.latents import explain_latents
from autointerp.store import Store

from tinykit import WORDS, run_cli_lines, save_model_dir

CTX = 32


@pytest.fixture(scope="module")
def env(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("gx")
    rng = random.Random(0)
    (d / "c.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(160)))
    tcs, rep = train_transcoders(tiny_llama, [0, 1, 2], 64, l1=0.2, n_tokens=CTX * 32, corpus=str(d / "c.txt"),
                                 context_len=CTX, minibatch=64, lr=3e-3, eval_contexts=8, name="gx")
    ts = TranscoderSet(name="gx", model=tiny_llama.spec, by_layer=tcs, report=rep, fingerprint=model_fingerprint(tiny_llama))
    return d, load_transcoder_set(ts.save(d / "set"))          # loaded: each transcoder has its content id


def test_latents_of_several_layers_of_one_set_are_mined_once_and_explained(tiny_llama, env):
    d, ts = env
    st = Store(d / "a.db")
    units = ["L0/F1@gx", "L2/F1@gx"]
    text = (d / "c.txt").read_text().splitlines()[:8]
    for L in (0, 2):                          # the latent of each layer that fires most often on the corpus
        x = tiny_llama.forward(tiny_llama.tokenize(text)[0], cache=[f"blocks.{L}.mlp.in"])[f"blocks.{L}.mlp.in"]
        z = ts.by_layer[L].encode(x.reshape(-1, x.shape[-1]))
        units[L // 2] = f"L{L}/F{int((z > 0).sum(0).argmax())}@gx"
    got = explain_latents(st, tiny_llama, [ts.by_layer[0], ts.by_layer[2]], units, corpus=str(d / "c.txt"),
                          n_tokens=CTX * 64, context_len=CTX)
    assert set(got) == set(units), got
    assert all("run_id" in g for g in got.values()), got
    assert len({g["run_id"] for g in got.values()}) == 1                       # one mining pass for both layers
    for u, g in got.items():
        assert g["explainer"] == "baseline" and g["explanation"] and g["score_kind"] == "simulation_exact"
        assert g["score"] is not None and g["margin"] == pytest.approx(g["score"] - g["control"], abs=1e-9)
        assert st.explanations_for(tiny_llama.spec, u)
    rows = {r["layer"]: r for r in st.saes(tiny_llama.spec)}
    assert set(rows) == {0, 2} and {r["name"] for r in rows.values()} == {"gx"}


def test_graph_cli_explains_its_top_latents(tiny_llama, env, capsys):
    d, ts = env
    m = str(save_model_dir(tiny_llama, d / "model"))
    tdir = d / "set"
    code, out, err = run_cli_lines(["graph", "when mary and john went to the store john gave", "--transcoders", tdir,
                                    "--explain", 3, "--corpus", d / "c.txt", "--explain-tokens", CTX * 64, "--json",
                                    "--model", m, "--device", "cpu", "--store", d / "b.db"], capsys)
    assert code == 0, err
    j = json.loads(out)
    assert len(j["explained"]) == 3
    shown = [n for n in j["nodes"] if n["kind"] == "latent" and n.get("explanation")]
    assert shown and all("score" in n and "control" in n and "margin" in n for n in shown)
    st = Store(d / "b.db", readonly=True)
    done = [u for u, e in j["explained"].items() if e.get("explanation")]
    assert done and all(st.explanations_for(j["model"], u) for u in done)
    assert all(e.get("reason") for e in j["explained"].values() if not e.get("explanation"))
