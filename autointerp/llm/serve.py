"""`autointerp llm serve`: a real OpenAI-compatible HTTP server over the embedded model.

It binds 127.0.0.1 by default and answers, from threads (the model itself runs one request at a
time; a fixed `latency` is slept outside it, so latency-bound clients scale with concurrency):

  GET  /v1/models            the served model (id = served name, root = the model spec)
  GET  /health               200
  POST /v1/chat/completions  messages, max_tokens, temperature, n, seed, stop, logprobs/top_logprobs
  POST /v1/completions       prompt (a string, a list of strings, token ids), max_tokens, temperature,
                             n, seed, stop, echo, logprobs (an int, as in the legacy API)

Modes make it behave like the common servers:
  vllm       echo + logprobs give prompt logprobs, token by token, as vLLM returns them
  llamacpp   echo is ignored; logprobs cover only the generated tokens (llama.cpp's server)
  chat-only  no /v1/completions (404), like many hosted chat APIs
  structured as vllm, and chat requests honour a JSON schema, given as OpenAI's
             `response_format={"type": "json_schema", "json_schema": {"schema": ...}}` or as vLLM's
             `guided_json`, by constrained decoding of the served model (llm/structured.py), as
             vLLM, llama.cpp's server and Ollama do; the other modes ignore both fields, like a
             server without structured output

In-process use (tests, benchmarks):

    from autointerp.llm.serve import start_server
    with start_server("smollm2-135m", mode="vllm", latency=0.0) as srv:   # port 0: a free port
        srv.url            # "http://127.0.0.1:PORT/v1"
        srv.fail_next(1, status=429, retry_after=0.2)   # scripted faults for retry tests
        srv.hang_next(1, seconds=2.0)
        srv.stats()        # requests seen, in flight, most in flight at once
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict, deque
from itertools import accumulate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import torch

from ..errors import UsageError

MODES = ("vllm", "llamacpp", "chat-only", "structured")
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- the model side ------------------------------------------------------------------------------
class Engine:
    """Tokenise, score (per-token logprobs and top-k) and generate with one EmbeddedLLM."""

    def __init__(self, llm, chunk: int = 8):
        self.llm = llm
        self.tok = llm.tok
        self.chunk = chunk
        self._pieces: list[str] | None = None
        self._prefixes: OrderedDict[tuple, _Prefix] = OrderedDict()   # under llm._lock

    @property
    def table(self) -> list[str]:
        """Every token id's piece (its text decoded alone), decoded once for the whole vocabulary."""
        if self._pieces is None:
            head = self.llm.hf.get_output_embeddings()
            n = max(len(self.tok), int(getattr(self.llm.hf.config, "vocab_size", 0) or 0),
                    int(getattr(getattr(head, "weight", None), "shape", (0,))[0]))
            self._pieces = self.tok.batch_decode([[i] for i in range(n)])
        return self._pieces

    def piece(self, tid: int) -> str:
        return self.table[tid]

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of `text` as a server tokenises a prompt (special tokens added as the tokenizer
        does) and each token's piece of the text, the pieces spelling the text exactly."""
        try:
            enc = self.tok(text, add_special_tokens=True, return_offsets_mapping=True)
            ids, offs = list(enc["input_ids"]), list(enc["offset_mapping"])
        except (NotImplementedError, ValueError, TypeError):
            ids = list(self.tok(text, add_special_tokens=True)["input_ids"])
            return ids, self.pieces(ids)
        starts, last = [], 0
        for a, _b in offs:
            last = max(last, int(a))
            starts.append(last)
        specials = set(self.tok.all_special_ids or [])
        pieces = []
        for k, tid in enumerate(ids):
            if tid in specials and offs[k][0] == offs[k][1]:
                pieces.append("")  # an added BOS: not part of the text
                continue
            end = starts[k + 1] if k + 1 < len(ids) else len(text)
            pieces.append(text[starts[k]:end])
        if "".join(pieces) != text:
            return ids, self.pieces(ids)
        return ids, pieces

    def encode_many(self, texts: list[str]) -> list[tuple[list[int], list[str]]]:
        """encode() of each text, the texts tokenised in one call; where a text's offsets tile it
        (each token ends where the next starts, from 0 to its end: byte-level BPE, SentencePiece)
        its pieces are read off them, otherwise encode() places them."""
        try:
            enc = self.tok(list(texts), add_special_tokens=True, return_offsets_mapping=True)
            all_ids, all_offs = enc["input_ids"], enc["offset_mapping"]
        except (NotImplementedError, ValueError, TypeError):
            return [self.encode(t) for t in texts]
        out = []
        for text, ids, offs in zip(texts, all_ids, all_offs):
            if offs and offs[0][0] == 0 and offs[-1][1] == len(text) and all(
                    offs[k][1] == offs[k + 1][0] for k in range(len(offs) - 1)):
                out.append((list(ids), [text[a:b] for a, b in offs]))
            else:
                out.append(self.encode(text))
        return out

    def pieces(self, ids: list[int], before: list[int] | None = None) -> list[str]:
        """Pieces of `ids` by incremental decoding (after `before`, for generated tokens)."""
        base = list(before or [])
        prev = self.tok.decode(base, skip_special_tokens=False) if base else ""
        out = []
        for k in range(len(ids)):
            cur = self.tok.decode(base + ids[: k + 1], skip_special_tokens=False)
            out.append(cur[len(prev):] if cur.startswith(prev) else self.piece(ids[k]))
            prev = cur
        return out

    def _positions(self, hidden: torch.Tensor, targets: list[int], k: int) -> list[tuple[float, tuple]]:
        """(logprob of its target, top-k as (ids, logprobs)) at every position of `hidden`."""
        out: list = []
        for i in range(0, hidden.shape[0], 256):
            lp = self.llm._logprobs_of(hidden[i:i + 256])
            own = lp.gather(1, torch.tensor(targets[i:i + 256], device=lp.device)[:, None])[:, 0].tolist()
            if k > 0:
                v, ix = lp.topk(k, dim=-1)
                out += zip(own, zip(ix.tolist(), v.tolist()))
            else:
                out += ((o, NO_TOP) for o in own)
        return out

    def _next(self, h: torch.Tensor, k: int) -> tuple[int, float, tuple]:
        lp = self.llm._logprobs_of(h[None])[0]
        v, ix = lp.topk(max(1, k))
        ids, vals = ix.tolist(), v.tolist()
        return ids[0], vals[0], (ids[:k], vals[:k])

    def _prefix(self, ids: list[int], k: int, positions: bool) -> "_Prefix | None":
        """The forward pass of a prefix (its KV cache, the top-k at its positions when asked, the
        distribution after it), kept for the next requests that share it (the last PREFIXES
        prefixes, as vLLM's automatic prefix caching keeps them): the prompts of one explanation
        share the template's head and the explanation over several requests. The same numbers as
        computing it again. None for a model whose cache is not plain (sliding window)."""
        from .embedded import plain_layers

        key = (tuple(ids), k)
        pre = self._prefixes.get(key)
        if pre is None:
            llm = self.llm
            res = llm._base()(input_ids=torch.tensor([ids], device=llm.device), use_cache=True)
            kv = plain_layers(res.past_key_values)
            if kv is None:
                return None
            h = res.last_hidden_state[0]
            last_lp = llm._logprobs_of(h[-1][None])[0]
            v, ix = last_lp.topk(k) if k > 0 else (torch.empty(0), torch.empty(0, dtype=torch.long))
            pre = _Prefix(kv, h, last_lp, (ix.tolist(), v.tolist()))
            self._prefixes[key] = pre
            while len(self._prefixes) > PREFIXES:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(key)
        if positions and pre.shared is None:
            pre.shared = self._positions(pre.hidden[:-1], ids[1:], k) if len(ids) > 1 else []
        return pre

    def score(self, rows: list[list[int]], k: int, positions: bool = True) -> list[tuple[list, tuple]]:
        """Per row: (for every position, (logprob of its token, top-k [(id, logprob)]) or None
        at position 0; the next token after the row: (argmax id, its logprob, top-k)). Rows that
        share a prefix share its one forward pass (the embedded backend's KV reuse), and requests
        that share it too (_prefix)."""
        from .embedded import cache_from

        llm = self.llm
        dev = llm.device
        out: list = [None] * len(rows)
        with llm._lock, torch.inference_mode():
            P = 0
            if len(rows) > 1 or len(rows[0]) > 64:
                P = min(len(r) for r in rows) - 1
                first = rows[0]
                for r in rows[1:]:
                    n = 0
                    while n < P and r[n] == first[n]:
                        n += 1
                    P = n
            kv = shared = None
            if P >= 1:
                pre = self._prefix(rows[0][:P], k, positions)
                if pre is None:
                    P = 0
                else:
                    kv, shared, last_lp, last_top = pre.kv, pre.shared, pre.last_lp, pre.last_top
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            for c0 in range(0, len(rows), self.chunk):
                chunk = rows[c0:c0 + self.chunk]
                tails = [r[P:] for r in chunk]
                L = max(len(t) for t in tails)
                inp = torch.tensor([t + [pad] * (L - len(t)) for t in tails], device=dev)
                if P >= 1:
                    hid = llm._base()(input_ids=inp, past_key_values=cache_from(kv, len(chunk)), use_cache=True).last_hidden_state
                else:
                    hid = llm._base()(input_ids=inp).last_hidden_state
                own: list = []
                if positions:   # every row's positions after the prefix in one pass (one log-softmax and top-k)
                    n = [len(t) - 1 for t in tails]
                    if sum(n):
                        h = torch.cat([hid[b, :m] for b, m in enumerate(n) if m]) if len(n) > 1 else hid[0, :n[0]]
                        flat = self._positions(h, [x for r in chunk for x in r[P + 1:]], k)
                        own = [flat[a:b] for a, b in zip(accumulate(n, initial=0), accumulate(n))]
                    else:
                        own = [[] for _ in n]
                for b, (r, t) in enumerate(zip(chunk, tails)):
                    pos: list = [None]
                    if not positions:
                        pos = []
                    elif P >= 1:
                        pos += shared
                        pos.append((float(last_lp[r[P]]), last_top))
                        pos += own[b]
                    else:
                        pos += own[b]
                    out[c0 + b] = (pos, self._next(hid[b, len(t) - 1], k))
        return out


