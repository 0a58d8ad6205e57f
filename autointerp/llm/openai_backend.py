"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio) through
the `openai` package. The only module that imports `openai`.

The API key is read from OPENAI_API_KEY at construction and handed to the client; it is never
stored, logged or put in an error message (messages are scrubbed of it). Retries are done here
with tenacity (exponential backoff with jitter on 429/5xx/timeouts/connection errors, honouring
Retry-After; none on other 4xx); the client's own retries are off.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import time
from typing import Any

import numpy as np
import openai
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..errors import LLMError
from .base import LLM, LogprobsUnsupported, Result
from .budget import Budget
from .ratelimit import limiter_for

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_KEY = "sk-no-key-needed"

RETRY_STATUS = {408, 409, 429}


class MalformedResponse(LLMError):
    """The endpoint answered, but not with a chat/completions response."""


def _status(e: BaseException) -> int | None:
    return getattr(e, "status_code", None) if isinstance(e, openai.APIStatusError) else None


def is_retryable(e: BaseException) -> bool:
    if isinstance(e, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    s = _status(e)
    return s is not None and (s in RETRY_STATUS or s >= 500)


def retry_after_s(e: BaseException) -> float | None:
    """Seconds asked for by Retry-After / retry-after-ms, if the error response carries them."""
    resp = getattr(e, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class _Wait:
    """Exponential backoff with jitter, or the server's Retry-After when it gives one."""

    def __init__(self, initial: float, maximum: float):
        self.maximum = maximum
        self.exp = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def __call__(self, state) -> float:
        e = state.outcome.exception() if state.outcome else None
        ra = retry_after_s(e) if e is not None else None
        if ra is not None:
            return min(ra, max(self.maximum, 1.0) * 4)
        return self.exp(state)


def _error_message(e: BaseException) -> str:
    """A short message from an error body, without headers."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg).splitlines()[0][:200]
    msg = getattr(e, "message", None) or str(e)
    return str(msg).splitlines()[0][:200] if msg else type(e).__name__


class OpenAILLM(LLM):
    backend = "openai"
    concurrent = True

    def __init__(self, model: str, *, base_url: str | None = None, store=None, budget: Budget | None = None,
                 concurrency: int = 4, timeout: float | None = None, max_attempts: int | None = None, retry_wait: float = 1.0,
                 retry_wait_max: float = 30.0, rpm: float | None = None, tpm: float | None = None,
                 logprobs_top_k: int = 20, **_ignored: Any):
        super().__init__(store=store, budget=budget)
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("AUTOINTERP_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url == DEFAULT_BASE_URL:
                raise LLMError("OPENAI_API_KEY is not set (export it, or point --llm-base-url at a local server)")
            key = DUMMY_KEY  # local servers (vLLM, llama.cpp, Ollama) accept any key
        self._key = key
        self._secrets = [key] if key != DUMMY_KEY else []
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout if timeout is not None else (_env_float("AUTOINTERP_LLM_TIMEOUT") or 60.0)
        self.max_attempts = max(1, int(max_attempts if max_attempts is not None else (_env_float("AUTOINTERP_LLM_MAX_ATTEMPTS") or 5)))
        self.retry_wait, self.retry_wait_max = retry_wait, retry_wait_max
        self.logprobs_top_k = logprobs_top_k
        rpm = rpm if rpm is not None else _env_float("AUTOINTERP_LLM_RPM")
        tpm = tpm if tpm is not None else _env_float("AUTOINTERP_LLM_TPM")
        self.limiter = limiter_for(self.base_url, rpm, tpm)
        self._client: openai.OpenAI | None = None
        self._aclients: dict[int, tuple[Any, openai.AsyncOpenAI, asyncio.Semaphore]] = {}
        self._lp_supported: bool | None = None

    def info(self) -> dict:
        return {**super().info(), "base_url": self.base_url}

    # ---- clients ----------------------------------------------------------------------
    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.timeout)
        return self._client

    def _aclient(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, openai.AsyncOpenAI(api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.timeout),
                     asyncio.Semaphore(self.concurrency))
            self._aclients = {id(loop): entry}
        return entry[1], entry[2]

    # ---- one request with retries -----------------------------------------------------------
    def _retrying(self, cls):
        return cls(stop=stop_after_attempt(self.max_attempts), wait=_Wait(self.retry_wait, self.retry_wait_max),
                   retry=retry_if_exception(is_retryable), reraise=True)

    def _request(self, fn, est_tokens: int):
        try:
            for attempt in self._retrying(Retrying):
                with attempt:
                    if self.limiter:
                        self.limiter.acquire(est_tokens)
                    return fn(self.client)
        except Exception as e:
            raise self._translate(e) from None

    async def _arequest(self, fn, est_tokens: int):
        client, sem = self._aclient()
        try:
            async with sem:
                async for attempt in self._retrying(AsyncRetrying):
                    with attempt:
                        if self.limiter:
                            await self.limiter.aacquire(est_tokens)
                        return await fn(client)
        except Exception as e:
            raise self._translate(e) from None

    def _translate(self, e: BaseException) -> LLMError:
        where = self.base_url
        if isinstance(e, LLMError):
            return e
        n = self.max_attempts
        if isinstance(e, openai.APITimeoutError):
            return LLMError(f"LLM endpoint {where} timed out after {self.timeout:g}s ({n} attempts)")
        if isinstance(e, openai.APIConnectionError):
            return LLMError(f"cannot reach LLM endpoint {where} ({n} attempts); is the server running and the URL right?")
        s = _status(e)
        if s is not None:
            msg = self.scrub(_error_message(e))
            if s == 401:
                return LLMError(f"LLM endpoint {where} rejected the API key (HTTP 401): check OPENAI_API_KEY")
            if s == 403:
                return LLMError(f"LLM endpoint {where} refused the request (HTTP 403): {msg}")
            if s == 404:
                return LLMError(f"LLM endpoint {where} has no model {self.model!r} or no such route (HTTP 404): {msg}")
            if s == 429 or s >= 500:
                return LLMError(f"LLM endpoint {where} kept failing (HTTP {s} after {n} attempts): {msg}")
            return LLMError(f"LLM endpoint {where} rejected the request (HTTP {s}): {msg}")
        if isinstance(e, (openai.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError)):
            return MalformedResponse(f"LLM endpoint {where} sent a malformed response ({type(e).__name__})")
        if isinstance(e, openai.OpenAIError):
            return LLMError(f"LLM endpoint {where}: {self.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__)}")
        return LLMError(f"LLM call to {where} failed: {type(e).__name__}")

    # ---- request building and response parsing -----------------------------------------------
    def _chat_args(self, messages, temperature, max_tokens, n, seed, stop) -> dict:
        args: dict[str, Any] = dict(model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens, n=n)
        if seed is not None:
            args["seed"] = seed
        if stop:
            args["stop"] = list(stop)
        return args

    @staticmethod
    def _usage(resp, fallback_prompt: str, texts: list[str]) -> tuple[int, int]:
        u = getattr(resp, "usage", None)
        pt = getattr(u, "prompt_tokens", None) if u is not None else None
        ct = getattr(u, "completion_tokens", None) if u is not None else None
        if pt is None:
            pt = max(1, len(fallback_prompt) // 4)
        if ct is None:
            ct = sum(max(1, len(t) // 4) for t in texts)
        return int(pt), int(ct)

    @staticmethod
    def _check(resp) -> list:
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("response has no choices")
        return sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)

    def _chat_result(self, resp, messages) -> Result:
        if isinstance(resp, (str, bytes)):
            raise MalformedResponse("response is not JSON")
        texts = [(c.message.content or "") for c in self._check(resp)]
        return Result(texts, *self._usage(resp, "".join(str(m.get("content", "")) for m in messages), texts))

    def _complete_result(self, resp, prompt) -> Result:
        if isinstance(resp, (str, bytes)):
            raise MalformedResponse("response is not JSON")
        texts = [(c.text or "") for c in self._check(resp)]
        return Result(texts, *self._usage(resp, prompt, texts))

    @staticmethod
    def _est(text: str, max_tokens: int, n: int) -> int:
        return len(text) // 4 + max_tokens * n

    # ---- backend methods ------------------------------------------------------------------
    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop) -> Result:
        args = self._chat_args(messages, temperature, max_tokens, n, seed, stop)
        resp = self._request(lambda c: c.chat.completions.create(**args),
                             self._est("".join(str(m.get("content", "")) for m in messages), max_tokens, n))
        return self._parse(self._chat_result, resp, messages)

    def _complete(self, prompt, *, prefix=None, temperature, max_tokens, n, seed, stop) -> Result:
        args = dict(model=self.model, prompt=prompt, temperature=temperature, max_tokens=max_tokens, n=n)
        if seed is not None:
            args["seed"] = seed
        if stop:
            args["stop"] = list(stop)
        resp = self._request(lambda c: c.completions.create(**args), self._est(prompt, max_tokens, n))
        return self._parse(self._complete_result, resp, prompt)

    def _parse(self, fn, resp, arg) -> Result:
        try:
            return fn(resp, arg)
        except LLMError:
            raise
        except Exception as e:
            raise MalformedResponse(f"LLM endpoint {self.base_url} sent a malformed response ({type(e).__name__})") from None

    async def achat(self, messages, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        args = self._chat_args(messages, temperature, max_tokens, n, seed, stop)

        async def go() -> Result:
            resp = await self._arequest(lambda c: c.chat.completions.create(**args),
                                        self._est("".join(str(m.get("content", "")) for m in messages), max_tokens, n))
            return self._parse(self._chat_result, resp, messages)

        return await self._acall("chat", messages, params, template, go)

    async def acomplete(self, prompt, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        args = dict(model=self.model, prompt=prompt, temperature=temperature, max_tokens=max_tokens, n=n)
        if seed is not None:
            args["seed"] = seed
        if stop:
            args["stop"] = list(stop)

        async def go() -> Result:
            resp = await self._arequest(lambda c: c.completions.create(**args), self._est(prompt, max_tokens, n))
            return self._parse(self._complete_result, resp, prompt)

        return await self._acall("complete", prompt, params, template, go)

    # ---- prompt logprobs through the completions endpoint (echo + logprobs) --------------------
    @property
    def supports_prompt_logprobs(self) -> bool:  # type: ignore[override]
        """Probed once with a tiny echo+logprobs request (recorded like any call)."""
        if self._lp_supported is None:
            try:
                self.prompt_logprobs("The capital of France is", [" Paris"], [","])
                self._lp_supported = True
            except LogprobsUnsupported:
                self._lp_supported = False
        return self._lp_supported

    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates) -> Result:
        if self._lp_supported is False:
            raise LogprobsUnsupported(f"{self.name} at {self.base_url} gives no prompt logprobs; use the JSON simulator")
        prompts = [prefix + "".join(segs) for segs in list_of_segments]

        def send(k: int):
            return self._request(lambda c: c.completions.create(model=self.model, prompt=prompts, max_tokens=1, temperature=0.0,
                                                                echo=True, logprobs=k),
                                 sum(len(p) // 4 + 1 for p in prompts))

        try:
            try:
                resp = send(self.logprobs_top_k)
            except LLMError as e:
                if "HTTP 400" in str(e) and self.logprobs_top_k > 5:
                    resp = send(5)  # OpenAI's legacy completions allow at most 5
                else:
                    raise
        except LLMError as e:
            if any(f"HTTP {s}" in str(e) for s in (400, 404, 405, 422, 501)):
                raise LogprobsUnsupported(f"{self.name} at {self.base_url} gives no prompt logprobs "
                                          f"(completions with echo+logprobs refused: {e}); use the JSON simulator") from None
            raise
        try:
            choices = self._check(resp)
        except Exception:
            raise MalformedResponse(f"LLM endpoint {self.base_url} sent a malformed response") from None
        if len(choices) != len(prompts):
            raise MalformedResponse(f"LLM endpoint {self.base_url} answered {len(choices)} prompts of {len(prompts)}")
        out = []
        total_pt = 0
        for segs, prompt, ch in zip(list_of_segments, prompts, choices):
            lp = getattr(ch, "logprobs", None)
            offsets = getattr(lp, "text_offset", None) if lp is not None else None
            tops = getattr(lp, "top_logprobs", None) if lp is not None else None
            if not offsets or not tops:
                raise LogprobsUnsupported(f"{self.name} at {self.base_url} returned no prompt logprobs; use the JSON simulator")
            total_pt += len(offsets)
            where = {int(o): i for i, o in reversed(list(enumerate(offsets)))}
            pos, rows = len(prefix), []
            for seg in segs:
                pos += len(seg)
                k = where.get(pos)
                top = tops[k] if k is not None and k < len(tops) else None
                if top is None:
                    raise LLMError(f"{self.name}: a logprob slot at character {pos} is not a token boundary of the endpoint's "
                                   "tokenizer; end segments where tokens end (e.g. after a tab)")
                top = dict(top)
                rows.append([sum(math.exp(v) for t, v in top.items() if t is not None and t.startswith(c)) for c in candidates])
            out.append(np.asarray(rows, dtype="float64").reshape(len(segs), len(candidates)))
        return Result(out, total_pt, len(prompts))


def _env_float(name: str) -> float | None:
    v = os.environ.get(name)
    try:
        return float(v) if v else None
    except ValueError:
        return None
