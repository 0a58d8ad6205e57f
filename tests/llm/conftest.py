"""A real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib http.server in a thread) whose
answers the tests script, plus a shared embedded SmolLM2 for the slow tests."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "sk-test-DISTINCTIVE-7f3a9c1e"


def chat_body(texts, model="m", prompt_tokens=12, completion_tokens=3):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def echo_logprobs_body(prompts, *, with_logprobs=True, top=None, echo=True):
    """A completions echo response: the prompt tokenised one character a token, each position
    with the same made-up top_logprobs over a few tokens, and each token's own logprob read off
    that distribution (-4 for tokens outside it), so the echo is self-consistent. echo=False:
    the logprobs of the generated token only, as servers answer without echo."""
    if isinstance(prompts, str):
        prompts = [prompts]
    dist = top or {"0": -0.5, "7": -1.5, "10": -2.0, "x": -3.0}
    choices = []
    for i, p in enumerate(prompts):
        toks = list(p) + ["7"]  # the prompt, then the generated token
        lp = {"tokens": toks, "token_logprobs": [None] + [dist.get(t, -4.0) for t in toks[1:]],
              "top_logprobs": [None] + [dict(dist) for _ in toks[1:]],
              "text_offset": list(range(len(toks)))} if with_logprobs else None
        if lp is not None and not echo:
            lp = {k: v[-1:] for k, v in lp.items()}
        choices.append({"index": i, "text": (p if echo else "") + "7", "finish_reason": "length", "logprobs": lp})
    return {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


class FakeServer:
    def __init__(self):
        self.hits: dict[str, int] = defaultdict(int)
        self.requests: list[dict] = []
        self.script: dict[str, list] = defaultdict(list)  # path -> queued (status, headers, body, delay)
        self.default: dict[str, object] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                path = self.path.split("?")[0]
                with server.lock:
                    server.hits[path] += 1
                    server.requests.append({"path": path, "body": body, "auth": self.headers.get("authorization")})
                    q = server.script.get(path)
                    step = q.pop(0) if q else None
                if step is None:
                    d = server.default.get(path)
                    if d is None:
                        step = (404, {}, {"error": {"message": f"no route {path}"}}, 0)
                    else:
                        step = (200, {}, d(body) if callable(d) else d, 0)
                status, headers, payload, delay = step
                if callable(payload):
                    payload = payload(body)
                if delay:
                    time.sleep(delay)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(raw)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                self.do_POST()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def queue(self, path, status, body=None, headers=None, delay=0.0, times=1):
        for _ in range(times):
            self.script["/v1/" + path].append((status, headers or {}, body if body is not None else {}, delay))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    s.default["/v1/chat/completions"] = lambda body: chat_body([f"hello {i}" for i in range(body.get("n") or 1)],
                                                               model=body.get("model", "m"))
    s.default["/v1/completions"] = lambda body: (echo_logprobs_body(body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]],
                                                                    echo=bool(body.get("echo")))
                                                 if body.get("echo") or body.get("logprobs") is not None else
                                                 {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                                                  "choices": [{"index": 0, "text": " done", "finish_reason": "stop", "logprobs": None}],
                                                  "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _fresh_endpoint_memos():
    """Probes and served-model ids are memoised per process and endpoint; tests start afresh."""
    from autointerp.llm import openai_backend

    openai_backend.forget_endpoints()
    yield
    openai_backend.forget_endpoints()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("AUTOINTERP_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("AUTOINTERP_LLM_RPM", raising=False)
    monkeypatch.delenv("AUTOINTERP_LLM_TPM", raising=False)
    return SECRET


@pytest.fixture
def store(tmp_path):
    from autointerp.store import Store

    s = Store(tmp_path / "t.db")
    yield s
    s.close()


@pytest.fixture
def make_llm(server, api_key):
    from autointerp.llm.openai_backend import OpenAILLM

    def make(**kw):
        kw.setdefault("max_attempts", 3)
        kw.setdefault("retry_wait", 0.01)
        kw.setdefault("retry_wait_max", 0.05)
        kw.setdefault("timeout", 5.0)
        return OpenAILLM(kw.pop("model", "test-model"), base_url=server.url, **kw)

    return make


# ---- the embedded model, loaded once per session -----------------------------------------
@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer) of SmolLM2-135M-Instruct: through the project's loader when it is
    there, else the plain copy at /tmp/smol (a development fallback)."""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        from autointerp.models.loader import load_model

        return load_model("smollm2-135m", device="cpu", dtype="float32")
    except ImportError:
        from pathlib import Path

        if not Path("/tmp/smol/config.json").exists():
            pytest.skip("no model loader and no /tmp/smol copy of SmolLM2")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        m = AutoModelForCausalLM.from_pretrained("/tmp/smol", dtype=torch.float32).eval()
        return m, AutoTokenizer.from_pretrained("/tmp/smol")


@pytest.fixture(scope="session")
def smol_llm(smol):
    """The embedded SmolLM2 as an EmbeddedLLM, shared by every test of the session."""
    from autointerp.llm.embedded import EmbeddedLLM

    model, tok = smol
    return EmbeddedLLM("smollm2-135m", model=model, tokenizer=tok, device="cpu")


@pytest.fixture(scope="session")
def served(smol_llm):
    """`autointerp llm serve`'s server in each mode, in-process on free ports over the one model:
    served["vllm"], served["llamacpp"], served["chat-only"] (each an LLMServer with .url)."""
    from autointerp.llm.serve import start_server

    servers = {m: start_server(llm=smol_llm, mode=m) for m in ("vllm", "llamacpp", "chat-only")}
    yield servers
    for s in servers.values():
        s.close()
