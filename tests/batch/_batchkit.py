"""Helpers for the batch tests: a tiny random Llama saved as a model directory (a valid
--model spec), a small text corpus in its vocabulary, and the real local HTTP server of
tests/llm (chat completions) answering as explainer, JSON simulator and yes/no judge."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path



TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_root = _load("_batch_root_conftest", TESTS / "conftest.py")       # tiny_tokenizer, WORDS
_llm = _load("_batch_llm_conftest", TESTS / "llm" / "conftest.py")  # FakeServer, chat_body

N_LAYERS, D_MLP = 2, 6      # 12 neurons in all


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)



class BatchLLMServer:
    """The tests/llm FakeServer (a real HTTP server on 127.0.0.1) with a chat route that plays
    all three roles. `fail_every`: every fail_every-th distinct explain prompt, in order of
    first sight, is answered HTTP 400 every time (a unit whose calls always fail); `delay`:
    seconds added to every request."""

    def __init__(self, delay: float = 0.0, fail_every: int | None = None):
        self.s = _llm.FakeServer()
        self.url = self.s.url
        self.delay = delay
        self.fail_every = fail_every
        self.explain_prompts: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.s.default["/v1/chat/completions"] = self.chat
        # no /v1/completions route (404): no prompt logprobs, so the JSON simulator and chat judges
        srv = self
        base = self.s.httpd.RequestHandlerClass

        class Handler(base):
            def do_POST(self):
                import io
                import time

                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n)
                if srv.delay:
                    time.sleep(srv.delay)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                if self.path.startswith("/v1/chat") and srv.fails(body):
                    msg = json.dumps({"error": {"message": "this unit's request is refused (test)"}}).encode()
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                self.rfile = io.BytesIO(raw)
                super().do_POST()

        self.s.httpd.RequestHandlerClass = Handler

    @staticmethod
    def _role(body) -> str:
        msgs = body.get("messages") or []
        system = next((m["content"] for m in msgs if m["role"] == "system"), "")
        last = msgs[-1]["content"] if msgs else ""
        if "predict how strongly" in system:
            return "simulate"
        if body.get("response_format") or body.get("guided_json") or last == "Say hello.":
            return "probe"          # the structured-output capability probe (llm/openai_backend.py)
        if "yes or no" in last:
            return "judge"
        return "explain"

    def fails(self, body) -> bool:
        """Records every distinct explain prompt (explain_prompts: prompt hash -> refused)."""
        if self._role(body) != "explain":
            return False
        key = hashlib.sha256(json.dumps(body.get("messages")).encode()).hexdigest()
        with self.lock:
            if key not in self.explain_prompts:
                self.explain_prompts[key] = bool(self.fail_every) and (len(self.explain_prompts) + 1) % self.fail_every == 0
            return self.explain_prompts[key]

    def chat(self, body):
        msgs = body.get("messages") or []
        last = msgs[-1]["content"] if msgs else ""
        n = body.get("n") or 1
        role = self._role(body)
        if role == "simulate":
            m = re.findall(r"Tokens \((\d+),", last)
            k = int(m[-1]) if m else 1
            lines = last.split("\n")[-k:]
            vals = [_h(line) % 11 for line in lines]
            return _llm.chat_body([json.dumps({"activations": vals})] * n)
        if role == "judge":
            return _llm.chat_body(["yes" if _h(last) % 2 else "no"] * n)
        words = re.findall(r"[a-z]+", last)
        w = words[_h(last) % len(words)] if words else "the"
        return _llm.chat_body([f'the word "{w}" and things near it ({i})' for i in range(n)])

    def close(self):
        self.s.close()



def batch_args(tiny_dir, corpus_file, url, *extra):
    return ["batch", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--tokens", "4096", "--device", "cpu",
            "--llm", "openai:test", "--llm-base-url", url, "--k", "1", "--scorers", "simulation", "--simulator", "json",
            "--n-boot", "20",
            *map(str, extra)]



def cli_inproc(args, capsys=None):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    from autointerp.cli import main

    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if capsys is not None:
        out = capsys.readouterr()
        return code, out.out, out.err
    return code, "", ""



def cli_popen(args, env_extra=None, **kw):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "autointerp", *map(str, args)], env=env, **kw)
