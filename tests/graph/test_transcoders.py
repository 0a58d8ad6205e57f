"""`sae train --kind transcoder`: per-layer MLP transcoders from one streamed pass, written as a
transcoder set in the SAELens format, with EV / L0 / dead latents / CE recovered that recompute."""

from __future__ import annotations


import pytest
import torch

from autointerp.core.hooks import act_name
from autointerp.mine.sae_train import mlp_replaced_ce, train_transcoders
from autointerp.models.sae import SAEError
from autointerp.models.transcoders import TranscoderSet, load_transcoder_set

from tinykit import run_cli_lines, save_model_dir, word_corpus

CTX = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return word_corpus(tmp_path_factory.mktemp("corpus") / "c.txt", 160)


def test_all_layers_train_from_one_pass_and_round_trip(tiny_llama, corpus, tmp_path, monkeypatch):
    calls = []
    real = tiny_llama.forward

    def counting(*a, **kw):
        calls.append(kw.get("return_logits", True))
        return real(*a, **kw)

    monkeypatch.setattr(tiny_llama, "forward", counting)
    tcs, rep = train_transcoders(tiny_llama, [0, 2], 64, l1=0.3, n_tokens=CTX * 48, corpus=corpus, context_len=CTX,
                                 minibatch=64, lr=3e-3, eval_contexts=16, name="tc")
    n_train_batches, n_eval_batches = 3, 1          # 48 contexts / 16, 16 held-out contexts / 16
    assert calls.count(False) == n_train_batches + n_eval_batches      # one forward feeds both layers
    assert rep["one_pass"] and rep["layers"] == [0, 2] and [r["layer"] for r in rep["per_layer"]] == [0, 2]
    for r in rep["per_layer"]:
        assert 0 < r["l0"] < 64 and 0 <= r["dead_frac"] <= 1 and r["mse_last"] < r["mse_first"]
        assert r["explained_variance"] > 0
    monkeypatch.undo()
    ts = TranscoderSet(name="tc", model=tiny_llama.spec, by_layer=tcs, report=rep)
    back = load_transcoder_set(ts.save(tmp_path / "tc"))
    assert back.layers == [0, 2] and back.name == "tc" and back.check_model(tiny_llama) is back
    for L in (0, 2):
        tc = back.by_layer[L]
        assert tc.architecture == "transcoder" and tc.hook == act_name("mlp.in", L) and tc.hook_out == act_name("mlp.out", L)
        x = torch.randn(5, tiny_llama.d_model)
        assert torch.allclose(tc(x)[1], tcs[L](x)[1], atol=1e-5)
    # the reported CE recomputes from the saved files, and lies between the ablation and the clean model
    from autointerp.corpus import iter_batches, layout_for
    lay = layout_for(tiny_llama.tokenizer, CTX)
    held = [ids for _, ids in iter_batches(tiny_llama.tokenizer, corpus, CTX, 16, start=48, limit=16, layout=lay)]
    ce = mlp_replaced_ce(tiny_llama, back.by_layer, held, lay.first_pos)
    assert ce["ce_replaced"] == pytest.approx(rep["ce_replaced"], abs=1e-3)
    assert ce["ce_clean"] < ce["ce_zero_ablated"]


def test_cli_trains_a_skip_set_and_refuses_bad_input(tiny_llama, corpus, tmp_path, capsys):
    m = str(save_model_dir(tiny_llama, tmp_path / "model"))
    out = tmp_path / "set"
    common = ["--model", m, "--device", "cpu", "--corpus", corpus, "--context-len", CTX]
    code, text, err = run_cli_lines(["sae", "train", "--kind", "transcoder", "--layers", "0-1", "--skip", "--latents",
                                     64, "--tokens", CTX * 32, "--minibatch", 64, "--out", out, *common], capsys)
    assert code == 0, err
    assert "CE loss recovered" in text and "one pass" in text
    ts = load_transcoder_set(out)
    assert ts.layers == [0, 1] and ts.by_layer[1].architecture == "skip_transcoder" and ts.by_layer[1].W_skip is not None
    for args, msg in ((["--layers", "0-9"], "layer 3 out of range"),
                      (["--layers", "0", "--out", out], "non-empty folder"),
                      ([], "needs --layers")):
        extra = [] if "--out" in args else ["--out", tmp_path / "x"]
        code, _, err = run_cli_lines(["sae", "train", "--kind", "transcoder", "--tokens", CTX * 4, *args, *extra, *common],
                                     capsys)
        err = [ln for ln in err if not ln.startswith("Loading weights")]      # transformers' own progress bar
        assert code == 2 and len(err) == 1 and msg in err[0], err
    with pytest.raises(SAEError, match="no transcoder set there"):
        load_transcoder_set(tmp_path / "model")


def test_stacked_layers_train_as_if_alone(tiny_llama, corpus):
    """All layers are one batched Adam step, but each layer's transcoder ends exactly where training
    it alone (same seed, same stream) ends: the summed loss leaves the layers' gradients separate."""
    kw = dict(n_tokens=CTX * 16, corpus=corpus, context_len=CTX, minibatch=64, lr=3e-3, eval_contexts=8, seed=3)
    both, _ = train_transcoders(tiny_llama, [0, 2], 32, l1=0.3, **kw)
    alone, _ = train_transcoders(tiny_llama, [0], 32, l1=0.3, **kw)
    for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(both[0], k), getattr(alone[0], k), atol=1e-5), k


def test_skip_path_starts_at_the_least_squares_map(tiny_llama, corpus):
    """--skip: the linear path starts at the ridge least-squares fit of the first batch, so even a
    few steps explain the MLP output at least as well as that linear map does on held-out tokens."""
    from autointerp.corpus import iter_batches, layout_for

    kw = dict(n_tokens=CTX * 16, corpus=corpus, context_len=CTX, minibatch=64, lr=1e-3, eval_contexts=16)
    tcs, rep = train_transcoders(tiny_llama, [1], 32, l1=0.3, skip=True, **kw)
    plain, rep0 = train_transcoders(tiny_llama, [1], 32, l1=0.3, **kw)
    lay = layout_for(tiny_llama.tokenizer, CTX)
    xs, ys = [], []
    for _, ids in iter_batches(tiny_llama.tokenizer, corpus, CTX, 16, start=0, limit=16, layout=lay):
        run = tiny_llama.forward(ids, cache=[act_name("mlp.in", 1), act_name("mlp.out", 1)], return_logits=False)
        xs.append(run[act_name("mlp.in", 1)][:, lay.first_pos:].reshape(-1, tiny_llama.d_model))
        ys.append(run[act_name("mlp.out", 1)][:, lay.first_pos:].reshape(-1, tiny_llama.d_model))
    x, y = torch.cat(xs), torch.cat(ys)
    # the fit on the first batch (16 contexts) beats the plain trainer's few steps by far
    ev_skip, ev_plain = rep["per_layer"][0]["explained_variance"], rep0["per_layer"][0]["explained_variance"]
    assert ev_skip > ev_plain + 0.1 and ev_skip > 0.3, (ev_skip, ev_plain)
    # the linear path alone is the least-squares map of the training batch (in the saved units)
    M = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1)], 1), y).solution
    lin = x @ tcs[1].W_skip.T
    fit = x @ M[:-1] + M[-1]
    assert float((lin - lin.mean(0) - (fit - fit.mean(0))).norm() / (fit - fit.mean(0)).norm()) < 0.2