NO_TOP: tuple = ((), ())   # a position's top-k when none is asked for
PREFIXES = 16              # prefixes whose forward pass Engine keeps


class _Prefix:
    """A prefix's forward pass: KV cache per layer, hidden states, logprobs after it and their
    top-k, and (once asked) the scored positions inside it."""

    __slots__ = ("kv", "hidden", "last_lp", "last_top", "shared")

    def __init__(self, kv, hidden, last_lp, last_top):
        self.kv, self.hidden, self.last_lp, self.last_top = kv, hidden, last_lp, last_top
        self.shared: list | None = None


def _lp_block(pieces: list[str], scored: list, start_offset: int, engine: Engine, memo: dict | None = None) -> dict:
    """The legacy completions `logprobs` object for a run of tokens: per token its piece, its
    logprob, the top-k as {piece: logprob} (in descending order; two ids with the same piece keep
    the higher logprob) and its offset in the text. `memo` (one per response) keeps the dicts of
    positions that several prompts share (their common prefix, scored once by Engine.score)."""
    offsets = list(accumulate(map(len, pieces), initial=start_offset))[:-1]
    table = engine.table
    tops: list = []
    memo = {} if memo is None else memo
    for s in scored:
        if s is None:
            tops.append(None)
            continue
        top = s[1]
        d = memo.get(id(top))
        if d is None:
            ids, vals = top
            keys = [table[t] for t in ids]
            d = dict(zip(keys, vals))
            if len(d) < len(keys):          # pieces shared by several ids: the first (highest) value wins
                d = {}
                for key, v in zip(keys, vals):
                    d.setdefault(key, v)
            memo[id(top)] = d
        tops.append(d)
    return {"tokens": pieces, "token_logprobs": [None if s is None else s[0] for s in scored],
            "top_logprobs": tops, "text_offset": offsets}


