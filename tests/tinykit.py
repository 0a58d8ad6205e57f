"""Tiny in-code tokenizer shared by tests (import as `from tinykit import ...`; tests/ is on pythonpath)."""

from __future__ import annotations

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


def make_rec(ctx_idx, tokens, acts, kind="top", bin=0):
    """An ActivationRecord built by hand (no model, no mining)."""
    from autointerp.mine.records import ActivationRecord

    return ActivationRecord(ctx_idx=ctx_idx, kind=kind, bin=bin, tokens=list(tokens), acts=[float(a) for a in acts],
                            max_act=float(max(acts)))
