"""Shared fixtures: tiny randomly initialised GPT-2 and Llama (GQA) models wrapped as HookedModel."""

from __future__ import annotations

import pytest
import torch

WORDS = ("the a cat dog sat on mat and ran to park is big small red blue house tree . , "
         "when mary john went store gave drink then France Paris capital of").split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "<bos>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>")


def _wrap(model, spec):
    from autointerp.models import HookedModel

    model.eval().requires_grad_(False)
    return HookedModel(model, tiny_tokenizer(), spec=spec)


@pytest.fixture(scope="session")
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=3, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=1)
    return _wrap(GPT2LMHeadModel(cfg), "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=1, pad_token_id=1)
    return _wrap(LlamaForCausalLM(cfg), "tiny-llama")


@pytest.fixture(params=["tiny_gpt2", "tiny_llama"])
def tiny(request):
    """Each tiny model in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def make_tiny_tokenizer():
    """Factory for the in-code WordLevel tokenizer used by the tiny models."""
    return tiny_tokenizer
