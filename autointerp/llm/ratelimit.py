"""Per-endpoint request and token rate limits (token buckets), shared by every client of the
same base URL in the process. Works from threads (acquire) and coroutines (aacquire)."""

from __future__ import annotations

import asyncio
import threading
import time


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        self.rpm, self.tpm = rpm, tpm
        self._lock = threading.Lock()
        now = time.monotonic()
        self._req = (float(rpm) if rpm else 0.0, now)
        self._tok = (float(tpm) if tpm else 0.0, now)

    def _reserve(self, tokens: int) -> float:
        """Take one request and `tokens` tokens; return how long to wait before sending."""
        wait = 0.0
        with self._lock:
            now = time.monotonic()
            if self.rpm:
                level, t = self._req
                level = min(float(self.rpm), level + (now - t) * self.rpm / 60.0) - 1.0
                self._req = (level, now)
                if level < 0:
                    wait = max(wait, -level * 60.0 / self.rpm)
            if self.tpm:
                level, t = self._tok
                need = min(float(tokens), float(self.tpm))  # one huge request must still pass
                level = min(float(self.tpm), level + (now - t) * self.tpm / 60.0) - need
                self._tok = (level, now)
                if level < 0:
                    wait = max(wait, -level * 60.0 / self.tpm)
        return wait

    def acquire(self, tokens: int = 0) -> None:
        w = self._reserve(tokens)
        if w > 0:
            time.sleep(w)

    async def aacquire(self, tokens: int = 0) -> None:
        w = self._reserve(tokens)
        if w > 0:
            await asyncio.sleep(w)


_LIMITERS: dict[tuple, RateLimiter] = {}
_LOCK = threading.Lock()


def limiter_for(endpoint: str, rpm: float | None, tpm: float | None) -> RateLimiter | None:
    if not rpm and not tpm:
        return None
    with _LOCK:
        key = (endpoint, rpm, tpm)
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(rpm, tpm)
        return _LIMITERS[key]