# ---- the HTTP side -------------------------------------------------------------------------------
class LLMServer:
    """An OpenAI-compatible server over an EmbeddedLLM (see the module docstring)."""

    def __init__(self, llm, *, host: str = "127.0.0.1", port: int = 0, mode: str = "vllm", latency: float = 0.0,
                 served_name: str | None = None, quiet: bool = True):
        if mode not in MODES:
            raise UsageError(f"unknown server mode {mode!r}: use {', '.join(MODES)}")
        if latency < 0:
            raise UsageError(f"--latency must be 0 or more, not {latency:g}")
        self.llm = llm
        self.engine = Engine(llm)
        self.mode = mode
        self.latency = float(latency)
        self.served_name = served_name or llm.model
        self.quiet = quiet
        self._lock = threading.Lock()
        self._faults: deque = deque()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[0], self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ---- lifecycle
    def start(self) -> "LLMServer":
        """Serve from a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"autointerp-llm-serve-{self.port}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LLMServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- scripted faults and what was seen (for tests)
    def fail_next(self, n: int = 1, *, status: int = 429, retry_after: float | None = None, path: str | None = None,
                  message: str = "scripted failure") -> None:
        """The next n POSTs (to `path`, e.g. 'chat/completions', if given) answer `status`."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self._lock:
            self._faults.extend({"status": status, "headers": headers, "path": path, "message": message} for _ in range(n))

    def hang_next(self, n: int = 1, *, seconds: float = 30.0, path: str | None = None) -> None:
        """The next n POSTs wait `seconds` before they are answered (a server busy elsewhere)."""
        with self._lock:
            self._faults.extend({"hang": float(seconds), "path": path} for _ in range(n))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def stats(self) -> dict:
        with self._lock:
            return {"requests": len(self.requests), "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                    "by_path": {p: sum(1 for r in self.requests if r["path"] == p) for p in {r["path"] for r in self.requests}}}

    def _take_fault(self, path: str) -> dict | None:
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.get("path") is None or "/v1/" + f["path"].lstrip("/") == path:
                    del self._faults[i]
                    return f
        return None

    # ---- request handling
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                if not server.quiet:
                    super().log_message(fmt, *args)

            def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
                raw = orjson.dumps(payload)
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(raw)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}.get(status, "ServerError")
                self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                if path in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [server.model_card()]})
                elif path in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok"})
                else:
                    self._error(404, f"no route GET {path}")

            def do_POST(self):
                path = self.path.split("?")[0].rstrip("/")
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                with server._lock:
                    server.requests.append({"path": path, "t": time.time()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    fault = server._take_fault(path)
                    if fault is not None and "hang" in fault:
                        time.sleep(fault["hang"])
                    if server.latency:
                        time.sleep(server.latency)
                    if fault is not None and "status" in fault:
                        return self._error(fault["status"], fault["message"], fault["headers"])
                    try:
                        body = json.loads(raw or b"{}")
                        if not isinstance(body, dict):
                            raise ValueError
                    except ValueError:
                        return self._error(400, "the request body is not a JSON object")
                    try:
                        if path == "/v1/chat/completions":
                            return self._send(200, server.chat(body))
                        if path == "/v1/completions" and server.mode != "chat-only":
                            return self._send(200, server.completions(body))
                        return self._error(404, f"no route POST {path}")
                    except BadRequest as e:
                        return self._error(e.status, str(e))
                    except Exception as e:  # noqa: BLE001 - a server answers 500, it does not die
                        return self._error(500, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler

    def model_card(self) -> dict:
        return {"id": self.served_name, "object": "model", "created": 0, "owned_by": "autointerp",
                "root": self.llm.model, "max_model_len": getattr(self.llm.hf.config, "max_position_embeddings", None)}

    def _check_model(self, body: dict) -> None:
        m = body.get("model")
        if not isinstance(m, str) or not m:
            raise BadRequest(400, "'model' is required")
        if m != self.served_name:
            raise BadRequest(404, f"The model `{m}` does not exist.")

    @staticmethod
    def _params(body: dict) -> dict:
        def num(name, default, kind=float, lo=None):
            v = body.get(name, default)
            if v is None:
                v = default
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadRequest(400, f"'{name}' must be a number")
            v = kind(v)
            if lo is not None and v < lo:
                raise BadRequest(400, f"'{name}' must be at least {lo}")
            return v

        stop = body.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise BadRequest(400, "'stop' must be a string or a list of strings")
        seed = body.get("seed")
        return dict(temperature=num("temperature", 1.0, float, 0.0),
                    max_tokens=num("max_tokens", body.get("max_completion_tokens", 16) or 16, int, 0),
                    n=num("n", 1, int, 1), seed=int(seed) if isinstance(seed, int) else None, stop=stop or None)

    @staticmethod
    def _usage(pt: int, ct: int) -> dict:
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    def chat(self, body: dict) -> dict:
        self._check_model(body)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise BadRequest(400, "'messages' must be a non-empty list of {role, content}")
        msgs = [{"role": m["role"], "content": _content_text(m.get("content"))} for m in msgs]
        p = self._params(body)
        want_lp = bool(body.get("logprobs"))
        k = body.get("top_logprobs") or 0
        if not isinstance(k, int) or not 0 <= k <= MAX_LOGPROBS:
            raise BadRequest(400, f"'top_logprobs' must be an integer from 0 to {MAX_LOGPROBS}")
        ids = self.llm._ids(self.llm._render_chat(msgs))
        schema = self._schema(body)
        if schema is not None:
            from .structured import JsonConstraint

            try:
                constraint = JsonConstraint(self.llm.tok, schema)
            except Exception as e:  # noqa: BLE001 - a schema the enforcer cannot compile is the client's error
                raise BadRequest(400, f"unsupported JSON schema: {type(e).__name__}: {str(e)[:200]}") from None
            seed = p["seed"]
            gens = [self.llm.generate_structured(ids, constraint, temperature=p["temperature"], max_tokens=p["max_tokens"],
                                                 seed=None if seed is None else seed + i) for i in range(p["n"])]
        else:
            gens = self.llm.generate_ids(ids, None, p["temperature"], p["max_tokens"], p["n"], p["seed"], p["stop"])
        choices = []
        scored = self.engine.score([ids + g for g, _, _ in gens], k) if want_lp and any(g for g, _, _ in gens) else None
        for i, (g, text, reason) in enumerate(gens):
            lp = None
            if want_lp:
                content = []
                if g:
                    pos = scored[i][0][len(ids):]
                    for piece, s in zip(self.engine.pieces(g, ids), pos):
                        content.append({"token": piece, "logprob": s[0], "bytes": list(piece.encode()),
                                        "top_logprobs": [{"token": self.engine.piece(t), "logprob": v,
                                                          "bytes": list(self.engine.piece(t).encode())} for t, v in zip(*s[1])]})
                lp = {"content": content}
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                            "finish_reason": reason})
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.served_name, "choices": choices,
                "usage": self._usage(len(ids), sum(len(g) for g, _, _ in gens))}

    def _schema(self, body: dict) -> dict | None:
        """The JSON schema a chat request asks the reply to follow (mode `structured` only)."""
        if self.mode != "structured":
            return None
        rf = body.get("response_format")
        guided = body.get("guided_json")
        if rf is not None:
            if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_schema"):
                raise BadRequest(400, "'response_format' must be {\"type\": \"text\"} or {\"type\": \"json_schema\", ...}")
            if rf["type"] == "json_schema":
                js = rf.get("json_schema")
                if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
                    raise BadRequest(400, "'response_format.json_schema.schema' must be a JSON schema object")
                return js["schema"]
        if guided is not None:
            if isinstance(guided, str):
                try:
                    guided = json.loads(guided)
                except ValueError:
                    raise BadRequest(400, "'guided_json' is not valid JSON") from None
            if not isinstance(guided, dict):
                raise BadRequest(400, "'guided_json' must be a JSON schema object")
            return guided
        return None

    def _prompts(self, body: dict) -> list[tuple[str, list[int], list[str]]]:
        pr = body.get("prompt")
        if isinstance(pr, str):
            items: list = [pr]
        elif isinstance(pr, list) and pr and all(isinstance(x, int) for x in pr):
            items = [pr]
        elif isinstance(pr, list) and pr and all(isinstance(x, (str, list)) for x in pr):
            items = pr
        else:
            raise BadRequest(400, "'prompt' must be a string, a list of strings or token ids")
        texts = [it for it in items if isinstance(it, str)]
        encoded = iter(self.engine.encode_many(texts) if texts else [])
        out = []
        for it in items:
            if isinstance(it, str):
                ids, pieces = next(encoded)
                out.append((it, ids, pieces))
            elif all(isinstance(x, int) for x in it) and it:
                ids = list(it)
                pieces = self.engine.pieces(ids)
                out.append(("".join(pieces), ids, pieces))
            else:
                raise BadRequest(400, "'prompt' token lists must be non-empty lists of integers")
        if any(not ids for _, ids, _ in out):
            raise BadRequest(400, "a prompt has no tokens")
        return out

    def completions(self, body: dict) -> dict:
        self._check_model(body)
        p = self._params(body)
        prompts = self._prompts(body)
        lpk = body.get("logprobs")
        if lpk is not None and (isinstance(lpk, bool) or not isinstance(lpk, int) or not 0 <= lpk <= MAX_LOGPROBS):
            raise BadRequest(400, f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}")
        echo = bool(body.get("echo")) and self.mode in ("vllm", "structured")  # llama.cpp's server ignores echo
        greedy1 = p["temperature"] == 0 and p["max_tokens"] == 1
        k = lpk or 0
        # generation: one greedy token falls out of the scoring pass; longer runs generate
        gens: list[list[tuple[list[int], str, str]]] = []
        scored_prompts = None
        if greedy1 or p["max_tokens"] == 0:
            # the prompt's own positions only where they are echoed (without echo the logprobs cover
            # the generated token alone, which falls out of the same pass)
            scored_prompts = self.engine.score([ids for _, ids, _ in prompts], k, positions=lpk is not None and echo)
            eos = self.llm.tok.eos_token_id
            eos_ids = [] if eos is None else (eos if isinstance(eos, list) else [eos])
            for (_, _ids, _), (_, nxt) in zip(prompts, scored_prompts):
                if p["max_tokens"] == 0:
                    gens.append([([], "", "length")] * p["n"])
                elif nxt[0] in eos_ids:
                    gens.append([([], "", "stop")] * p["n"])
                else:
                    gens.append([([nxt[0]], self.llm.tok.decode([nxt[0]], skip_special_tokens=True), "length")] * p["n"])
        else:
            for _, ids, _ in prompts:
                gens.append(self.llm.generate_ids(ids, None, p["temperature"], p["max_tokens"], p["n"], p["seed"], p["stop"]))
        need_lp = lpk is not None
        full = None
        if need_lp and scored_prompts is None:
            rows = [ids + g for (_, ids, _), gl in zip(prompts, gens) for g, _, _ in gl]
            full = self.engine.score(rows, k)
        choices, ci, ct = [], 0, 0
        memo: dict = {}   # the top-k dicts of positions the prompts share, built once (`scored` outlives it)
        for pi, ((text, ids, pieces), gl) in enumerate(zip(prompts, gens)):
            for g, gtext, reason in gl:
                ct += len(g)
                lp = None
                if need_lp:
                    if scored_prompts is not None:
                        pos, nxt = scored_prompts[pi]
                        gen_scored = [(nxt[1], nxt[2])] if g else []
                    else:
                        pos_all = full[ci][0]
                        pos, gen_scored = pos_all[: len(ids)], pos_all[len(ids):]
                    gp = self.engine.pieces(g, ids) if g else []
                    gp, gen_scored = _cut(gp, gen_scored, gtext)
                    if echo:
                        lp = _lp_block(pieces + gp, list(pos) + list(gen_scored), 0, self.engine, memo)
                    else:
                        lp = _lp_block(gp, list(gen_scored), len(text), self.engine, memo)
                choices.append({"index": ci, "text": (text if echo else "") + gtext, "logprobs": lp,
                                "finish_reason": reason, "stop_reason": None})
                ci += 1
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": self.served_name, "choices": choices,
                "usage": self._usage(sum(len(ids) for _, ids, _ in prompts), ct)}


def _cut(pieces: list[str], scored: list, text: str) -> tuple[list[str], list]:
    """Keep the generated tokens that make up `text` (after a stop string cut it short)."""
    n, total = 0, 0
    while n < len(pieces) and total < len(text):
        total += len(pieces[n])
        n += 1
    return pieces[:n], scored[:n]


def _content_text(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in c if isinstance(p, dict))
    return "" if c is None else str(c)


def start_server(model: str = "smollm2-135m", *, mode: str = "vllm", latency: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, llm=None, served_name: str | None = None, device: str = "auto",
                 dtype: str = "float32") -> LLMServer:
    """Start an OpenAI-compatible server over `llm` (an EmbeddedLLM), or over the embedded model
    `model` loaded once per process, in a daemon thread. Use as a context manager, or call
    .close(). Port 0 picks a free port; the server's .url is the base URL for the client."""
    if llm is None:
        from .embedded import EmbeddedLLM

        llm = EmbeddedLLM(model, device=device, dtype=dtype)
    return LLMServer(llm, host=host, port=port, mode=mode, latency=latency, served_name=served_name).start()
