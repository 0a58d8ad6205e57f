"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, LM Studio) through
the `openai` package. The only module that imports `openai`.

The API key is read from OPENAI_API_KEY at construction and handed to the client; it is never
stored, logged or put in an error message (messages are scrubbed of it).

Retries (the client's own are off): exponential backoff with jitter on 408/409/429/5xx and
connection errors, honouring Retry-After; none on other 4xx. A read timeout is different: the
server is probably still working on the request, so re-sending at once only queues a copy behind
it. After a read timeout the next attempt is sent at once with twice the time, and only if the
total time (`total_timeout`, default 4 x timeout) allows all of it: by default one timeout, one
retry with twice the time, then a clear error. Every failed attempt is one row in
llm_calls. The timeout bounds a whole attempt (connect, send and every read, however slowly the
bytes trickle in: llm/deadline.py), and no attempt runs past the call's total time, so a call
ends within `total_timeout` whatever the server does.

Prompt logprobs: P(text after a slot starts with a candidate) is exact even when the endpoint's
tokenizer splits a candidate into several tokens. One echo request per row gives the first-token
distribution (top-k) at every slot; a candidate that is one token there is read off it. Every
other (slot, candidate) pair is asked as its own prompt, slot context + candidate, whose echoed
per-token logprobs add up to log P(candidate | context). Those prompts go many to a request, and
requests go in parallel. Whether the endpoint really echoes prompt logprobs is probed once
(`capabilities()`), not assumed. A row whose one slot is the prompt's end (a yes/no judge's) is
asked without echo: the distribution there is the generated token's top-k, the same numbers
without a top-k list for every prompt token; an answer that is not one generated token with
its top-k is asked again with echo (and the endpoint is not asked without echo again).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import math
import os
import random
import re
import threading
import time
from bisect import bisect_left
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import openai

from ..errors import LLMError
from .base import LLM, LogprobsUnsupported, Result
from .budget import Budget
from .deadline import deadline, deadline_async_transport, deadline_transport
from .ratelimit import limiter_for
from .structured import strict_schema

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_KEY = "sk-no-key-needed"
DEFAULT_TIMEOUT = 60.0

RETRY_STATUS = {408, 409, 429}
PROBE_PROMPT = "Counting: 1, 2, 3, 4, 5, 6"
PROBE_SLOT = len("Counting: 1, 2, 3, 4,")

_PROBES: dict[tuple, dict] = {}
# a schema that admits one reply only, which no model writes unasked: the probe of structured output
STRUCTURED_PROBE_SCHEMA = {"type": "object", "properties": {"probe": {"type": "string", "enum": ["autointerp-structured"]}},
                           "required": ["probe"], "additionalProperties": False}
_SERVED: dict[tuple, str | None] = {}
_GLOBAL = threading.Lock()


def forget_endpoints() -> None:
    """Drop what this process has learnt about endpoints (probes, served model ids)."""
    with _GLOBAL:
        _PROBES.clear()
        _SERVED.clear()


MAX_REPORTED_TOKENS = 100_000_000  # far above any context window: a larger count is not a real one


def usage_count(v: Any) -> int | None:
    """A server-reported token count if it is a whole number in [0, MAX_REPORTED_TOKENS], else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
        return None
    return int(v) if 0 <= v <= MAX_REPORTED_TOKENS else None


class MalformedResponse(LLMError):
    """The endpoint answered, but not with a chat/completions response."""


def _status(e: BaseException) -> int | None:
    return getattr(e, "status_code", None) if isinstance(e, openai.APIStatusError) else None


def is_read_timeout(e: BaseException) -> bool:
    """A timeout while waiting for the answer (not while connecting): the server may still be working."""
    cause = type(e.__cause__).__name__ if e.__cause__ is not None else ""
    return isinstance(e, openai.APITimeoutError) and cause not in ("ConnectTimeout", "PoolTimeout")


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


def public_url(url: str) -> str:
    """The base URL without credentials: no user:password@, no key/token query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not re.search(r"key|token|secret|pass|auth|sig", k, re.I)])
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), query, ""))


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


def _short(e: BaseException) -> str:
    if isinstance(e, openai.APITimeoutError):
        return "read timeout" if is_read_timeout(e) else "connect timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection error"
    s = _status(e)
    if s is not None:
        return f"HTTP {s}: {_error_message(e)}"
    return type(e).__name__


