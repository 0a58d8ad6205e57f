"""A scorer added in this one module (issue 22): registering it is all it takes for explain,
batch, calibrate and the CLI's --scorers to run it.

peak_token: the fraction of the test split's top records whose peak token (the token of the
largest activation) the explanation names as a word. No LLM; a real, if crude, score."""

from __future__ import annotations

import re

from autointerp.score.registry import ScorerSpec, register_scorer
from autointerp.score.scorers import ScoreRecord


class PeakTokenScorer:
    kinds = ("peak_token",)

    def __init__(self, n_boot: int, seed: int):
        self.n_boot, self.seed = n_boot, seed

    def identity(self) -> tuple:
        return ("peak_token", 1)

    def score(self, text: str, splits, unit_max: float, *, control: str | None = None) -> list[ScoreRecord]:
        words = set(re.findall(r"[a-z0-9]+", text.lower()))
        tops = [r for r in splits.test_top if r.acts]
        if not tops:
            return [ScoreRecord(kind="peak_token", value=None, n=0, scorer="peak_token", reason="no top test records")]
        peaks = [r.tokens[max(range(len(r.acts)), key=lambda i: r.acts[i])].strip().lower() for r in tops]
        hits = [p in words for p in peaks]
        return [ScoreRecord(kind="peak_token", value=sum(hits) / len(hits), n=len(hits), scorer="peak_token",
                            details={"peaks": peaks, "hits": hits})]


SPEC = register_scorer(ScorerSpec(
    "peak_token", ("peak_token",), {"peak_token": "peak-token hits"},
    lambda llm, opts: PeakTokenScorer(opts.n_boot, opts.seed), needs_llm=False, default=False,
    unit_kinds=frozenset({"neuron", "resid"})))
