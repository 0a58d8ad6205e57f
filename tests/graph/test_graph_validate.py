"""`graph --validate`: the graph's predicted effect of ablating a latent against the real model's
change through the transcoder splice. On a hand-wired model where every path from the latents to
the logit is linear the two agree exactly; on a trained tiny set they correlate."""

from __future__ import annotations

import pytest
import torch

from autointerp.graph import build_graph
from autointerp.graph.validate import validate_graph
from autointerp.models import HookedModel
from autointerp.models.sae import SAE
from autointerp.models.transcoders import TranscoderSet, model_fingerprint

from tinykit import tiny_tokenizer

B = 1000.0


def _linear_llama():
    """A 3-layer Llama where the only nonlinearities left are frozen in the graph anyway: q/k weights
    are 0 (uniform causal attention, whatever the residual), the MLPs of layers 1-2 write nothing,
    and residual dim 0 holds a constant B that no layer writes to, so the RMSNorm scale is constant to
    second order (|delta|^2 / B^2); the norm weights undo the 1/B on the other dims."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=2,
                      eos_token_id=1, pad_token_id=1)
    m = LlamaForCausalLM(cfg).eval()
    d = cfg.hidden_size
    with torch.no_grad():
        m.model.embed_tokens.weight.normal_(0, 1.0)
        m.model.embed_tokens.weight[:, 0] = B
        scale = B / d ** 0.5
        for norm in [m.model.norm] + [n for blk in m.model.layers for n in (blk.input_layernorm, blk.post_attention_layernorm)]:
            norm.weight.fill_(scale)
            norm.weight[0] = 0.0
        for i, blk in enumerate(m.model.layers):
            blk.self_attn.q_proj.weight.zero_()
            blk.self_attn.k_proj.weight.zero_()
            blk.self_attn.o_proj.weight[0] = 0.0
            blk.mlp.down_proj.weight[0] = 0.0
            if i > 0:
                blk.mlp.down_proj.weight.zero_()
    m.requires_grad_(False)
    return HookedModel(m, tok, spec="linear-llama")


def test_predictions_equal_the_real_model_on_a_linear_path():
    hm = _linear_llama()
    g_ = torch.Generator().manual_seed(0)
    d, n = hm.d_model, 24
    W_dec = torch.randn(n, d, generator=g_) / 2
    W_dec[:, 0] = 0.0                                     # nothing writes the norm's constant dim
    tc = SAE(architecture="transcoder", W_enc=torch.randn(d, n, generator=g_) / 8, b_enc=torch.full((n,), 0.3),
             W_dec=W_dec, b_dec=torch.zeros(d), hook="blocks.0.mlp.in", hook_out="blocks.0.mlp.out", name="lin")
    ts = TranscoderSet(name="lin", model=hm.spec, by_layer={0: tc}, fingerprint=model_fingerprint(hm))
    g = build_graph(hm, ts, "the cat sat on the mat and the dog", max_logits=1, node_share=1.0, edge_share=1.0)
    assert g.direct["relative_error"] < 1e-4
    v = validate_graph(hm, ts, g, 8)
    assert v["k"] == 8
    for r in v["latents"]:
        assert r["predicted"] == pytest.approx(r["observed"], rel=2e-3, abs=2e-4 * v["mean_abs_observed"]), r
    assert v["correlation"] > 0.999 and v["mae"] < 1e-3 * v["mean_abs_observed"] + 1e-6
    assert v["mean_abs_observed"] > 1e-3                  # the ablations do move the logit


def test_validation_reports_null_correlation_with_a_reason_for_too_few(tiny_llama):
    g_ = torch.Generator().manual_seed(0)
    d, n = tiny_llama.d_model, 16
    tc = SAE(architecture="transcoder", W_enc=torch.randn(d, n, generator=g_), b_enc=torch.zeros(n),
             W_dec=torch.randn(n, d, generator=g_) / 4, b_dec=torch.zeros(d), hook="blocks.2.mlp.in",
             hook_out="blocks.2.mlp.out", name="t2")
    ts = TranscoderSet(name="t2", model=tiny_llama.spec, by_layer={2: tc})
    g = build_graph(tiny_llama, ts, "the cat sat", max_logits=1)
    v = validate_graph(tiny_llama, ts, g, 2)
    assert v["k"] == 2 and v["correlation"] is None and "at least 3" in v["correlation_reason"]
    assert v["mae"] is not None and all(r["unit"].endswith("@t2") for r in v["latents"])
