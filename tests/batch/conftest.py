"""Fixtures for the batch tests (helpers in _batchkit.py)."""

from __future__ import annotations

import random

import pytest

from _batchkit import D_MLP, N_LAYERS, BatchLLMServer, _root  # noqa: F401

@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, 6 MLP neurons each) with its tokenizer, saved to a dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = _root.tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=D_MLP, num_hidden_layers=N_LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=1, pad_token_id=1)
    d = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    rng = random.Random(0)
    words = [w for w in _root.WORDS if w not in ".,"]
    sents = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + " ." for _ in range(3000)]
    p = tmp_path_factory.mktemp("corpus") / "words.txt"
    p.write_text(" ".join(sents))
    return p


@pytest.fixture
def llm_server():
    made = []

    def make(**kw):
        srv = BatchLLMServer(**kw)
        made.append(srv)
        return srv

    yield make
    for s in made:
        s.close()


@pytest.fixture
def batch_env(monkeypatch, tmp_path):
    """Environment for batch runs: a dummy API key, no stray settings, a private model cache."""
    env = {"OPENAI_API_KEY": "sk-test-batch", "AUTOINTERP_CACHE": str(tmp_path / "cache")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AUTOINTERP_STORE", "AUTOINTERP_MODEL", "AUTOINTERP_LLM", "AUTOINTERP_LLM_BASE_URL", "AUTOINTERP_CONFIG",
              "AUTOINTERP_MAX_LLM_TOKENS", "AUTOINTERP_MAX_COST_USD"):
        monkeypatch.delenv(k, raising=False)
    return env


