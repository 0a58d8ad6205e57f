"""`check_llm`: connect, send one tiny chat request, probe what the endpoint really does, and say
which simulator and judge a run will use (the Python side of `autointerp llm check`)."""

from __future__ import annotations

import time

from ..errors import LLMError
from .base import LLM, LogprobsUnsupported

CHECK_PREFIX, CHECK_SEGMENT, CHECK_CANDIDATES = "Counting: 1, 2, 3,", " 4,", [" 5", " 6"]


def choices_for(caps: dict) -> dict:
    """The simulator and yes/no judge the score code picks from these capabilities (it picks by
    `supports_prompt_logprobs`, which is caps['prompt_logprobs'])."""
    if caps.get("prompt_logprobs"):
        return {"simulator": "logprobs", "judge": "logprobs",
                "simulator_note": "expected values from prompt logprobs, all records at once",
                "judge_note": "P(yes) from prompt logprobs"}
    why = caps.get("note") or "no prompt logprobs"
    return {"simulator": "json", "judge": "chat",
            "simulator_note": f"the model writes the values as JSON ({why})",
            "judge_note": "the model answers yes/no by chat"}


def check_llm(llm: LLM) -> dict:
    """Raises LLMError (one line) when the endpoint cannot be reached, the key is refused, the
    model is unknown, or the reply is empty or unusable; otherwise returns what was found."""
    t0 = time.perf_counter()
    replies = llm.chat([{"role": "user", "content": "Reply with the single word: OK"}], max_tokens=8)
    latency = time.perf_counter() - t0
    if not isinstance(replies, list) or not replies or not isinstance(replies[0], str):
        raise LLMError(f"{llm.name} gave an unusable chat reply ({type(replies).__name__})")
    reply = replies[0]
    if not reply.strip():
        raise LLMError(f"{llm.name} answered the check with an empty reply; the model or its chat template is not usable")
    caps = dict(llm.capabilities())
    caps["chat"] = True
    lp_ok, note, lp_latency, p5 = False, caps.get("note"), None, None
    if caps.get("prompt_logprobs"):
        t1 = time.perf_counter()
        try:
            p = llm.prompt_logprobs(CHECK_PREFIX, [CHECK_SEGMENT], CHECK_CANDIDATES)
            lp_ok = bool(p.shape == (1, 2))
            lp_latency = time.perf_counter() - t1
            p5 = float(p[0, 0])
            note = f"P(' 5' after '1, 2, 3, 4,') = {p5:.3f}"
        except LogprobsUnsupported as e:
            caps["prompt_logprobs"] = False
            note = caps["note"] = str(e)
    structured = llm.structured_support()
    return {**llm.info(), "latency_s": round(latency, 3), "reply": reply.strip()[:80],
            "structured_output": structured or "parse-and-retry",
            "capabilities": caps, "prompt_logprobs": lp_ok, "top_k": caps.get("top_k"),
            "prompt_logprobs_latency_s": round(lp_latency, 3) if lp_latency else None,
            "prompt_logprobs_note": note, "p_5": p5, **choices_for(caps)}
