"""Checks on report text: an LLM's prose over measurements keeps only sentences whose numbers and
unit ids are measured values (see prose_check.py).

    from autointerp.report import check_prose
"""

from .prose_check import allowed_values, check_prose, check_sentence, split_sentences

__all__ = ["allowed_values", "check_prose", "check_sentence", "split_sentences"]