# ---- echoed logprobs ---------------------------------------------------------------------------
_SPECIAL = re.compile(r"<\|[^|]*\|>|<[/a-z_]*s>|<bos>|<\|?begin_of_text\|?>", re.I)


def _field(obj, name):
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def aligned_tokens(lp, text: str) -> list[tuple[int, str, float | None, dict | None]] | None:
    """The echoed tokens of a completions response as (start, token, logprob, top) when they
    spell `text` (the prompt, plus what was generated) from its first character; None when the
    logprobs do not cover the prompt (servers that echo nothing, or give logprobs only for the
    generated tokens, as llama.cpp's does). A leading BOS that is not in the text is skipped."""
    if lp is None:
        return None
    tokens, tlp, tops = _field(lp, "tokens"), _field(lp, "token_logprobs"), _field(lp, "top_logprobs")
    if not tokens or tlp is None or len(tlp) != len(tokens):
        return None
    if tops is not None and len(tops) != len(tokens):
        return None
    i = 0
    while i < len(tokens) and i < 2 and tokens[i] and not text.startswith(tokens[i]) and _SPECIAL.fullmatch(tokens[i]):
        i += 1
    toks = [t if isinstance(t, str) else "" for t in tokens[i:]]
    starts = list(accumulate(map(len, toks), initial=0))
    # every token that starts inside the text is the text's own at that place (bytes we cannot
    # place, or another text's tokens, are not): those tokens, joined, spell the text exactly
    n = bisect_left(starts, len(text), hi=len(toks))
    if "".join(toks[:n]) != text:
        return None
    tops = tops[i:] if tops is not None else [None] * len(toks)
    return [(pos, t, lp, (top if type(top) is dict else dict(top)) if top else None)
            for pos, t, lp, top in zip(starts, toks, tlp[i:], tops)]


def _prompt_len_ok(al, upto: int) -> bool:
    """Every token after the first, up to character `upto`, has a finite logprob and a top list."""
    for start, _t, lp, top in al[1:]:
        if start >= upto:
            break
        if lp is None or not math.isfinite(float(lp)) or float(lp) > 1e-4 or not top:
            return False
    return True


