"""Causal validation of an SAE latent's explanation: the SAE is spliced in (reconstruction +
error term), so an unedited run is the model's own and an edit of one latent changes only its
contribution; validate_explanation's intervention numbers are computed through that splice."""

from __future__ import annotations

import pytest
import torch

from .conftest import write_corpus

L, D_SAE = 1, 16


def _sae():
    from autointerp.models.sae import SAE

    g = torch.Generator().manual_seed(7)
    return SAE(architecture="standard", W_enc=torch.randn(64, D_SAE, generator=g) * 4, b_enc=torch.full((D_SAE,), -0.3),
               W_dec=torch.randn(D_SAE, 64, generator=g) / 20, b_dec=torch.randn(64, generator=g) / 100,
               hook=f"blocks.{L}.resid_post", name="res1")


@pytest.fixture
def attached(tiny_gpt2):
    sae = tiny_gpt2.attach_sae(_sae())
    yield tiny_gpt2, sae
    tiny_gpt2.detach_sae(sae)


def _ids(hm, n=3, T=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, len(hm.tokenizer), (n, T), generator=g)


def test_unedited_splice_leaves_the_logits_unchanged(attached):
    hm, sae = attached
    ids = _ids(hm)
    own = hm.forward(ids).logits.float()
    # a hook that returns the latents as a new tensor takes the splice path: recons(z) + (x - recons(z))
    spliced = hm.forward(ids, hooks={sae.latents_hook: lambda z: z.clone()}).logits.float()
    assert (spliced - own).abs().max().item() < 1e-5
    # the error term matters: the reconstruction alone (this SAE is random) is far from the model
    recon = hm.forward(ids, hooks={sae.hook: lambda x: sae.decode(sae.encode(x), x).to(x.dtype)}).logits.float()
    assert (recon - own).abs().max().item() > 1e-2


def test_ablating_one_latent_removes_exactly_its_contribution(attached):
    hm, sae = attached
    ids = _ids(hm, seed=1)
    z = hm.forward(ids, cache=[sae.latents_hook], return_logits=False)[sae.latents_hook]
    i = int((z > 0).float().mean((0, 1)).argmax())
    assert (z[..., i] > 0).any()

    def zero_i(lat):
        lat = lat.clone()
        lat[..., i] = 0
        return lat

    spliced = hm.forward(ids, hooks={sae.latents_hook: zero_i}).logits.float()
    by_hand = hm.forward(ids, hooks={sae.hook: lambda x: x - z[..., i:i + 1] * sae.W_dec[i]}).logits.float()
    own = hm.forward(ids).logits.float()
    assert (spliced - by_hand).abs().max().item() < 1e-4
    assert (spliced - own).abs().max().item() > 1e-3      # the ablation did something


@pytest.fixture(scope="module")
def latent_store(tiny_gpt2, tmp_path_factory):
    """(the tiny GPT-2's residual stream has norm ~0.3: the weights are scaled to it.)
    A store with a latent of the SAE mined and its baseline explanation: (store, sae, unit)."""
    from autointerp.mine import load_exemplars, mine
    from autointerp.pipeline import ExplainSettings, explain_exemplars
    from autointerp.store import Store

    d = tmp_path_factory.mktemp("validate-sae")
    words = [w for w in tiny_gpt2.tokenizer.get_vocab() if not w.startswith("<")]
    corpus = write_corpus(d / "corpus.txt", words)
    store = Store(d / "t.db")
    sae = _sae()
    try:
        rid = mine(tiny_gpt2, store, corpus=corpus, n_tokens=4096, context_len=24, top_k=12, n_quantiles=4,
                   per_quantile=2, n_random=12, batch_size=32, units="latents", saes=[sae], progress=False)
    finally:
        tiny_gpt2.detach_sae(sae)
    st = store.query("select unit from unit_stats where run_id = ? order by frac_active desc limit 1", [rid])
    unit = st[0]["unit"]
    ex = load_exemplars(store, rid, unit)
    explain_exemplars(store, ex, None, model_id=tiny_gpt2.spec, settings=ExplainSettings(explainer="baseline", n_boot=50))
    return store, sae, unit


def test_validate_a_latent_through_the_splice(tiny_gpt2, latent_store):
    from autointerp.core.units import Unit
    from autointerp.mine import find_run, load_exemplars
    from autointerp.validate import ValidateSettings, validate_explanation

    store, sae, unit = latent_store
    hm = tiny_gpt2
    assert not hm.saes
    s = ValidateSettings(use_llm=False, n_boot=20, n_top=6)
    res = validate_explanation(store, hm, None, hm.spec, unit.split("@")[0], settings=s, sae=sae, baseline=False)
    assert not hm.saes                                        # attached for the call only
    assert res.unit == unit and res.explanation.explainer == "baseline"
    it = res.explanation.intervention
    assert it is not None and it.n_records > 0 and it.n_positions > 0
    assert set(res.explanation.scores) == {"probe_auc", "probe_precision", "probe_recall", "intervention"}
    stored = store.scores_for(res.explanation.explanation_id, kind="intervention")
    assert stored and stored[0]["value"] == pytest.approx(it.value)

    # the promoted tokens are the latent's decoder row through the unembedding
    i = Unit.parse(unit).index
    eff = (sae.W_dec[i] * hm.ln_final_scale.float()) @ hm.W_U.float()
    prom = eff.topk(s.k_logits).indices
    assert it.promoted == [hm.tokenizer.decode([int(t)]) for t in prom]

    # zero ablation of the latent, by hand: subtract z_i * W_dec[i] from the residual stream at the
    # active positions (act >= frac * max, the peak always, none before first_pos); the validator's
    # per-record promoted-logit change must equal it
    ex = load_exemplars(store, find_run(store, hm.spec, unit=unit).id, unit)
    thr = s.frac * res.unit_max
    by_ctx = {r["ctx_idx"]: r for r in it.records}
    hm.attach_sae(sae)
    try:
        for rec in ex.top[: s.n_top]:
            ids = torch.tensor([rec.input_ids])
            z = hm.forward(ids, cache=[sae.latents_hook], return_logits=False)[sae.latents_hook][0, :, i]
            mask = z >= thr
            mask[: ex.first_pos] = False
            pk = int(z[ex.first_pos:].argmax()) + ex.first_pos
            mask[pk] = True
            assert by_ctx[rec.ctx_idx]["peak_pos"] == pk
            delta = torch.where(mask[:, None], z[:, None], torch.zeros(())) * sae.W_dec[i]
            hm.detach_sae(sae)
            clean = hm.forward(ids).logits[0, pk].float()
            edited = hm.forward(ids, hooks={sae.hook: lambda x: x - delta[None]}).logits[0, pk].float()
            hm.attach_sae(sae)
            want = float((edited - clean)[prom].mean())
            assert by_ctx[rec.ctx_idx]["dlogit_promoted_zero"] == pytest.approx(want, abs=2e-4)
    finally:
        hm.detach_sae(sae)
    assert any(abs(r["dlogit_promoted_zero"]) > 1e-3 for r in it.records)   # the ablation moved the promoted logits


def test_a_latent_without_its_sae_is_one_clear_error(tiny_gpt2, latent_store):
    from autointerp.errors import UsageError
    from autointerp.validate import validate_explanation

    store, _, unit = latent_store
    with pytest.raises(UsageError, match="give the SAE"):
        validate_explanation(store, tiny_gpt2, None, tiny_gpt2.spec, unit)
