"""`check_llm`: connect, send one tiny request, report latency and whether prompt logprobs work
(the Python side of `autointerp llm check`)."""

from __future__ import annotations

import time

from .base import LLM, LogprobsUnsupported


def check_llm(llm: LLM) -> dict:
    """Raises LLMError (one line) when the endpoint cannot be reached, the key is refused or the
    model is unknown; otherwise returns what was found."""
    t0 = time.perf_counter()
    reply = llm.chat([{"role": "user", "content": "Reply with the single word: OK"}], max_tokens=4)[0]
    latency = time.perf_counter() - t0
    lp_ok, note, lp_latency = False, None, None
    t1 = time.perf_counter()
    try:
        p = llm.prompt_logprobs("Counting: 1, 2, 3,", [" 4,"], [" 5", " 6"])
        lp_ok = bool(p.shape == (1, 2))
        lp_latency = time.perf_counter() - t1
        note = f"P(' 5' after '1, 2, 3, 4,') = {float(p[0, 0]):.3f}"
    except LogprobsUnsupported as e:
        note = str(e)
    return {**llm.info(), "latency_s": round(latency, 3), "reply": reply.strip()[:80],
            "prompt_logprobs": lp_ok, "prompt_logprobs_latency_s": round(lp_latency, 3) if lp_latency else None,
            "prompt_logprobs_note": note}
