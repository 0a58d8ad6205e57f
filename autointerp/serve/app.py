"""`autointerp serve`: a small local web viewer, read-only on the store.

Routes (GET/HEAD only):
    /                          models, datasets, best-scored explanations, a search box
    /search?q=&min_score=&layer=&model=&explainer=&limit=    the same search as `autointerp query`
    /unit/<model>/<L5/N131>    a neuron or head page (<model> URL-quoted; may contain '/'); an SAE
                               latent's is /unit/<model>/L6/F12@<sae>, with the SAE's info and density
    /dataset/<name>            patching heatmap(s) and top components linked to their unit pages
    /investigation/<id>        an `autointerp investigate` report (id or a unique prefix), figures inlined
    /diffs, /diff/<id>         stored model diffs (`autointerp diff A B`; id or a unique prefix)
    /static/viewer.js          the viewer's one script (the true/simulated toggle)
    /unit/...?text=TEXT        with `serve --model SPEC`: the unit on a typed text (serve/tryit.py)

Every response carries CSP (a Content-Security-Policy) that allows scripts from this server only
(`script-src 'self'`, no 'unsafe-inline'): the pages hold no inline script or event handler.

Stdlib only: http.server.ThreadingHTTPServer, one daemon thread per connection, at most
MAX_CONNECTIONS of them; a connection that sends no complete request within READ_TIMEOUT is
closed, and at the limit the longest-idle one makes room (ViewerServer). Each request opens
its own read-only connection (sqlite `mode=ro`), so the viewer never writes and never blocks a
running batch for long.

Why this server and not a framework: the pages are small server-side HTML rendered from a few
indexed SQLite reads, so a thread per request is enough and keeps the viewer dependency-free.
What dropped half of a 200-request burst was the listen backlog: socketserver's default
`request_queue_size` is 5, so connections arriving while the accept loop was busy were refused
or retried by the client's SYN back-off (tens of seconds). ViewerServer listens with a backlog of
256 (REQUEST_QUEUE_SIZE; the kernel caps it at net.core.somaxconn, 4096 on current Linux), which
holds a burst of 200 with room to spare; threads then serve them concurrently.

Bad input answers 400 with one short line, never 500: query values are checked before the store
is read (integers are plain ASCII digits within a range SQLite can hold, numbers are finite),
unit ids are parsed and checked against the model's sizes, investigation ids are alphanumeric.
"""

from __future__ import annotations

import math
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..core.units import Unit
from ..errors import AutointerpError, UnitError, UsageError
from . import pages
from .diff import diff_page, diffs_page
from .investigation import investigation_page
from .tryit import Busy, TextError


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


REQUEST_QUEUE_SIZE = 256
MAX_CONNECTIONS = 64         # open connections at once (threads and descriptors), far below a 256-fd limit
READ_TIMEOUT = 10.0          # seconds to send a complete request, from connecting or from the last answer
EVICT_IDLE_S = 1.0           # at the limit, a connection idle this long makes room for a new one


class Unavailable(Exception):
    pass


MAX_LAYER = 100_000          # far beyond any model; keeps the value an SQLite integer
MAX_LIMIT = 1000
MAX_QUERY_CHARS = 500
INT_RE = re.compile(r"[0-9]{1,9}")       # ASCII digits only (int() would take '٣', '1_0', ' 1 ')
INV_ID_RE = re.compile(r"[0-9A-Za-z]{1,64}")  # a content hash or a prefix; never a LIKE wildcard


def _int_param(q: dict, name: str, lo: int, hi: int) -> int | None:
    raw = q.get(name, "").strip()
    if not raw:
        return None
    v = int(raw) if INT_RE.fullmatch(raw) else None
    if v is None or not lo <= v <= hi:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}, not {raw[:40]!r}")
    return v


def _float_param(q: dict, name: str) -> float | None:
    raw = q.get(name, "").strip()
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or len(raw) > 40:
        raise BadRequest(f"{name} must be a finite number, not {raw[:40]!r}")
    return v


