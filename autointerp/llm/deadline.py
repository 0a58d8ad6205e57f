"""A total deadline for one HTTP request: connect, send and every read, however the bytes arrive.

httpx's timeouts apply to each socket operation, so a server that trickles one byte every 2 s
never trips a 3 s read timeout and keeps a call alive for as long as it likes. Here every socket
operation of a request is given min(its own timeout, the time left before the request's
deadline), and one that starts after the deadline fails at once with a read (or connect)
timeout. The deadline is a context variable set around the request (`deadline(t)`), so
concurrent requests (threads, asyncio tasks) each keep their own, and a pooled connection
reused by a later request obeys that request's deadline.

The network backend of httpx's own transport is wrapped (`deadline_transport`,
`deadline_async_transport`); everything else about the connection (TLS, pooling, HTTP/1.1) is
httpx's.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Any, Iterator

try:                      # the HTTP stack the installed openai uses (httpx2 in openai 3, httpx before)
    import httpcore2 as httpcore
    import httpx2 as httpx
except ImportError:       # pragma: no cover
    import httpcore
    import httpx

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("autointerp_llm_deadline", default=None)
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Requests made inside end by time.monotonic() == `at` (None: no deadline of its own). A
    deadline set outside (e.g. batch's per-unit one) still holds: the earlier of the two wins."""
    outer = _DEADLINE.get()
    if at is None or (outer is not None and outer < at):
        at = outer
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    at = _DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise exc("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner):
        self._inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _Stream(self._inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner):
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return await self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _AStream(await self._inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _ABackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner):
        self._inner = inner

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _AStream(await self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout), local_address,
                                                      socket_options))

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _AStream(await self._inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _wrap(transport, wrapper):
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):   # an httpx that moved its pool: fail loudly, not silently
        raise RuntimeError("httpx transport has no connection pool to bound by a deadline")
    pool._network_backend = wrapper(pool._network_backend)
    return transport


def deadline_transport() -> httpx.HTTPTransport:
    return _wrap(httpx.HTTPTransport(limits=LIMITS), _Backend)


def deadline_async_transport() -> httpx.AsyncHTTPTransport:
    return _wrap(httpx.AsyncHTTPTransport(limits=LIMITS), _ABackend)
