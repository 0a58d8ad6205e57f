"""Other families on tiny random configs: Gemma3 (post-sublayer norms, 1+w RMSNorm, sliding window) and Qwen2."""

import pytest
import torch

from autointerp.models import HookedModel, ablate


@pytest.fixture(scope="module")
def tiny_gemma3(make_tiny_tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           max_position_embeddings=64, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    m = Gemma3ForCausalLM(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.normal_(0, 0.2)  # make (1 + w) distinguishable from w
    return HookedModel(m, tok, spec="tiny-gemma3")


@pytest.fixture(scope="module")
def tiny_qwen2(make_tiny_tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return HookedModel(Qwen2ForCausalLM(cfg).eval().requires_grad_(False), tok, spec="tiny-qwen2")


TEXT = ["the cat sat on the mat and ran to the park", "a dog"]


@pytest.mark.parametrize("fixture", ["tiny_gemma3", "tiny_qwen2"])
def test_family_hooks(fixture, request):
    m = request.getfixturevalue(fixture)
    ids, mask = m.tokenize(TEXT)
    names = [n for n in m.hook_names()]
    full = m.forward(ids, mask, cache=names)
    plain = m.model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(full.logits[real], plain[real], atol=1e-4)
    assert full.cache["blocks.0.attn.k"].shape[2] == m.n_kv_heads
    for point in ("attn.v", "attn.z", "attn.out", "mlp.post", "mlp.out", "attn.pattern"):
        n = f"blocks.1.{point}"
        r = m.forward(ids, mask, cache=[n])
        p = m.forward(ids, mask, hooks={n: lambda v: r.cache[n]})
        assert torch.equal(r.logits, p.logits), n
    # residual stream decomposition: resid_post = resid_pre + attn.out + mlp.out
    for L in range(m.n_layers):
        c = full.cache
        assert torch.allclose(c[f"blocks.{L}.resid_post"],
                              c[f"blocks.{L}.resid_pre"] + c[f"blocks.{L}.attn.out"] + c[f"blocks.{L}.mlp.out"],
                              atol=1e-4)
    normed = m.ln_final(full.cache[f"blocks.{m.n_layers - 1}.resid_post"])
    assert torch.allclose(normed, full.cache["ln_final.out"], atol=1e-5)
    assert torch.allclose(m.unembed(normed), full.logits, atol=1e-4)
    r = m.forward(ids, mask, hooks={"blocks.0.attn.z": ablate("zero", heads=0)})
    assert not torch.equal(r.logits, full.logits)


def test_gemma3_specifics(tiny_gemma3):
    m = tiny_gemma3
    assert m.family == "gemma3"
    assert torch.allclose(m.ln_final_scale, 1 + m.model.model.norm.weight)
    ids, mask = m.tokenize([TEXT[0]])
    L = 0  # a sliding-window layer: pattern is zero beyond the window
    assert m.model.config.layer_types[L] == "sliding_attention"
    pat = m.forward(ids, mask, cache=[f"blocks.{L}.attn.pattern"]).cache[f"blocks.{L}.attn.pattern"]
    p = pat.shape[-1]
    i, j = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    assert torch.all(pat[..., (i - j) >= 4] == 0) and torch.all(pat[..., j > i] == 0)
    assert torch.allclose(pat.sum(-1), torch.ones(pat.shape[:-1]), atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_gemma3", "tiny_qwen2"])
def test_start_at_layer(fixture, request):
    """Blocks from L on, fed blocks.L.resid_pre of a full run: the same later values (Gemma3's
    sliding-window layers and per-layer-type rotary embeddings are still made by the base model)."""
    m = request.getfixturevalue(fixture)
    ids, mask = m.tokenize(TEXT)
    full = m.forward(ids, mask, cache=m.hook_names())
    for L in range(1, m.n_layers):
        names = [n for n in m.hook_names() if not n.startswith("blocks.") or int(n.split(".")[1]) >= L]
        run = m.forward(ids, mask, cache=names, start_at_layer=L, resid=full.cache[f"blocks.{L}.resid_pre"])
        for n in names:
            assert torch.allclose(run.cache[n], full.cache[n], atol=1e-5), (L, n)
        assert torch.allclose(run.logits, full.logits, atol=1e-5)
