"""Simulators: given an explanation and a record's tokens, predict the unit's activation (0..10)
at every token.

* `LogprobSimulator` (all-at-once, Bills et al. 2023): one prompt per record lists the record's
  tokens as `token<TAB>unknown` lines after the explanation; at every slot (right after a token's
  tab) the simulator model's next-text distribution over the strings "0".."10" gives the
  expected value  E[v] = sum_v v * P(v). One forward pass per record; the fixed few-shot head of
  the template is a shared prefix whose KV cache the embedded backend reuses.
* `JsonSimulator`: for endpoints without prompt logprobs, the model fills in a JSON list of
  integers, one per token; a missing, non-numeric or out-of-range value becomes 0 and is counted.

Prompt building (pure, testable) is kept apart from the model calls.
"""

from __future__ import annotations

import json

from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel

from ..core.format import show_token

VALUES = list(range(11))
CANDIDATES = [str(v) for v in VALUES]
SLOT = "\x00"  # marks a prediction slot while the prompt is built; never sent


class Simulation(BaseModel):
    """Simulated activations of some records by one simulator."""

    method: str                      # 'logprobs' | 'json'
    scorer: str                      # the simulator model's name
    template_hash: str
    expected: list[list[float]]      # per record, per token, in 0..10
    n_bad: int = 0                   # JSON simulator: values replaced by 0


# ---- expected values from candidate probabilities --------------------------------------------
def exclusive_probs(probs: np.ndarray, candidates: Sequence[str] = CANDIDATES) -> np.ndarray:
    """Turn "text starts with c" probabilities into probabilities of exactly c among the
    candidates. A candidate that is a prefix of another ("1" of "10") also counts the longer
    one's mass: P_excl("1") = P("1") - P("10"). Longest candidates first, so chains
    (a, ab, abc) work too; tiny negative differences from rounding are clipped to 0."""
    p = np.asarray(probs, dtype=np.float64)
    out = p.copy()
    order = sorted(range(len(candidates)), key=lambda j: -len(candidates[j]))
    for j in order:
        longer = [k for k in range(len(candidates)) if k != j and candidates[k].startswith(candidates[j])
                  and len(candidates[k]) > len(candidates[j])]
        if longer:
            out[..., j] = p[..., j] - out[..., longer].sum(axis=-1)
    return np.clip(out, 0.0, None)


def expected_values(probs: np.ndarray, candidates: Sequence[str] = CANDIDATES,
                    values: Sequence[float] | None = None) -> np.ndarray:
    """E[v] = sum_v v * P(v) at every slot, P renormalised over the candidates (the 11 values
    0..10 by default; the simulator may also put mass on other text, e.g. 'unknown'). `values`
    gives each candidate's value when the candidates are not numbers ("yes" -> 10, "no" -> 0). A
    slot with no mass on any candidate gets 0. probs: [slots, len(candidates)] -> [slots]."""
    p = exclusive_probs(probs, candidates)
    vals = np.asarray([float(c) for c in (values if values is not None else candidates)])
    total = p.sum(axis=-1)
    ev = (p * vals).sum(axis=-1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, ev, 0.0)


# ---- prompt building ---------------------------------------------------------------------------
def slot_lines(tokens: Sequence[str]) -> str:
    """The record's tokens as `token<TAB>unknown` lines, a SLOT marker before each 'unknown'."""
    return "".join(f"{show_token(t)}\t{SLOT}unknown\n" for t in tokens)


def build_logprob_prompt(template, explanation: str, tokens: Sequence[str], **extra) -> tuple[str, list[str]]:
    """(prefix, segments) for `llm.prompt_logprobs`: prefix is the template's fixed head (the same
    for every unit and record), segments[i] ends right after token i's tab, so row i of the
    result is the distribution of token i's activation value. prefix + "".join(segments) is the
    rendered prompt up to the last slot. The template takes $explanation and $records."""
    full = template.render_text(explanation=explanation.strip(), records=slot_lines(tokens), **extra)
    prefix = template.prefix
    if SLOT in prefix or not full.startswith(prefix):
        prefix = ""
    pieces = full[len(prefix):].split(SLOT)
    if len(pieces) != len(tokens) + 1:
        raise ValueError(f"template {template.name!r} must place $records exactly once")
    return prefix, pieces[:-1]


