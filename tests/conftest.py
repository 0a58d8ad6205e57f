"""Shared fixtures: tiny randomly initialised GPT-2 and Llama (GQA) models wrapped as HookedModel."""

from __future__ import annotations

import pytest
import torch

from tinykit import WORDS, tiny_tokenizer  # noqa: F401  (re-exported for fixtures)


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


class CliRun(tuple):
    """(exit code, stdout, stderr) of one in-process CLI run; also .returncode/.stdout/.stderr."""
    returncode = property(lambda self: self[0])
    stdout = property(lambda self: self[1])
    stderr = property(lambda self: self[2])


@pytest.fixture
def cli(capsys):
    """cli(*args): run autointerp's CLI in this process and return a CliRun."""
    from autointerp.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code or 0
        o = capsys.readouterr()
        return CliRun((code, o.out, o.err))

    return run


@pytest.fixture(scope="module")
def dummy_extensions():
    """The dummy scorer and unit kind (tests/dummy_scorer.py, tests/dummy_unit_kind.py) registered
    for one test module and removed after it: the registries are global, and other modules' tests
    must see only the real entries (e.g. the unit-id error message lists every kind)."""
    import dummy_scorer
    import dummy_unit_kind
    from autointerp.core.units import UNIT_KINDS, register_unit_kind
    from autointerp.score.registry import SCORERS, register_scorer

    register_unit_kind(dummy_unit_kind.RESID)       # again, if an earlier module's teardown removed them
    register_scorer(dummy_scorer.SPEC)
    yield
    UNIT_KINDS.pop(dummy_unit_kind.RESID.name, None)
    SCORERS.pop(dummy_scorer.SPEC.name, None)
