"""Fixed-length token contexts from a text source, streamed and deterministic.

The documents of a source are tokenised without special tokens and concatenated into one token
stream, each document followed by a separator (the tokenizer's EOS, else its BOS); the stream is
cut into contexts of `context_len` tokens. If the tokenizer has a BOS token (else an EOS token;
the same rule as HookedModel.tokenize(prepend_bos=True)), every context starts with it and holds
context_len - 1 stream tokens. The tail shorter than a context is dropped. The same source,
tokenizer and context_len always give the same contexts, so contexts are addressed by index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..core.keys import content_hash
from .sources import Source, open_source


@dataclass(frozen=True)
class ContextLayout:
    context_len: int
    bos_id: int | None      # prepended to every context (None: nothing prepended)
    sep_id: int | None      # appended after every document

    @property
    def first_pos(self) -> int:
        """Position of the first text token in a context (1 when a BOS is prepended)."""
        return 0 if self.bos_id is None else 1

    @property
    def body_len(self) -> int:
        return self.context_len - self.first_pos


def layout_for(tokenizer: Any, context_len: int = 64) -> ContextLayout:
    if context_len < 2:
        raise ValueError("context_len must be at least 2")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    return ContextLayout(context_len, None if bos is None else int(bos), None if sep is None else int(sep))


def corpus_id(source: Source, model_id: str, layout: ContextLayout) -> str:
    """Stable id of (text source, tokenizer, context layout). Contexts of a corpus are a prefix-stable
    sequence, so a longer mine of the same corpus extends it."""
    return content_hash("corpus-v1", source.identity, model_id, layout.context_len, layout.bos_id, layout.sep_id)


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    try:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    except TypeError:  # tokenizers without the verbose flag
        return tokenizer(text, add_special_tokens=False)["input_ids"]


def iter_contexts(tokenizer: Any, source: Source | str, context_len: int = 64, start: int = 0,
                  limit: int | None = None, layout: ContextLayout | None = None,
                  with_docs: bool = False) -> Iterator[list[int]] | Iterator[tuple[list[int], int, int]]:
    """Token id lists of length context_len: contexts start, start+1, ... (at most `limit`).
    with_docs: (ids, first_doc, last_doc) instead, the indices (in stream order) of the documents
    of the context's first and last text tokens."""
    if isinstance(source, str):
        source = open_source(source)
    layout = layout or layout_for(tokenizer, context_len)
    body = layout.body_len
    prefix = [] if layout.bos_id is None else [layout.bos_id]
    buf: list[int] = []
    docs: list[int] = []          # with_docs: the document of each token in buf
    doc = 0
    idx = 0
    made = 0
    if limit is not None and limit <= 0:
        return
    for text, end in source.pieces():
        toks = _tokenize(tokenizer, text)
        buf.extend(toks)
        if end and layout.sep_id is not None:
            buf.append(layout.sep_id)
        if with_docs:
            docs.extend([doc] * (len(buf) - len(docs)))
        if end:
            doc += 1
        n_full = len(buf) // body
        for i in range(n_full):
            if idx >= start:
                ids = prefix + buf[i * body:(i + 1) * body]
                yield (ids, docs[i * body], docs[(i + 1) * body - 1]) if with_docs else ids
                made += 1
                if limit is not None and made >= limit:
                    return
            idx += 1
        if n_full:
            del buf[: n_full * body]
            if with_docs:
                del docs[: n_full * body]


def iter_batches(tokenizer: Any, source: Source | str, context_len: int = 64, batch_size: int = 16, start: int = 0,
                 limit: int | None = None, layout: ContextLayout | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(index of the first context, LongTensor [b, context_len]) batches; the last may be smaller."""
    batch: list[list[int]] = []
    first = start
    for ids in iter_contexts(tokenizer, source, context_len, start, limit, layout):
        batch.append(ids)
        if len(batch) == batch_size:
            yield first, torch.tensor(batch, dtype=torch.long)
            first += len(batch)
            batch = []
    if batch:
        yield first, torch.tensor(batch, dtype=torch.long)
