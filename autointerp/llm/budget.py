"""Budget caps shared across LLM calls: checked before each call, charged after it."""

from __future__ import annotations

import threading

from ..errors import BudgetExceeded


class Budget:
    """`Budget(max_tokens=None, max_cost_usd=None)`: share one instance across every call of a
    run. `check()` raises BudgetExceeded once a cap is reached; work stored so far is kept."""

    def __init__(self, max_tokens: int | None = None, max_cost_usd: float | None = None):
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd
        self.tokens = 0
        self.cost_usd = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                raise BudgetExceeded(f"LLM token budget reached ({self.tokens} of {self.max_tokens} tokens used); "
                                     "results so far are stored, raise --max-llm-tokens to go on")
            if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
                raise BudgetExceeded(f"LLM cost budget reached (${self.cost_usd:.4f} of ${self.max_cost_usd:.4f}); "
                                     "results so far are stored, raise --max-cost-usd to go on")

    def charge(self, tokens: int, cost_usd: float) -> None:
        with self._lock:
            self.tokens += int(tokens or 0)
            self.cost_usd += float(cost_usd or 0.0)
            self.calls += 1

    @property
    def unlimited(self) -> bool:
        return self.max_tokens is None and self.max_cost_usd is None

    def __repr__(self) -> str:
        return f"Budget(tokens={self.tokens}/{self.max_tokens}, cost_usd={self.cost_usd:.4f}/{self.max_cost_usd})"
