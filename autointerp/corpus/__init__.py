"""Corpus: text sources -> fixed-length token contexts (streamed, deterministic)."""

from .contexts import ContextLayout, corpus_id, iter_batches, iter_contexts, layout_for
from .sources import DEFAULT_CORPUS, Source, clean_wiki, iter_texts, open_source

__all__ = ["DEFAULT_CORPUS", "Source", "open_source", "iter_texts", "clean_wiki", "ContextLayout", "layout_for",
           "corpus_id", "iter_contexts", "iter_batches"]
