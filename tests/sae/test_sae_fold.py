"""SAEs and transcoders trained on TransformerLens' ln2.hook_normalized (the MLP input before the
norm's weight and bias) read autointerp's mlp.in exactly once the norm is folded in at attach
time (models/sae.py SAE.fold_input_norm). The reference here is written out by hand: the SAE's
own maths on the normalised input, computed from the norm's input captured by a torch hook, with
random (non-trivial) norm weights and biases."""

from __future__ import annotations

import pytest
import torch

from autointerp.errors import UsageError
from autointerp.models.sae import SAE, SAEError, load_sae
from tinykit import rand_sae, tiny_tokenizer


def _model(family: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from autointerp.models import HookedModel

    torch.manual_seed(1)
    tok = tiny_tokenizer()
    if family == "gpt2":
        m = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=1))
    else:
        m = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         bos_token_id=2, eos_token_id=1, pad_token_id=1))
    with torch.no_grad():                      # norm weights far from 1 and biases far from 0: the fold matters
        for name, p in m.named_parameters():
            if "ln_" in name or "layernorm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    m.eval().requires_grad_(False)
    return HookedModel(m, tok, spec=f"fold-{family}")


def _normed_input(hm, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """TL's ln2.hook_normalized by hand: the ln2 norm's input, centred (LayerNorm) and divided by its scale."""
    norm = hm.adapter.mlp_norm(hm._blocks[layer])
    got = {}
    h = norm.register_forward_pre_hook(lambda mod, args: got.__setitem__("x", args[0].detach().float()))
    try:
        hm.forward(ids)
    finally:
        h.remove()
    x = got["x"]
    if isinstance(norm, torch.nn.LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon")
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


CASES = [("standard", {}), ("standard", {"apply_b_dec_to_input": False}), ("jumprelu", {}), ("topk", {"k": 9}),
         ("transcoder", {"hook_out": "blocks.1.hook_mlp_out"}), ("skip_transcoder", {"hook_out": "blocks.1.hook_mlp_out"})]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("arch,kw", CASES)
def test_sae_on_ln2_hook_normalized_reads_mlp_in_exactly(tmp_path, family, arch, kw):
    hm = _model(family)
    d = rand_sae(arch, d_in=64, d_sae=96, hook="blocks.1.ln2.hook_normalized", **kw).save(tmp_path / "sae")   # as SAELens writes it
    sae = load_sae(d)
    ref = load_sae(d)                                  # the same weights, unfolded: the hand-written reference
    assert sae.hook == "blocks.1.mlp.in" and sae.input_norm == "ln2" and sae.info()["reads"].startswith("ln2.hook")
    ids = torch.tensor([[2, 5, 9, 14, 3, 7, 11, 4]])
    x = _normed_input(hm, 1, ids)
    hm.attach_sae(sae)
    try:
        run = hm.forward(ids, cache=["blocks.1.mlp.in", sae.latents_hook, sae.recons_hook])
    finally:
        hm.detach_sae(sae)
    assert sae.folded_for == hm.spec and sae.id == ref.id          # the identity (store key) is the file's
    z_ref = ref.encode(x)
    assert z_ref.abs().max() > 0.1 and (z_ref > 0).float().mean() > 0.02
    torch.testing.assert_close(run[sae.latents_hook], z_ref, atol=2e-5, rtol=1e-4)
    want = ref.decode(z_ref, x)                        # transcoders: the MLP output they predict (skip path on x)
    if not sae.is_transcoder:                          # an SAE reconstructs x: in mlp.in's units, * w + b
        w, b = hm.adapter.norm_affine(hm.adapter.mlp_norm(hm._blocks[1]))
        want = want * w + (0 if b is None else b)
        # ... and is as good a reconstruction of mlp.in as the unfolded SAE is of x, scaled by the weight
        mlp_in = run["blocks.1.mlp.in"]
        torch.testing.assert_close(mlp_in, x * w + (0 if b is None else b), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(run[sae.recons_hook], want, atol=2e-5, rtol=1e-4)


def test_folded_sae_belongs_to_its_model_and_is_not_saved(tmp_path):
    a, b = _model("llama"), _model("gpt2")
    sae = load_sae(rand_sae("standard", hook="blocks.0.ln2.hook_normalized").save(tmp_path / "s"))
    a.attach_sae(sae)
    a.attach_sae(sae)                                  # again on the same model: folded once
    with pytest.raises(SAEError, match="fold-llama's ln2 norm folded in; load it again for fold-gpt2"):
        b.attach_sae(sae)
    with pytest.raises(SAEError, match="save the original folder") as e:
        sae.save(tmp_path / "copy")
    assert isinstance(e.value, UsageError) and "\n" not in str(e.value) and not (tmp_path / "copy" / "cfg.json").exists()
    with pytest.raises(SAEError, match="not exact"):    # a runtime input normalisation does not commute with the fold
        rand_sae("standard", hook="blocks.0.ln2.hook_normalized", normalize_activations="constant_norm_rescale")