class OpenAILLM(LLM):
    backend = "openai"
    concurrent = True

    def __init__(self, model: str, *, base_url: str | None = None, store=None, budget: Budget | None = None,
                 concurrency: int = 4, timeout: float | None = None, max_attempts: int | None = None, retry_wait: float = 1.0,
                 retry_wait_max: float = 30.0, total_timeout: float | None = None, rpm: float | None = None,
                 tpm: float | None = None, logprobs_top_k: int = 20, echo_batch: int = 32, **_ignored: Any):
        super().__init__(store=store, budget=budget)
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url == DEFAULT_BASE_URL:
                raise LLMError("OPENAI_API_KEY is not set (export it, or point --llm-base-url at a local server)")
            key = DUMMY_KEY  # local servers (vLLM, llama.cpp, Ollama) accept any key
        self._key = key
        self._secrets = [key] if key != DUMMY_KEY else []
        creds = urlsplit(self.base_url)
        self._secrets += [s for s in (creds.password, creds.username) if s]
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout if timeout is not None else DEFAULT_TIMEOUT)
        if self.timeout <= 0:
            raise LLMError(f"LLM timeout must be positive, not {self.timeout:g}")
        self.max_attempts = max(1, int(max_attempts if max_attempts is not None else 5))
        self.total_timeout = float(total_timeout if total_timeout is not None else 4 * self.timeout)
        self.retry_wait, self.retry_wait_max = retry_wait, retry_wait_max
        self.logprobs_top_k = logprobs_top_k
        self.echo_batch = max(1, int(echo_batch))
        self.limiter = limiter_for(self.base_url, rpm, tpm)
        self._client: openai.OpenAI | None = None
        self._aclients: dict[int, tuple[Any, openai.AsyncOpenAI, asyncio.Semaphore]] = {}
        self._caps: dict | None = None

    def info(self) -> dict:
        return {**super().info(), "base_url": public_url(self.base_url)}

    # ---- identity ---------------------------------------------------------------------------
    def served_model_id(self) -> str | None:
        """The served model's own id from GET /models (vLLM's `root`, the weights it loaded, else
        `id`); None when the server does not say. Asked once per process and endpoint."""
        k = (public_url(self.base_url), self.model)
        with _GLOBAL:
            if k in _SERVED:
                return _SERVED[k]
        served = None
        try:
            with deadline(time.monotonic() + min(10.0, self.timeout)):
                page = self.client.models.list(timeout=min(10.0, self.timeout))
            data = list(getattr(page, "data", None) or [])
            match = [m for m in data if getattr(m, "id", None) == self.model] or (data if len(data) == 1 else [])
            if match:
                m = match[0]
                served = str(getattr(m, "root", None) or getattr(m, "id", None) or "") or None
        except Exception:  # noqa: BLE001 - a server without /models simply says nothing
            served = None
        with _GLOBAL:
            _SERVED[k] = served
        return served

    def cache_identity(self) -> tuple:
        return (self.backend, public_url(self.base_url), self.model, self.served_model_id())

    # ---- clients ----------------------------------------------------------------------
    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.timeout,
                                         http_client=openai.DefaultHttpxClient(transport=deadline_transport()))
        return self._client

    def _aclient(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, openai.AsyncOpenAI(api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.timeout,
                                              http_client=openai.DefaultAsyncHttpxClient(transport=deadline_async_transport())),
                     asyncio.Semaphore(self.concurrency))
            self._aclients = {id(loop): entry}
        return entry[1], entry[2]

    # ---- one request with retries -----------------------------------------------------------
    def _next(self, e: BaseException, attempt: int, timeout: float, started: float) -> tuple[float, float] | None:
        """(wait, next timeout) before another attempt, or None to give up."""
        if not is_retryable(e) or attempt >= self.max_attempts:
            return None
        left = self.total_timeout - (time.monotonic() - started)
        ra = retry_after_s(e)
        if ra is not None:
            wait = min(ra, max(self.retry_wait_max, 1.0) * 4)
        else:
            base = min(self.retry_wait_max, self.retry_wait * 2 ** (attempt - 1))
            wait = base + random.uniform(0, self.retry_wait)
        nxt = timeout
        if is_read_timeout(e):
            # the longer wait is the backoff: re-send at once with twice the time, never a copy
            # at the same timeout, and only while the total time allows all of it
            wait = 0.0
            nxt = 2 * timeout
            if nxt > left:
                return None
        elif wait >= left:
            return None
        return wait, nxt

    def _attempt_deadline(self, started: float, timeout: float) -> float:
        """When an attempt must be over (time.monotonic()): connect + send + every read within its
        timeout, and never past the call's total (`total_timeout` after it started)."""
        return min(time.monotonic() + timeout, started + self.total_timeout)

    def _request(self, fn, est_tokens: int):
        """fn(client, timeout) -> response, retried as the module docstring says."""
        started, timeout, attempt, timeouts = time.monotonic(), self.timeout, 0, []
        while True:
            attempt += 1
            if self.limiter:
                self.limiter.acquire(est_tokens)
            t0 = time.perf_counter()
            try:
                with deadline(self._attempt_deadline(started, timeout)):
                    return fn(self.client, timeout)
            except Exception as e:  # noqa: BLE001
                wait, timeout = self._failed_attempt(e, attempt, timeout, timeouts, started, t0)
                time.sleep(wait)

    def _failed_attempt(self, e: Exception, attempt: int, timeout: float, timeouts: list[float], started: float,
                        t0: float) -> tuple[float, float]:
        """After attempt number `attempt` failed with e: (seconds to wait, the next attempt's timeout),
        the retry recorded; or the translated LLMError raised when there is no next attempt."""
        timeouts.append(timeout)
        step = self._next(e, attempt, timeout, started)
        if step is None:
            raise self._translate(e, attempt, timeouts, time.monotonic() - started) from None
        self._record_attempt(f"attempt {attempt} failed ({self.scrub(_short(e))}); retrying in {step[0]:.2f}s",
                             time.perf_counter() - t0)
        return step

    async def _arequest(self, fn, est_tokens: int):
        client, sem = self._aclient()
        started, timeout, attempt, timeouts = time.monotonic(), self.timeout, 0, []
        async with sem:
            while True:
                attempt += 1
                if self.limiter:
                    await self.limiter.aacquire(est_tokens)
                t0 = time.perf_counter()
                try:
                    with deadline(self._attempt_deadline(started, timeout)):
                        return await fn(client, timeout)
                except Exception as e:  # noqa: BLE001
                    wait, timeout = self._failed_attempt(e, attempt, timeout, timeouts, started, t0)
                    await asyncio.sleep(wait)

    def _translate(self, e: BaseException, n: int | None = None, timeouts: list[float] | None = None,
                   elapsed: float | None = None) -> LLMError:
        where = public_url(self.base_url)
        if isinstance(e, LLMError):
            return e
        n = n if n is not None else self.max_attempts
        tries = f"{n} attempt{'s' if n != 1 else ''}"
        s = _status(e)
        if isinstance(e, openai.APITimeoutError):
            ts = ", ".join(f"{t:g}s" for t in (timeouts or [self.timeout]))
            total = f" in {elapsed:.1f}s" if elapsed is not None else ""
            err = LLMError(f"LLM endpoint {where} timed out (waited {ts}; {tries}{total}); the server may be busy: "
                           "raise --llm-timeout")
        elif isinstance(e, openai.APIConnectionError):
            err = LLMError(f"cannot reach LLM endpoint {where} ({tries}); is the server running and the URL right?")
        elif s is not None:
            msg = self.scrub(_error_message(e))
            if s == 401:
                err = LLMError(f"LLM endpoint {where} rejected the API key (HTTP 401): check OPENAI_API_KEY")
            elif s == 403:
                err = LLMError(f"LLM endpoint {where} refused the request (HTTP 403): {msg}")
            elif s == 404:
                err = LLMError(f"LLM endpoint {where} has no model {self.model!r} or no such route (HTTP 404): {msg}")
            elif s == 429 or s >= 500:
                err = LLMError(f"LLM endpoint {where} kept failing (HTTP {s} after {tries}): {msg}")
            else:
                err = LLMError(f"LLM endpoint {where} rejected the request (HTTP {s}): {msg}")
        elif isinstance(e, (openai.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError)):
            err = MalformedResponse(f"LLM endpoint {where} sent a malformed response ({type(e).__name__})")
        elif isinstance(e, openai.OpenAIError):
            err = LLMError(f"LLM endpoint {where}: {self.scrub(str(e).splitlines()[0] if str(e) else type(e).__name__)}")
        else:
            err = LLMError(f"LLM call to {where} failed: {type(e).__name__}")
        err.status = s  # type: ignore[attr-defined]
        return err

    # ---- request building and response parsing -----------------------------------------------
    def _args(self, temperature, max_tokens, n, seed, stop, **body) -> dict:
        args: dict[str, Any] = dict(model=self.model, temperature=temperature, max_tokens=max_tokens, n=n, **body)
        if seed is not None:
            args["seed"] = seed
        if stop:
            args["stop"] = list(stop)
        return args

    def _chat_args(self, messages, temperature, max_tokens, n, seed, stop) -> dict:
        return self._args(temperature, max_tokens, n, seed, stop, messages=messages)

    def _complete_args(self, prompt, temperature, max_tokens, n, seed, stop) -> dict:
        return self._args(temperature, max_tokens, n, seed, stop, prompt=prompt)

    def _usage(self, resp, fallback_prompt: str, texts: list[str]) -> tuple[int, int]:
        """(prompt, completion) tokens as the server reports them, when they are sane (whole,
        non-negative, at most MAX_REPORTED_TOKENS); otherwise estimated from the text (4
        characters a token), and the rejected report recorded as its own llm_calls row."""
        u = getattr(resp, "usage", None)
        pt = getattr(u, "prompt_tokens", None) if u is not None else None
        ct = getattr(u, "completion_tokens", None) if u is not None else None
        bad = [f"{name}={v!r}"[:60] for name, v in (("prompt_tokens", pt), ("completion_tokens", ct))
               if v is not None and usage_count(v) is None]
        if bad:
            self._record_attempt(f"usage rejected: the server reported {', '.join(bad)}; estimated from the text instead", None)
        pt, ct = usage_count(pt), usage_count(ct)
        if pt is None:
            pt = max(1, len(fallback_prompt) // 4)
        if ct is None:
            ct = sum(max(1, len(t) // 4) for t in texts)
        return pt, ct

    @staticmethod
    def _check(resp) -> list:
        if isinstance(resp, (str, bytes)):
            raise MalformedResponse("response is not JSON")
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse("response has no choices")
        return sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)

    def _chat_result(self, resp, messages) -> Result:
        texts = [(c.message.content or "") for c in self._check(resp)]
        return Result(texts, *self._usage(resp, "".join(str(m.get("content", "")) for m in messages), texts))

    def _complete_result(self, resp, prompt) -> Result:
        texts = [(c.text or "") for c in self._check(resp)]
        return Result(texts, *self._usage(resp, prompt, texts))

    @staticmethod
    def _est(text: str, max_tokens: int, n: int) -> int:
        return len(text) // 4 + max_tokens * n

    @staticmethod
    def _msg_text(messages) -> str:
        return "".join(str(m.get("content", "")) for m in messages)

    # ---- backend methods ------------------------------------------------------------------
    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop) -> Result:
        args = self._chat_args(messages, temperature, max_tokens, n, seed, stop)
        resp = self._request(lambda c, t: c.chat.completions.create(**args, timeout=t),
                             self._est(self._msg_text(messages), max_tokens, n))
        return self._parse(self._chat_result, resp, messages)

    def _complete(self, prompt, *, prefix=None, temperature, max_tokens, n, seed, stop) -> Result:
        args = self._complete_args(prompt, temperature, max_tokens, n, seed, stop)
        resp = self._request(lambda c, t: c.completions.create(**args, timeout=t), self._est(prompt, max_tokens, n))
        return self._parse(self._complete_result, resp, prompt)

    def _parse(self, fn, resp, arg) -> Result:
        try:
            return fn(resp, arg)
        except LLMError:
            raise
        except Exception as e:
            raise MalformedResponse(f"LLM endpoint {public_url(self.base_url)} sent a malformed response ({type(e).__name__})") from None

    async def achat(self, messages, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        args = self._chat_args(messages, temperature, max_tokens, n, seed, stop)

        async def go() -> Result:
            resp = await self._arequest(lambda c, t: c.chat.completions.create(**args, timeout=t),
                                        self._est(self._msg_text(messages), max_tokens, n))
            return self._parse(self._chat_result, resp, messages)

        return await self._acall("chat", messages, params, template, go)

    async def acomplete(self, prompt, *, temperature=0.0, max_tokens=256, n=1, seed=None, stop=None, template=None) -> list[str]:
        params = dict(temperature=temperature, max_tokens=max_tokens, n=n, seed=seed, stop=list(stop) if stop else None)
        args = self._complete_args(prompt, temperature, max_tokens, n, seed, stop)

        async def go() -> Result:
            resp = await self._arequest(lambda c, t: c.completions.create(**args, timeout=t), self._est(prompt, max_tokens, n))
            return self._parse(self._complete_result, resp, prompt)

        return await self._acall("complete", prompt, params, template, go)

    # ---- capabilities, found by asking ----------------------------------------------------------
    def capabilities(self) -> dict:
        """What the endpoint really does, probed once per process and endpoint with one tiny
        completions request (echo + logprobs; recorded in llm_calls as kind 'probe'):
        completions (False: a chat-only endpoint), prompt_logprobs (the echoed logprobs cover
        the prompt, token by token, aligned to its characters), top_k (the width it honours)."""
        if self._caps is not None:
            return self._caps
        k = (public_url(self.base_url), self.model)
        with _GLOBAL:
            caps = _PROBES.get(k)
        if caps is None:
            caps = self._call("probe", {"prompt": PROBE_PROMPT, "top_k": self.logprobs_top_k}, {"cache": False}, None, self._probe)
            with _GLOBAL:
                _PROBES[k] = caps
        self._caps = caps
        return caps

    @property
    def supports_prompt_logprobs(self) -> bool:  # type: ignore[override]
        return bool(self.capabilities()["prompt_logprobs"])

    def _probe(self) -> Result:
        caps: dict[str, Any] = {"chat": None, "completions": True, "prompt_logprobs": False, "top_k": 0, "note": None}
        widths = sorted({self.logprobs_top_k, 5, 1}, reverse=True)
        resp, used, pt = None, None, 0
        for w in widths:
            try:
                resp = self._request(lambda c, t, w=w: c.completions.create(model=self.model, prompt=PROBE_PROMPT, max_tokens=1,
                                                                             temperature=0.0, echo=True, logprobs=w, timeout=t),
                                     len(PROBE_PROMPT) // 4 + 1)
                used = w
                break
            except LLMError as e:
                status = getattr(e, "status", None)
                if status in (404, 405, 501):
                    caps.update(completions=False, note="no completions route: a chat-only endpoint")
                    return Result(caps, 0, 0)
                if status in (400, 422):
                    caps["note"] = f"completions with echo+logprobs refused ({e})"
                    continue
                raise
        if resp is None:
            return Result(caps, 0, 0)
        try:
            ch = self._check(resp)[0]
            text = ch.text or ""
            pt, _ = self._usage(resp, PROBE_PROMPT, [text])
        except Exception:  # noqa: BLE001
            caps["note"] = "the completions reply is malformed"
            return Result(caps, 0, 0)
        full = text if text.startswith(PROBE_PROMPT) else PROBE_PROMPT
        al = aligned_tokens(getattr(ch, "logprobs", None), full)
        if getattr(ch, "logprobs", None) is None:
            caps["note"] = "completions answer without logprobs"
        elif al is None:
            caps["note"] = "logprobs cover only the generated tokens, not the prompt (echo ignored, as llama.cpp's server does)"
        elif not _prompt_len_ok(al, len(PROBE_PROMPT)):
            caps["note"] = "echoed prompt tokens lack logprobs or top-k lists"
        elif not any(start == PROBE_SLOT for start, *_ in al):
            caps["note"] = f"no token starts after {PROBE_PROMPT[:PROBE_SLOT]!r}: the echoed tokens do not line up"
        else:
            bad = [t for start, t, lp, top in al[1:] if start < len(PROBE_PROMPT) and t in top and abs(top[t] - lp) > 1e-3]
            if bad:
                caps["note"] = "echoed top-k lists disagree with the token logprobs (misaligned by a position?)"
            else:
                width = max(len(top) for _s, _t, _l, top in al[1:] if top)
                caps.update(prompt_logprobs=True, top_k=min(used, width),
                            note=f"echoed prompt logprobs line up with the prompt; top-{min(used, width)}")
        return Result(caps, pt, 1)

    # ---- structured output, found by asking ------------------------------------------------------
    def structured_support(self) -> str | None:
        """How the endpoint enforces a JSON schema on chat replies: 'json_schema' (OpenAI's
        response_format: OpenAI, vLLM, llama.cpp's server, Ollama), 'guided_json' (older vLLM), or
        None (parse the reply and retry). Probed once per process and endpoint with one tiny chat
        request whose schema admits a single reply no model writes unasked (recorded in
        llm_calls as kind 'probe')."""
        k = (public_url(self.base_url), self.model, "structured")
        with _GLOBAL:
            if k in _PROBES:
                return _PROBES[k]["structured"]
        found = self._call("probe", {"structured": STRUCTURED_PROBE_SCHEMA}, {"cache": False}, None, self._probe_structured)
        with _GLOBAL:
            _PROBES[k] = found
        return found["structured"]

    def _structured_body(self, schema: dict, how: str, name: str = "reply") -> dict:
        if how == "json_schema":
            return {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": name, "schema": strict_schema(schema), "strict": True}}}
        return {"extra_body": {"guided_json": schema}}

    def _structured(self, messages, schema, how, *, temperature, max_tokens, n, seed, stop) -> Result:
        args = {**self._chat_args(messages, temperature, max_tokens, n, seed, stop), **self._structured_body(schema, how)}
        resp = self._request(lambda c, t: c.chat.completions.create(**args, timeout=t),
                             self._est(self._msg_text(messages), max_tokens, n))
        return self._parse(self._chat_result, resp, messages)

    def _probe_structured(self) -> Result:
        from .structured import parse_strict

        msgs = [{"role": "user", "content": "Say hello."}]
        notes = []
        for how in ("json_schema", "guided_json"):
            args = {**self._chat_args(msgs, 0.0, 40, 1, None, None), **self._structured_body(STRUCTURED_PROBE_SCHEMA, how, "probe")}
            try:
                resp = self._request(lambda c, t, a=args: c.chat.completions.create(**a, timeout=t), 48)
                text = self._chat_result(resp, msgs).value[0]
            except LLMError as e:
                if getattr(e, "status", None) in (400, 404, 405, 422, 501):
                    notes.append(f"{how} refused")
                    continue
                raise
            except Exception:  # noqa: BLE001 - a malformed reply: the field is not honoured
                notes.append(f"{how}: malformed reply")
                continue
            try:
                parse_strict(text, STRUCTURED_PROBE_SCHEMA)
            except ValueError:
                notes.append(f"{how} ignored (the reply does not follow the schema)")
                continue
            return Result({"structured": how, "note": f"chat replies follow a JSON schema given as {how}"}, 0, 1)
        return Result({"structured": None, "note": "; ".join(notes) + ": JSON is parsed from the reply and re-asked"}, 0, 1)

    # ---- prompt logprobs: exact P(starts with candidate) ------------------------------------------
    def _echo(self, prompts: list[str], k: int, echo: bool = True) -> tuple[list[Any], int]:
        """Echo + logprobs for many prompts: `echo_batch` prompts a request, requests in parallel.
        echo=False: the same request without the echo, whose logprobs cover only the one generated
        token (its top-k: the distribution after the prompt; see _next_tops)."""
        chunks = [prompts[i:i + self.echo_batch] for i in range(0, len(prompts), self.echo_batch)]

        def one(chunk):
            # the raw JSON, not the client's typed objects: an echo answer holds top-k lists for every
            # prompt token, and building those objects costs ~10x the JSON decoding (CPU that a
            # latency-bound batch would otherwise spend instead of waiting on the server)
            resp = self._request(lambda c, t: _plain(c.completions.with_raw_response.create(
                model=self.model, prompt=chunk, max_tokens=1, temperature=0.0, echo=echo, logprobs=k, timeout=t)),
                                 sum(len(p) // 4 + 1 for p in chunk))
            try:
                choices = self._check(resp)
                pt, _ = self._usage(resp, "".join(chunk), [])
            except LLMError:
                raise
            except Exception:
                raise MalformedResponse(f"LLM endpoint {public_url(self.base_url)} sent a malformed response") from None
            if len(choices) != len(chunk):
                raise MalformedResponse(f"LLM endpoint {public_url(self.base_url)} answered {len(choices)} prompts of {len(chunk)}")
            return choices, pt

        if len(chunks) == 1:
            outs = [one(chunks[0])]
        else:
            ctx = contextvars.copy_context()
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                outs = list(pool.map(lambda ch: ctx.copy().run(one, ch), chunks))
        choices = [c for o, _ in outs for c in o]
        return choices, sum(pt for _, pt in outs)

    def _aligned(self, choice, prompt: str):
        text = getattr(choice, "text", None) or ""
        al = aligned_tokens(getattr(choice, "logprobs", None), text if text.startswith(prompt) else prompt)
        if al is None:
            raise LogprobsUnsupported(f"{self.name} at {public_url(self.base_url)} returned no prompt logprobs for the prompt; "
                                      "use the JSON simulator")
        return al

    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates) -> Result:
        caps = self.capabilities()
        if not caps["prompt_logprobs"]:
            raise LogprobsUnsupported(f"{self.name} at {public_url(self.base_url)} gives no prompt logprobs "
                                      f"({caps.get('note')}); use the JSON simulator")
        k = int(caps.get("top_k") or 1)
        mains = [prefix + "".join(segs) for segs in list_of_segments]
        # a row whose one slot is the prompt's end (a yes/no judge's) needs only the distribution after
        # the prompt: the generated token's top-k, without the echo of every prompt token's top-k
        # (~100x fewer bytes to write and parse); the rows whose answer lacks it are echoed as before
        tops, next_pt, next_sent = self._next_tops([r for r, segs in enumerate(list_of_segments) if len(segs) == 1], mains, k)
        ends = {r: top for r, top in tops.items() if top is not None}
        echoed = [r for r in range(len(mains)) if r not in ends]
        choices, total_pt = self._echo([mains[r] for r in echoed], k) if echoed else ([], 0)
        total_pt += next_pt
        by_row = dict(zip(echoed, choices))
        probs = [np.zeros((len(segs), len(candidates))) for segs in list_of_segments]
        toks: list[list[list[tuple]]] = [[[()] * len(candidates) for _ in segs] for segs in list_of_segments]
        extra: list[tuple[int, int, int, int, str]] = []  # (row, slot, candidate, context length, prompt)
        for r, (segs, prompt) in enumerate(zip(list_of_segments, mains)):
            if r in ends:
                top_at = {len(prompt): ends[r]}
            else:
                al = self._aligned(by_row[r], prompt)
                top_at = {start: top for start, _t, _lp, top in al}
            pos = len(prefix)
            for i, seg in enumerate(segs):
                pos += len(seg)
                top = top_at.get(pos)
                for j, c in enumerate(candidates):
                    if top is not None and c in top:
                        probs[r][i, j] = math.exp(top[c])
                        toks[r][i][j] = (c,)
                    else:
                        extra.append((r, i, j, pos, prompt[:pos] + c))
        if extra:
            ech, pt = self._echo([e[4] for e in extra], 1)
            total_pt += pt
            for (r, i, j, at, prompt), ch in zip(extra, ech):
                al = self._aligned(ch, prompt)
                mine = [(start, t, lp) for start, t, lp, _top in al if at <= start < len(prompt)]
                if not mine or mine[0][0] != at or any(lp is None for _s, _t, lp in mine):
                    raise LLMError(f"{self.name}: candidate {candidates[j]!r} after character {at} does not start a token of the "
                                   "endpoint's tokenizer (it joins the text before it); end segments where tokens end "
                                   "(e.g. after a tab)")
                probs[r][i, j] = math.exp(sum(float(lp) for _s, _t, lp in mine))
                toks[r][i][j] = tuple(t for _s, t, _lp in mine)
        from .base import starts_with_rows

        out = [starts_with_rows(probs[r], candidates, toks[r]).reshape(len(segs), len(candidates))
               for r, segs in enumerate(list_of_segments)]
        return Result(out, total_pt, len(echoed) + next_sent + len(extra))

    def _next_tops(self, rows: list[int], prompts: list[str], k: int) -> tuple[dict[int, dict | None], int, int]:
        """For prompts[r] of each row r: the top-k {token: logprob} after the prompt, read off the
        one generated token of a completions request without echo (as OpenAI's legacy API, vLLM
        and llama.cpp's server answer it), or None where the answer does not hold exactly one
        generated token with a top-k list (the caller echoes those); and the prompt tokens and
        prompts sent. An endpoint that answers such a request with an echo after all, or without
        logprobs, is not asked this way again (by this process)."""
        caps = self._caps if self._caps is not None else {}
        if not rows or caps.get("next_logprobs") is False:
            return {}, 0, 0
        choices, pt = self._echo([prompts[r] for r in rows], k, echo=False)
        out: dict[int, dict | None] = {}
        off = False
        for r, ch in zip(rows, choices):
            lp = getattr(ch, "logprobs", None)
            tokens, tlp, tops = _field(lp, "tokens"), _field(lp, "token_logprobs"), _field(lp, "top_logprobs")
            ok = (isinstance(tokens, list) and len(tokens) == 1 and isinstance(tlp, list) and len(tlp) == 1
                  and isinstance(tops, list) and len(tops) == 1 and isinstance(tops[0], dict) and tops[0])
            out[r] = dict(tops[0]) if ok else None
            off = off or lp is None or (isinstance(tokens, list) and len(tokens) > 1)   # an EOS (no token) is not
        if off:
            with _GLOBAL:
                caps["next_logprobs"] = False
        return out, pt, len(rows)


def _plain(raw) -> Any:
    """A completions response read from its raw JSON: .choices (.index, .text, .logprobs as the
    plain dict) and .usage, the attributes the parsing above reads."""
    from types import SimpleNamespace

    import orjson

    try:
        data = orjson.loads(raw.http_response.content)   # ~3x json.loads on these float-heavy answers, the same values
    except ValueError:
        return raw.text
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        return data
    choices = [SimpleNamespace(index=c.get("index"), text=c.get("text"), logprobs=c.get("logprobs"))
               for c in data["choices"] if isinstance(c, dict)]
    u = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return SimpleNamespace(choices=choices, usage=SimpleNamespace(prompt_tokens=u.get("prompt_tokens"),
                                                                  completion_tokens=u.get("completion_tokens")))
