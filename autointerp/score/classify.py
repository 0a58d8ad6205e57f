"""Detection and fuzzing scores (EleutherAI delphi style): the explanation is used to classify
texts, and the score is the balanced accuracy of those yes/no calls.

* detection: "does the unit fire anywhere in this text?" for held-out records; a record's label
  is True when its max activation is >= frac * the unit's max (default 0.25).
* fuzzing: "are the marked tokens the ones the unit fires on?" for held-out activating records,
  each shown twice: once with its active tokens (act >= frac * unit max) marked <<like this>>
  (label True), once with as many randomly chosen inactive tokens marked (label False; seeded).

Active means act >= frac * unit max for neurons and heads, whose activations are dense (a GELU
or SiLU neuron is rarely exactly 0, so "fires" needs a threshold). For SAE latents (sparse=True:
exactly 0 when off) it means act > 0, as in delphi: every activating example (top and quantile
records) is a positive, the non-activating random examples are the negatives, and fuzzing marks
every token the latent fires on. frac=0 gives the same rule.

The judge answers yes/no; with prompt logprobs p(yes) = P(" yes") / (P(" yes") + P(" no")), the
prediction is p(yes) > 0.5, and AUROC of p(yes) is reported beside the accuracy. Without
logprobs the chat answer is parsed (an answer that is neither yes nor no counts as 0.5 and bad).
"""

from __future__ import annotations

import random as _random
from typing import Sequence

from pydantic import BaseModel

from ..core.keys import content_hash
from ..core.format import highlight
from .metrics import auroc, balanced_accuracy, bootstrap_balanced_accuracy

YES_NO = [" yes", " no"]


class Item(BaseModel):
    ctx_idx: int
    kind: str                 # the record's kind (top | random | quantile)
    label: bool
    text: str
    marked: list[int] = []


def record_text(tokens: Sequence[str], marked: Sequence[int] = ()) -> str:
    """The record's tokens joined, marked positions wrapped in << >>, on one line."""
    text = highlight(tokens, marked) if marked else "".join(tokens)
    return " ".join(text.split())


def is_active(unit_max: float, frac: float, sparse: bool = False):
    """The predicate act -> active (see the module docstring)."""
    if unit_max <= 0:
        return lambda a: False
    if sparse or frac == 0:
        return lambda a: a > 0
    thr = frac * unit_max
    return lambda a: a >= thr


def detection_items(records: Sequence, unit_max: float, *, frac: float = 0.25, sparse: bool = False) -> list[Item]:
    on = is_active(unit_max, frac, sparse)
    return [Item(ctx_idx=r.ctx_idx, kind=r.kind, label=bool(on(r.max_act)), text=record_text(r.tokens))
            for r in records]


def fuzzing_items(records: Sequence, unit_max: float, *, frac: float = 0.25, seed: int = 0,
                  sparse: bool = False) -> list[Item]:
    on = is_active(unit_max, frac, sparse)
    items = []
    for r in records:
        if not on(r.max_act):
            continue
        active = [i for i, a in enumerate(r.acts) if on(a)]
        inactive = [i for i, a in enumerate(r.acts) if not on(a) and r.tokens[i].strip()]
        if not active or len(inactive) < len(active):
            continue
        rng = _random.Random(content_hash(seed, r.ctx_idx))
        wrong = sorted(rng.sample(inactive, len(active)))
        items.append(Item(ctx_idx=r.ctx_idx, kind=r.kind, label=True, text=record_text(r.tokens, active), marked=active))
        items.append(Item(ctx_idx=r.ctx_idx, kind=r.kind, label=False, text=record_text(r.tokens, wrong), marked=wrong))
    return items


def build_yes_no_prompt(template, explanation: str, text: str) -> tuple[str, str]:
    """(fixed prefix, per-item rest) of a completion template with $explanation and $text."""
    return template.split_prefix(explanation=explanation.strip(), text=text)


def parse_yes_no(answer: str) -> float | None:
    a = answer.strip().lower().lstrip("\"'*`").split()
    if not a:
        return None
    w = a[0].strip(".,!:;\"'*`")
    return 1.0 if w == "yes" else 0.0 if w == "no" else None


class YesNoJudge:
    """Asks the LLM yes/no questions about texts: from logprobs when it has them, else by chat."""

    def __init__(self, llm, task: str, *, use_logprobs: bool | None = None, batch_size: int | None = None):
        from ..llm import load_prompt
        from ..llm.base import texts_per_call

        self.llm = llm
        self.task = task  # 'detection' | 'fuzzing'
        self.use_logprobs = getattr(llm, "supports_prompt_logprobs", False) if use_logprobs is None else use_logprobs
        self.template = load_prompt(task if self.use_logprobs else f"{task}_chat")
        self.batch_size = batch_size or texts_per_call(llm)

    @property
    def scorer(self) -> str:
        return self.llm.name

    def p_yes(self, explanation: str, texts: Sequence[str]) -> tuple[list[float], int]:
        """p(yes) per text and the number of unparseable answers."""
        out: list[float] = []
        bad = 0
        if self.use_logprobs:
            from .simulate import parallel_map

            built = [build_yes_no_prompt(self.template, explanation, t) for t in texts]

            def one(chunk):
                rows = self.llm.prompt_logprobs_batch(chunk[0][0], [[rest] for _, rest in chunk], YES_NO, template=self.template)
                return [float(r[-1][0]) / (float(r[-1][0]) + float(r[-1][1])) if float(r[-1][0]) + float(r[-1][1]) > 0
                        else 0.5 for r in rows]

            chunks = [built[i:i + self.batch_size] for i in range(0, len(built), self.batch_size)]
            out = [p for part in parallel_map(self.llm, one, chunks) for p in part]   # chunks in parallel on endpoints
            return out, bad
        from .simulate import parallel_map

        def one(t):
            msgs = self.template.render_messages(explanation=explanation.strip(), text=t)
            return parse_yes_no(self.llm.chat(msgs, temperature=0.0, max_tokens=3, template=self.template)[0])

        for p in parallel_map(self.llm, one, list(texts)):    # the items in parallel on endpoints
            if p is None:
                bad += 1
                p = 0.5
            out.append(p)
        return out, bad


def classification_score(items: Sequence[Item], p_yes: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Balanced accuracy of p(yes) > 0.5 against the labels, its bootstrap 95% interval over
    items, and AUROC of p(yes)."""
    labels = [it.label for it in items]
    preds = [p > 0.5 for p in p_yes]
    lo, hi = bootstrap_balanced_accuracy(labels, preds, n_boot=n_boot, seed=seed)
    return {"value": balanced_accuracy(labels, preds) if items else None, "ci": (lo, hi), "auroc": auroc(labels, p_yes),
            "n": len(items), "n_pos": sum(labels)}