def _open(path: Path):
    from ..store import Store

    return Store(path, readonly=True)


def _sae_of(store, u: Unit, model: str, m: dict | None) -> dict:
    """The store's SAE of an SAE-latent unit (L1/F3@name), its latent checked against it."""
    if not u.sae:
        raise BadRequest(f"{u} is an SAE latent: name its SAE, e.g. /unit/<model>/L{u.layer}/F{u.index}@<sae>")
    row = store.get_sae(u.sae, u.layer) or store.get_sae(u.sae)    # the latter: another layer's (said below)
    if row is None or row["name"] != u.sae or row["model_id"] != model:
        raise NotFound(f"no SAE named {u.sae!r} for model {model!r} in this store")
    if row["layer"] != u.layer:
        raise BadRequest(f"{u}: SAE {u.sae} reads layer {row['layer']} ({row['hook']}), not layer {u.layer}")
    n_layers = int(m["n_layers"]) if m is not None and m.get("n_layers") is not None else u.layer + 1
    u.check(n_layers, 0, 0, int(row["d_sae"]))
    return row


def render(store_path: Path, raw_path: str, tester=None) -> tuple[int, str]:
    """(status, html) for a request path. Pure apart from reading the store (and, with a tester,
    running its model on a unit page's ?text=): testable without HTTP."""
    url = urlsplit(raw_path)
    segs = url.path.split("/")[1:]
    q = {k: v[-1] for k, v in parse_qs(url.query).items()}
    text = parse_qs(url.query, keep_blank_values=True).get("text", [None])[-1]
    try:
        if url.path == "/search":  # checked before the store is opened
            text = q.get("q", "").strip()
            if len(text) > MAX_QUERY_CHARS:
                raise BadRequest(f"q is too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
            min_score = _float_param(q, "min_score")
            layer = _int_param(q, "layer", 0, MAX_LAYER)
            limit = _int_param(q, "limit", 1, MAX_LIMIT)
        with _open(store_path) as store:
            if url.path in ("/", "/index.html"):
                return 200, pages.index_page(store.overview(), store.search(None, limit=20), bool(store.list_diffs()))
            if url.path == "/diffs":
                return 200, diffs_page(store.list_diffs())
            if len(segs) == 2 and segs[0] == "diff" and segs[1]:
                if not INV_ID_RE.fullmatch(unquote(segs[1])):
                    raise BadRequest("a diff id is letters and digits (a hash or its prefix)")
                d = store.get_diff(unquote(segs[1]))
                if d is None:
                    raise NotFound(f"no model diff {unquote(segs[1])!r} in this store")
                return 200, diff_page(d)
            if url.path == "/search":
                model = q.get("model") or None
                explainer = q.get("explainer") or None
                if text or min_score is not None or layer is not None or model or explainer:
                    rows = store.search(text or None, model=model, layer=layer, explainer=explainer,
                                        min_score=min_score, limit=limit or 100)
                else:
                    rows = store.search(None, limit=limit or 50)
                return 200, pages.search_page(text, q, rows, store.model_ids())
            if len(segs) >= 4 and segs[0] == "unit":
                model = unquote("/".join(segs[1:-2]))
                unit = unquote(segs[-2]) + "/" + unquote(segs[-1])
                sae = None
                try:
                    u = Unit.parse(unit)
                    m = store.get_model(model)
                    if u.record.needs_sae:
                        sae = _sae_of(store, u, model, m)
                    elif m is not None and None not in (m.get("n_layers"), m.get("d_mlp"), m.get("n_heads")):
                        u.check(int(m["n_layers"]), int(m["d_mlp"]), int(m["n_heads"]))
                except UnitError as e:
                    raise BadRequest(str(e)) from None
                v = store.unit_view(model, str(u))
                if v is None:
                    if m is None:
                        raise NotFound(f"no model {model!r} in this store")
                    raise NotFound(f"the store has nothing on {u} of {model}")
                v["sae"] = sae
                if tester is None:
                    if text is not None:
                        raise BadRequest("test-your-text needs a model: start the viewer with autointerp serve --model SPEC")
                    box = {"enabled": False, "hint": model}
                else:
                    try:
                        box = tester.box(v, text, url.path)
                    except TextError as e:
                        raise BadRequest(str(e)) from None
                    except Busy as e:
                        raise Unavailable(str(e)) from None
                return 200, pages.unit_page(v, box)
            if len(segs) >= 2 and segs[0] == "dataset" and segs[1]:
                name = unquote("/".join(segs[1:]))
                v = store.dataset_view(name)
                if v is None:
                    raise NotFound(f"no dataset {name!r} in this store")
                return 200, pages.dataset_page(v)
            if len(segs) >= 2 and segs[0] == "investigation" and segs[1]:
                if not INV_ID_RE.fullmatch(unquote(segs[1])):
                    raise BadRequest("an investigation id is letters and digits (a hash or its prefix)")
                inv = store.get_investigation(unquote(segs[1]))
                if inv is None:
                    raise NotFound(f"no investigation {unquote(segs[1])!r} in this store")
                figs = {f["name"]: store.get_investigation_figure(inv["id"], f["name"]) for f in inv["figures"]}
                return 200, investigation_page(inv, {k: v for k, v in figs.items() if v})
            if len(segs) == 2 and segs[0] == "circuit":
                if not INT_RE.fullmatch(segs[1]):
                    raise BadRequest("a circuit id is a number")
                row = store.get_circuit(int(segs[1]), in_circuit_only=True)
                if row is None:
                    raise NotFound(f"no circuit {segs[1]} in this store")
                from .circuit import circuit_page

                return 200, circuit_page(row)
            if len(segs) == 2 and segs[0] == "graph":
                if not segs[1].isdigit():
                    raise BadRequest("a graph id is a number")
                g = store.get_graph(int(segs[1]))
                if g is None:
                    raise NotFound(f"no graph {segs[1]} in this store")
                from .graph import graph_page

                return 200, graph_page(store.with_explanations(g))
            raise NotFound(f"no page at {url.path}")
    except NotFound as e:
        return 404, pages.error_page(404, str(e))
    except (BadRequest, UsageError) as e:
        return 400, pages.error_page(400, str(e))
    except Unavailable as e:
        return 503, pages.error_page(503, str(e))


CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


class Handler(BaseHTTPRequestHandler):
    store_path: Path = Path("store/autointerp.db")
    quiet: bool = False
    tester = None                 # a TextTester with `serve --model` (test-your-text), else None
    server_version = "autointerp-viewer"
    timeout = READ_TIMEOUT          # seconds a socket read may wait (StreamRequestHandler applies it)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.track(self.connection, busy=False)   # idle again (keep-alive) from now

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and not self.server.track(self.connection, busy=True):   # closed meanwhile: answer nothing
            self.close_connection = True
            return False
        return ok

    def _send(self, status: int, body: str, head_only: bool = False,
              content_type: str = "text/html; charset=utf-8", cache: str = "no-store") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _get(self, head_only: bool) -> None:
        if urlsplit(self.path).path == pages.SCRIPT_PATH:
            self._send(200, pages.TOGGLE_JS, head_only, "text/javascript; charset=utf-8", "public, max-age=86400")
            return
        try:
            status, body = render(self.store_path, self.path, self.tester)
        except AutointerpError as e:
            status, body = 500, pages.error_page(500, str(e))
        except Exception as e:  # one line, never a traceback in the page
            status, body = 500, pages.error_page(500, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        self._send(status, body, head_only)

    def do_GET(self) -> None:  # noqa: N802
        self._get(False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(True)

    def _read_only(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _read_only  # noqa: N815

    def log_message(self, fmt: str, *args) -> None:
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


_BUSY, _CLOSED = "busy", "closed"


class ViewerServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog sized for bursts, daemon threads (Ctrl-C never
    waits on a slow client), and bounded connections:

    - at most `max_connections` are open at once (each holds a thread and a file descriptor);
      when a new one arrives at the limit, the connection idle longest (no request in
      progress, idle for at least EVICT_IDLE_S) is closed to make room, else the new one waits
      in the backlog until one ends;
    - a connection that has not sent a complete request within `read_timeout` seconds of
      opening (or of its last answer) is closed, however slowly its bytes arrive, and every
      socket read waits at most `read_timeout` (Handler.timeout).
    So idle or trickling clients cannot exhaust threads or descriptors, and a normal request is
    answered while hundreds of them are connected."""

    request_queue_size = REQUEST_QUEUE_SIZE
    daemon_threads = True
    allow_reuse_address = True
    max_connections = MAX_CONNECTIONS
    read_timeout = READ_TIMEOUT

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._conns: dict = {}                # socket -> idle since (monotonic), BUSY or CLOSED (until its thread ends)
        self._cv = threading.Condition()
        self._closing = False
        threading.Thread(target=self._janitor, daemon=True, name="viewer-janitor").start()

    def track(self, sock, *, busy: bool) -> bool:
        """Mark a connection busy (a request read, being answered) or idle; False if it was closed."""
        with self._cv:
            state = self._conns.get(sock, _CLOSED)
            if state is _CLOSED:
                return False
            self._conns[sock] = _BUSY if busy else time.monotonic()
            return True

    def _drop(self, sock) -> None:
        """Close a connection's socket for reading and writing: its handler's read returns at once
        and it answers nothing. It still counts against the limit until its thread ends."""
        self._conns[sock] = _CLOSED
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._cv.notify_all()

    def process_request(self, request, client_address):
        with self._cv:
            while len(self._conns) >= self.max_connections and not self._closing:
                now = time.monotonic()
                idle = [(since, s) for s, since in self._conns.items()
                        if isinstance(since, float) and now - since >= EVICT_IDLE_S]
                if idle:
                    self._drop(min(idle, key=lambda x: x[0])[1])
                self._cv.wait(0.05)
            self._conns[request] = time.monotonic()
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._cv:
            self._conns.pop(request, None)
            self._cv.notify_all()
        super().shutdown_request(request)

    def _janitor(self) -> None:
        while not self._closing:
            time.sleep(min(1.0, self.read_timeout / 4))
            now = time.monotonic()
            with self._cv:
                for s, since in list(self._conns.items()):
                    if isinstance(since, float) and now - since > self.read_timeout:
                        self._drop(s)

    def server_close(self) -> None:
        self._closing = True
        super().server_close()


def check_store(store_path: str | Path) -> None:
    """Raise StoreError unless the path is an existing autointerp store (creates nothing)."""
    _open(Path(store_path)).close()


def make_server(store_path: str | Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
                read_timeout: float | None = None, max_connections: int | None = None, tester=None) -> ViewerServer:
    """A viewer server (not yet serving). The store is checked now: a missing file or one that is
    not an autointerp store raises StoreError. port=0 picks a free port (server.server_address).
    tester: a serve.tryit.TextTester (a loaded subject model) for the test-your-text box."""
    path = Path(store_path)
    check_store(path)
    handler = type("BoundHandler", (Handler,), {"store_path": path, "quiet": quiet, "tester": tester,
                                               "timeout": read_timeout or READ_TIMEOUT})
    server = ViewerServer((host, port), handler)
    server.read_timeout = read_timeout or READ_TIMEOUT
    server.max_connections = max_connections or MAX_CONNECTIONS
    return server


def serve(store_path: str | Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
          tester=None) -> None:
    server = make_server(store_path, host, port, quiet, tester=tester)
    h, p = server.server_address[:2]
    print(f"autointerp viewer on http://{h}:{p}/ (read-only: {store_path}); Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
