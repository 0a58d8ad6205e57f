"""Architecture facts behind models/: decoder, final logit soft-cap, norm kind, context length, and
the hook-name checks that now come from core.hooks."""

import pytest
import torch

from autointerp.core.hooks import act_name
from autointerp.errors import HookError
from autointerp.models import decoder_of, final_logit_softcap_of, max_context_of, softcap


def test_gpt2_facts(tiny_gpt2):
    hm = tiny_gpt2
    assert hm.norm_kind == "layernorm"
    assert hm.final_logit_softcap is None
    assert hm.max_context == 64  # n_positions
    assert hm.decoder is hm.model.transformer
    ids, mask = hm.tokenize(["the cat sat"])
    out = hm.decoder(input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (1, ids.shape[1], hm.d_model)


def test_llama_facts(tiny_llama):
    hm = tiny_llama
    assert hm.norm_kind == "rmsnorm" and hm.final_logit_softcap is None
    assert hm.max_context == 64  # max_position_embeddings
    assert hm.decoder is hm.model.model
    assert decoder_of(hm.model) is hm.decoder and max_context_of(hm.model) == 64


def test_gemma_softcap_is_applied(make_tiny_tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from autointerp.models import HookedModel

    torch.manual_seed(0)
    tok = make_tiny_tokenizer()
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=48,
                           final_logit_softcapping=2.0, bos_token_id=2, eos_token_id=1, pad_token_id=1)
    hm = HookedModel(Gemma3ForCausalLM(cfg).eval().requires_grad_(False), tok, spec="tiny-gemma3-cap")
    assert hm.final_logit_softcap == 2.0 == final_logit_softcap_of(hm.model)
    assert hm.norm_kind == "rmsnorm" and hm.max_context == 48
    ids, mask = hm.tokenize(["the cat sat on the mat"])
    run = hm.forward(ids, mask, cache=[act_name("ln_final.out")])
    direct = hm.unembed(run["ln_final.out"])
    assert direct.abs().max() <= 2.0 + 1e-5
    torch.testing.assert_close(direct, run.logits, atol=1e-4, rtol=1e-4)  # the HF model caps the same way
    x = torch.tensor([10.0, -10.0, 0.5])
    assert softcap(x, None) is x
    torch.testing.assert_close(softcap(x, 2.0), torch.tanh(x / 2) * 2)


def test_hook_checks_come_from_core(tiny_gpt2):
    hm = tiny_gpt2
    assert hm.check_hook(act_name("attn.z", 2)) == "blocks.2.attn.z"
    with pytest.raises(HookError, match="layer 3 out of range"):
        hm.check_hook("blocks.3.attn.z")
    with pytest.raises(HookError, match="no SAE is attached at blocks.1.resid_post"):
        hm.check_hook("blocks.1.resid_post.sae.latents")
    with pytest.raises(ValueError, match="unknown hook"):
        hm.forward(torch.tensor([[1, 2]]), cache=["blocks.0.attn.zz"])
    assert hm.hook_names()[-1] == "ln_final.out" and hm.hook_names([1])[0] == "blocks.1.resid_pre"