def build_json_prompt(template, explanation: str, tokens: Sequence[str]) -> Any:
    """Messages (chat template) or text asking for len(tokens) integers 0..10 as JSON. The
    template takes $explanation, $tokens (`index<TAB>token` lines) and $n_tokens."""
    lines = "\n".join(f"{i}\t{show_token(t)}" for i, t in enumerate(tokens))
    return template.render(explanation=explanation.strip(), tokens=lines, n_tokens=len(tokens))


def activations_schema(n: int) -> dict:
    """The JSON simulator's reply: {"activations": [n integers 0..10]}."""
    return {"title": "Activations", "type": "object", "required": ["activations"],
            "properties": {"activations": {"type": "array", "minItems": n, "maxItems": n,
                                           "items": {"type": "integer", "enum": list(range(11))}}}}


def parse_json_values(text: str, n: int) -> tuple[list[float], int]:
    """The first JSON list in `text` (or the first list value of a JSON object) as n values in
    0..10; each missing, non-numeric or out-of-range value becomes 0 and is counted as bad (so a
    reply with no JSON at all counts n bad)."""
    from ..llm import extract_json

    try:
        value = extract_json(text)
    except ValueError:
        return [0.0] * n, n
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), [])
    if not isinstance(value, list):
        return [0.0] * n, n
    out, bad = [], 0
    for i in range(n):
        v = value[i] if i < len(value) else None
        if isinstance(v, dict):  # {"token": ..., "activation": 3}
            v = next((x for x in v.values() if isinstance(x, (int, float)) and not isinstance(x, bool)), None)
        try:
            f = float(v) if v is not None and not isinstance(v, bool) else None
        except (TypeError, ValueError):
            f = None
        if f is None or not np.isfinite(f) or f < 0 or f > 10:
            out.append(0.0)
            bad += 1
        else:
            out.append(f)
    return out, bad


# ---- simulators --------------------------------------------------------------------------------
def parallel_map(llm, fn, items: Sequence) -> list:
    """fn over items, in order. On a remote endpoint (an LLM with `concurrency` > 1) the calls run
    in parallel threads, up to that many at once, so a latency-bound server is kept busy; the
    embedded backend runs them one by one (its forward passes already use every core)."""
    n = int(getattr(llm, "concurrency", 1) or 1)
    if n <= 1 or getattr(llm, "backend", "") == "embedded" or len(items) <= 1:
        return [fn(x) for x in items]
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    ctx = contextvars.copy_context()       # the caller's context (e.g. batch's per-unit LLM deadline) in every thread
    with ThreadPoolExecutor(max_workers=min(n, len(items))) as pool:
        return list(pool.map(lambda x: ctx.copy().run(fn, x), items))

