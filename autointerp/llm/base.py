"""The LLM interface every stage uses, and the one wrapper that records, caches and budgets
every call for every backend.

    llm = get_llm("embedded:smollm2-135m", store=store, budget=Budget(max_tokens=100_000))
    llm.chat([{"role": "user", "content": "hi"}], max_tokens=8)        -> ["Hello! ..."]
    llm.complete(text, max_tokens=40, stop=["\\n"], template=prompt)    -> ["..."]
    llm.structured(messages, MyModel)                                  -> MyModel(...)
    llm.prompt_logprobs(prefix, segments, ["0", ..., "10"])             -> np.ndarray [slots, candidates]

Backends implement `_chat`, `_complete`, `_prompt_logprobs_batch`; this module does the rest.
They are registered by name in llm/backends.py, which also holds get_llm.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import AutointerpError, BudgetExceeded, LLMError
from .budget import Budget
from .pricing import cost_usd
from .prompts import Prompt


class LogprobsUnsupported(LLMError):
    """The endpoint gives no prompt logprobs; fall back (e.g. to the JSON simulator)."""


class Result:
    """What a backend returns for one call: the value and its token counts."""

    __slots__ = ("value", "prompt_tokens", "completion_tokens")

    def __init__(self, value: Any, prompt_tokens: int = 0, completion_tokens: int = 0):
        self.value, self.prompt_tokens, self.completion_tokens = value, int(prompt_tokens or 0), int(completion_tokens or 0)


def _content_hash(*parts: Any) -> str:
    from ..core.keys import content_hash

    return content_hash(*parts)


def _cacheable(params: dict) -> bool:
    if params.get("cache") is False:
        return False
    return (params.get("temperature") or 0.0) == 0.0 or params.get("seed") is not None


# (kind, template) of the call in progress, so a backend can record each failed attempt of it
_CURRENT_CALL: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar("autointerp_llm_call", default=None)


class LLM:
    name: str
    backend: str
    model: str
    supports_prompt_logprobs: bool = False

    def __init__(self, *, store=None, budget: Budget | None = None):
        self.store = store
        self.budget = budget
        self._secrets: list[str] = []  # strings scrubbed from every recorded/raised message

    # ---- the public interface -------------------------------------------------------
    def chat(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256, n: int = 1,
             seed: int | None = None, stop: Sequence[str] | None = None, template: Prompt | None = None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        return self._call("chat", messages, params, template, lambda: self._chat(messages, **params))

    def complete(self, prompt: str, *, temperature: float = 0.0, max_tokens: int = 256, n: int = 1,
                 seed: int | None = None, stop: Sequence[str] | None = None, template: Prompt | None = None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        return self._call("complete", prompt, params, template,
                          lambda: self._complete(prompt, prefix=_template_prefix(template, prompt), **params))

    def structured(self, messages: list[dict], schema: Any, *, retries: int = 2,
                   template: Prompt | None = None, **kw) -> Any:
        """Ask for JSON matching `schema` (a pydantic model class, or a JSON schema dict) and return
        the validated object. Where the backend enforces the schema (`structured_support()`:
        constrained decoding in-process, an endpoint's json_schema / guided_json) one call, no
        retry: a reply that still does not parse (cut off by max_tokens) is an LLMError. Where it
        cannot, the fallback: tolerate code fences and prose, and on a parse or validation failure
        re-ask (up to `retries` times) with the error, recorded as kind `structured_parse`. The
        schema is part of the cache key either way."""
        from .structured import json_schema_of, parse_strict, schema_name, validate_as

        kw.setdefault("max_tokens", 512)
        js = json_schema_of(schema)
        name = schema_name(schema)
        params = dict(temperature=kw.get("temperature", 0.0), max_tokens=kw["max_tokens"], n=1, seed=kw.get("seed"),
                      stop=None)
        how = self.structured_support()
        if how:
            msgs = list(messages)
            text = self._call("structured", {"messages": msgs, "schema": js, "how": how}, params, template,
                              lambda: self._structured(msgs, js, how, **params))[0]
            try:
                return parse_strict(text, schema)
            except ValueError as e:
                raise LLMError(f"{self.name} ({how} structured output) gave no valid {name}: {e}") from None
        msgs = list(messages)
        last_err = ""
        params["stop"] = kw.get("stop")
        for attempt in range(retries + 1):
            text = self._call("structured_parse", {"messages": msgs, "schema": js}, params, template,
                              lambda m=msgs: self._chat(m, **params))[0]
            try:
                return validate_as(extract_json(text), schema)
            except ValueError as e:
                last_err = str(e)
                msgs = msgs + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That reply could not be used: {last_err}. "
                                                f"Answer again with only the JSON, no other text."},
                ]
        raise LLMError(f"{self.name} did not return valid {name} JSON after {retries + 1} tries ({last_err[:200]})")

    def structured_support(self) -> str | None:
        """How this backend enforces a JSON schema: 'constrained', 'json_schema', 'guided_json',
        or None (parse the reply and retry)."""
        return None

    def prompt_logprobs(self, prefix: str, segments: list[str], candidates: list[str], *,
                        template: Prompt | None = None) -> np.ndarray:
        """Row i: probability that the text right after prefix + "".join(segments[:i+1]) starts
        with candidates[j]. Shape [len(segments), len(candidates)]."""
        return self.prompt_logprobs_batch(prefix, [segments], candidates, template=template)[0]

    def prompt_logprobs_batch(self, prefix: str, list_of_segments: list[list[str]], candidates: list[str], *,
                              template: Prompt | None = None) -> list[np.ndarray]:
        request = {"prefix": prefix, "segments": list_of_segments, "candidates": list(candidates)}
        out = self._call("logprobs", request, {}, template,
                         lambda: self._prompt_logprobs_batch(prefix, list_of_segments, list(candidates)),
                         encode=lambda v: [a.tolist() for a in v],
                         decode=lambda v: [np.asarray(a, dtype=np.float64).reshape(-1, len(candidates)) for a in v])
        return out

    # ---- backends implement these ---------------------------------------------------
    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop) -> Result:  # pragma: no cover
        raise NotImplementedError

    def _complete(self, prompt, *, prefix, temperature, max_tokens, n, seed, stop) -> Result:  # pragma: no cover
        raise NotImplementedError

    def _structured(self, messages, schema: dict, how: str, *, temperature, max_tokens, n, seed, stop) -> Result:  # pragma: no cover
        raise NotImplementedError

    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates) -> Result:  # pragma: no cover
        raise LogprobsUnsupported(f"{self.name} gives no prompt logprobs")

    # ---- recording, cache, budget: written once for every backend ----------------------
    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def _before(self, kind: str, request: Any, params: dict) -> tuple[str | None, Any]:
        key = None
        if self.store is not None and _cacheable(params):
            key = _content_hash(self.cache_identity(), kind, request, params, params.get("seed"))
            hit = self.store.llm_cache_get(key)
            if hit is not None:
                return key, hit
        if self.budget is not None:
            self.budget.check()
        return key, None

    def _record(self, kind, template, pt, ct, latency, cost, cache_hit, error=None) -> None:
        if self.store is None:
            return
        self.store.record_llm_call(
            backend=self.backend, model=self.model, kind=kind,
            template=template.name if template is not None else None,
            template_hash=template.hash if template is not None else None,
            prompt_tokens=pt, completion_tokens=ct, latency_s=latency, cost_usd=cost,
            cache_hit=cache_hit, error=self.scrub(error) if error else None)

    def _record_attempt(self, error: str, latency: float | None) -> None:
        """One row for a failed attempt that is being retried (the call's final outcome gets its own row)."""
        cur = _CURRENT_CALL.get()
        kind, template = cur if cur is not None else ("request", None)
        self._record(kind, template, None, None, latency, 0.0, False, error)

    def _hit(self, kind, template, hit, decode):
        self._record(kind, template, hit.get("prompt_tokens"), hit.get("completion_tokens"), 0.0, 0.0, True)
        return decode(hit["value"])

    def _fail(self, kind, template, t0, e: BaseException) -> LLMError:
        if isinstance(e, LLMError):
            err = e
        elif isinstance(e, AutointerpError):
            self._record(kind, template, None, None, time.perf_counter() - t0, 0.0, False, f"{type(e).__name__}: {e}")
            raise e
        else:
            err = LLMError(f"{self.name} {kind} call failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        msg = self.scrub(str(err))
        if msg != str(err):
            err = type(err)(msg)
        self._record(kind, template, None, None, time.perf_counter() - t0, 0.0, False, f"{type(err).__name__}: {msg}")
        return err

    def _done(self, kind, template, t0, key, res: Result, encode) -> Any:
        latency = time.perf_counter() - t0
        cost = cost_usd(self.backend, self.model, res.prompt_tokens, res.completion_tokens)
        if self.budget is not None:
            self.budget.charge(res.prompt_tokens + res.completion_tokens, cost)
        self._record(kind, template, res.prompt_tokens, res.completion_tokens, latency, cost, False)
        if key is not None:
            self.store.llm_cache_put(key, self.backend, self.model, {
                "value": encode(res.value), "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens})
        return res.value

    @contextlib.contextmanager
    def _attempt(self, kind: str, template: Prompt | None) -> Iterator[float]:
        """Around one uncached request (sync or async): yields its start time; the call is the
        current one (_CURRENT_CALL) inside; a failure (not a budget stop) leaves as _fail's error."""
        t0 = time.perf_counter()
        tok = _CURRENT_CALL.set((kind, template))
        try:
            yield t0
        except BudgetExceeded:
            raise
        except Exception as e:
            raise self._fail(kind, template, t0, e) from None
        finally:
            _CURRENT_CALL.reset(tok)

    def _call(self, kind: str, request: Any, params: dict, template: Prompt | None, fn: Callable[[], Result],
              encode: Callable = lambda v: v, decode: Callable = lambda v: v) -> Any:
        key, hit = self._before(kind, request, params)
        if hit is not None:
            return self._hit(kind, template, hit, decode)
        with self._attempt(kind, template) as t0:
            res = fn()
        return self._done(kind, template, t0, key, res, encode)

    async def _acall(self, kind: str, request: Any, params: dict, template: Prompt | None, afn,
                     encode: Callable = lambda v: v, decode: Callable = lambda v: v) -> Any:
        key, hit = self._before(kind, request, params)
        if hit is not None:
            return self._hit(kind, template, hit, decode)
        with self._attempt(kind, template) as t0:
            res = await afn()
        return self._done(kind, template, t0, key, res, encode)

    # ---- async (backends with real concurrency override _achat/_acomplete) ----------------
    async def achat(self, messages, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        return await asyncio.to_thread(self.chat, messages, temperature=temperature, max_tokens=max_tokens, n=n,
                                       seed=seed, stop=stop, template=template)

    async def acomplete(self, prompt, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        return await asyncio.to_thread(self.complete, prompt, temperature=temperature, max_tokens=max_tokens, n=n,
                                       seed=seed, stop=stop, template=template)

    concurrent: bool = False  # True when requests may run in parallel (remote endpoints)

    def info(self) -> dict:
        return {"name": self.name, "backend": self.backend, "model": self.model}

    def cache_identity(self) -> tuple:
        """What makes two backends give the same answers: part of every response-cache key."""
        return (self.backend, self.model)

    def capabilities(self) -> dict:
        """What this LLM can do, as found out (endpoints are probed; see OpenAILLM.capabilities)."""
        return {"chat": True, "completions": True, "prompt_logprobs": bool(self.supports_prompt_logprobs),
                "top_k": None, "note": None}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _template_prefix(template: Prompt | None, prompt: str) -> str | None:
    if template is None or template.is_chat:
        return None
    p = template.prefix
    return p if p and prompt.startswith(p) else None


# ---- JSON parsing for structured output --------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON value in `text`: inside a ``` fence if there is one, else the first
    object/array that parses. Raises ValueError with a short reason."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    dec = json.JSONDecoder()
    for cand in candidates:
        s = cand.strip()
        for i, ch in enumerate(s):
            if ch in "{[":
                try:
                    value, _ = dec.raw_decode(s[i:])
                    return value
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON object or array found in the reply")


def parse_json_as(text: str, schema: Any) -> Any:
    """The first JSON value in `text`, validated as `schema` (a pydantic model or a schema dict)."""
    from .structured import validate_as

    return validate_as(extract_json(text), schema)


# ---- batch helper (the backends and get_llm: llm/backends.py) -------------------------------
def map_chat(llm: LLM, list_of_messages: list[list[dict]], *, concurrency: int | None = None,
             **kw) -> list[list[str] | LLMError]:
    """Chat over many message lists. Remote backends run up to `concurrency` requests at once
    (under the endpoint's rate limits); the embedded backend runs them one by one. A failed item
    holds its LLMError (BudgetExceeded included: stop there) instead of failing the batch."""
    if not getattr(llm, "concurrent", False) or len(list_of_messages) <= 1:
        out: list = []
        for msgs in list_of_messages:
            try:
                out.append(llm.chat(msgs, **kw))
            except LLMError as e:
                out.append(e)
                if isinstance(e, BudgetExceeded):
                    out.extend(e for _ in range(len(list_of_messages) - len(out)))
                    break
        return out

    async def run() -> list:
        sem = asyncio.Semaphore(concurrency or getattr(llm, "concurrency", 4))

        async def one(msgs):
            async with sem:
                try:
                    return await llm.achat(msgs, **kw)
                except LLMError as e:
                    return e

        return await asyncio.gather(*(one(m) for m in list_of_messages))

    return _run_async(run())


def _run_async(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # called from inside a running loop (e.g. a notebook): run in a helper thread
    box: dict = {}
    ctx = contextvars.copy_context()
    t = threading.Thread(target=lambda: box.setdefault("r", ctx.run(asyncio.run, coro)))
    t.start()
    t.join()
    return box["r"]


def texts_per_call(llm) -> int:
    """How many texts a scorer hands prompt_logprobs_batch at once: an endpoint's `echo_batch`
    (they go as one request), else 8."""
    return int(getattr(llm, "echo_batch", 0) or 8)


def starts_with(probs, candidates, cids):
    """Make each column P(text starts with candidate j), given each candidate's own
    probability (the product over its tokens) and its tokens `cids` (ids or token strings).
    The product of a candidate's own tokens already counts a longer candidate whose tokens extend it ("1" counts "1","0" = "10" for
    SmolLM2); a longer candidate that is a token of its own ("10" in GPT-2) is added here."""
    out = probs.copy()
    for j, c in enumerate(candidates):
        for k, d in enumerate(candidates):
            if k != j and len(d) > len(c) and d.startswith(c) and list(cids[k][: len(cids[j])]) != list(cids[j]):
                out[:, j] += probs[:, k]
    return out


def starts_with_rows(probs, candidates, cids_per_row):
    """starts_with for every row of `probs` (slots x candidates), row i with its own tokens
    cids_per_row[i]: the same numbers, one starts_with per distinct tokens, not one a row."""
    groups: dict[tuple, list[int]] = {}
    for i, cids in enumerate(cids_per_row):
        groups.setdefault(tuple(map(tuple, cids)), []).append(i)
    if len(groups) == 1:
        return starts_with(probs, candidates, cids_per_row[0])
    out = probs.copy()
    for cids, rows in groups.items():
        out[rows] = starts_with(probs[rows], candidates, cids)
    return out
