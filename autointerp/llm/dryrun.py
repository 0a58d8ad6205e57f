"""A dry-run LLM backend: the real pipeline runs against it and it counts what would be sent.

It answers without a model: an explanation line for explainer prompts, a JSON list of 0/1 for
JSON simulations, yes and no in turn for yes/no judges, one-hot rows for prompt logprobs (never constant, so
every score and its control run as they would). Every call's prompt
and completion tokens are counted per template (prompt tokens with the given counter: the real
LLM's tokenizer where it is at hand, else about 4 characters a token; completion tokens as the
call's max_tokens, the most it may cost). `batch --dry-run` uses it to estimate a batch's tokens
and cost by running one unit's real explain -> score pipeline into a throwaway store.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable

import numpy as np

from .base import LLM, Result

SAMPLE_EXPLANATION = 'the word "the" at the start of a sentence, and sometimes other articles'


class DryRunLLM(LLM):
    backend = "dryrun"

    def __init__(self, name: str, count: Callable[[str], int], *, prompt_logprobs: bool, chat_style: bool = False):
        super().__init__(store=None)
        self.name = name
        self.model = name
        self.count = count
        self.supports_prompt_logprobs = prompt_logprobs
        self.chat_style = chat_style
        self.usage: dict[str, dict[str, int]] = defaultdict(lambda: {"calls": 0, "prompt": 0, "completion": 0})
        self._k = 0

    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop) -> Result:
        text = "\n".join(m.get("content", "") for m in messages)
        if max_tokens <= 5:
            self._k += 1
            out = ["yes" if self._k % 2 else "no"] * n
        elif "activations" in text.lower() and re.search(r"\d+\t", text):
            k = len(re.findall(r"(?m)^\d+\t", messages[-1].get("content", "")))
            out = ['{"activations": [' + ", ".join(str(i % 2) for i in range(k)) + "]}"] * n   # not constant:
            # a constant simulation is null and skips its control, which would undercount
        else:
            out = [SAMPLE_EXPLANATION] * n
        return Result(out, self.count(text), max_tokens * n)

    def _complete(self, prompt, *, prefix, temperature, max_tokens, n, seed, stop) -> Result:
        return Result([" " + SAMPLE_EXPLANATION] * n, self.count(prompt), max_tokens * n)

    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates) -> Result:
        rows = []
        for segs in list_of_segments:
            self._k += 1
            rows.append(np.eye(len(candidates))[(np.arange(len(segs)) + self._k) % len(candidates)] * 0.9)
        pt = sum(self.count(prefix + "".join(segs)) for segs in list_of_segments)
        return Result(rows, pt, sum(len(segs) for segs in list_of_segments))

    def _record(self, kind, template, pt, ct, latency, cost, cache_hit, error=None) -> None:
        u = self.usage[template.name if template is not None else kind]
        u["calls"] += 1
        u["prompt"] += int(pt or 0)
        u["completion"] += int(ct or 0)