class LogprobSimulator:
    """All-at-once simulation from prompt logprobs (exact on the embedded backend).

    Variants (the same machinery, another template and candidate set):
      logprobs     neuron-explainer's all-at-once: P("0".."10") after each `token<TAB>`
      yesno        the whole record shown first, then per token P("yes") vs P("no"): value 10 * P(yes)
      contrastive  the explanation (A) against a decoy (B), per token P("A") vs "B" vs "none":
                   value 10 * P(A) (the decoy is a fixed control text chosen by the explanation)
    """

    VARIANTS = {"logprobs": ("simulate_all_at_once", CANDIDATES, None),
                "yesno": ("simulate_yesno", ["yes", "no"], [10.0, 0.0]),
                "contrastive": ("simulate_contrastive", ["A", "B", "none"], [10.0, 0.0, 0.0])}

    def __init__(self, llm, template=None, *, batch_size: int | None = None, variant: str = "logprobs"):
        from ..llm import load_prompt
        from ..llm.base import texts_per_call

        name, self.candidates, self.values = self.VARIANTS[variant]
        self.method = variant
        self.llm = llm
        self.template = template or load_prompt(name)
        self.batch_size = batch_size or texts_per_call(llm)

    def _extra(self, explanation: str, tokens: Sequence[str]) -> dict:
        if self.method == "logprobs":
            return {}
        text = " ".join("".join(tokens).split())
        if self.method == "yesno":
            return {"text": text}
        from .controls import control_explanation

        return {"text": text, "decoy": control_explanation(explanation, 0, exclude=(explanation,))}

    @property
    def scorer(self) -> str:
        return self.llm.name

    def simulate(self, explanation: str, records: Sequence) -> Simulation:
        built = [build_logprob_prompt(self.template, explanation, r.tokens, **self._extra(explanation, r.tokens))
                 for r in records]
        def one(chunk):
            if len({p for p, _ in chunk}) == 1:
                rows = self.llm.prompt_logprobs_batch(chunk[0][0], [s for _, s in chunk], self.candidates,
                                                      template=self.template)
            else:  # cannot happen with a well-formed template; stay correct anyway
                rows = [self.llm.prompt_logprobs(p, s, self.candidates, template=self.template) for p, s in chunk]
            return [expected_values(r, self.candidates, self.values).tolist() for r in rows]

        chunks = [built[i:i + self.batch_size] for i in range(0, len(built), self.batch_size)]
        expected: list[list[float]] = [e for part in parallel_map(self.llm, one, chunks) for e in part]
        return Simulation(method=self.method, scorer=self.scorer, template_hash=self.template.hash, expected=expected)


class JsonSimulator:
    """The model writes a JSON list of integers; bad values become 0 and are counted."""

    method = "json"

    def __init__(self, llm, template=None, *, max_tokens_per_value: int = 3):
        from ..llm import load_prompt

        self.llm = llm
        self.template = template or load_prompt("simulate_json")
        self.max_tokens_per_value = max_tokens_per_value

    @property
    def scorer(self) -> str:
        return self.llm.name

    def simulate(self, explanation: str, records: Sequence) -> Simulation:
        def one(r):
            prompt = build_json_prompt(self.template, explanation, r.tokens)
            max_tokens = 16 + self.max_tokens_per_value * len(r.tokens)
            if isinstance(prompt, list) and self.llm.structured_support():
                # the backend enforces the schema: exactly one integer 0..10 per token
                from ..errors import LLMError

                try:
                    obj = self.llm.structured(prompt, activations_schema(len(r.tokens)), max_tokens=max_tokens,
                                              temperature=0.0, template=self.template)
                except LLMError as e:
                    if "gave no valid" not in str(e):   # a reply cut short counts as all bad; a failed call raises
                        raise
                    return [0.0] * len(r.tokens), len(r.tokens)
                return parse_json_values(json.dumps(obj), len(r.tokens))
            if isinstance(prompt, list):
                text = self.llm.chat(prompt, temperature=0.0, max_tokens=max_tokens, template=self.template)[0]
            else:
                text = self.llm.complete(prompt, temperature=0.0, max_tokens=max_tokens, template=self.template)[0]
            return parse_json_values(text, len(r.tokens))

        expected, bad = [], 0
        for vals, b in parallel_map(self.llm, one, records):   # one request per record, in parallel on endpoints
            expected.append(vals)
            bad += b
        return Simulation(method=self.method, scorer=self.scorer, template_hash=self.template.hash,
                          expected=expected, n_bad=bad)


def get_simulator(llm, method: str = "auto"):
    """'logprobs', 'yesno', 'contrastive' (prompt-logprob variants), 'json', or 'auto': logprobs
    when the LLM gives prompt logprobs, else JSON."""
    if method == "auto":
        method = "logprobs" if getattr(llm, "supports_prompt_logprobs", False) else "json"
    if method in LogprobSimulator.VARIANTS:
        return LogprobSimulator(llm, variant=method)
    if method == "json":
        return JsonSimulator(llm)
    from ..errors import UsageError

    raise UsageError(f"unknown simulator {method!r}: use auto, logprobs, yesno, contrastive or json")
