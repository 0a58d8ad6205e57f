"""Reliability probes of issue #25 item 9, one line per probe (run from the repository root):

    python scripts/probe_reliability.py [--only bad_inputs,kill9,concurrency,llm_faults]

bad_inputs   every numeric option of every command that loads a model, given nan, inf, -inf,
             1e400, 10^20, an Arabic-Indic digit and text: clean = one `error:` line, exit 2,
             no store file made, and the model never loaded (loading is replaced by a sentinel)
kill9        `batch` on a tiny model with the real local HTTP test server as LLM, killed with
             SIGKILL after some units completed, resumed; repeated; lost / duplicated units
concurrency  3 batch workers + `merge` into the same store + `serve` reading it, at once
llm_faults   `explain` and `pairs` against the project's test LLM server (`autointerp llm serve`:
             vllm, llamacpp and chat-only modes, scripted 429/500/hang faults) and a server
             trickling one byte every 2 s, an unreachable endpoint: each ends in bounded time with
             exit 0 or one error line

STATUS (rel branch, 07:56 UTC): not yet run to completion. bad_inputs ran >10 min without
output and ignored SIGTERM (an in-process `batch` case installs batch's SIGTERM->interrupt
handler, and some case does real work without going through HookedModel.load); it needs a
per-case subprocess with a timeout. kill9 / concurrency / llm_faults have not been run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD_VALUES = ["nan", "inf", "-inf", "1e400", "99999999999999999999", "٣", "abc"]
INTERNAL = ("Traceback", "ValueError", "TypeError", "IntegrityError", "OverflowError", "OperationalError", "KeyError")


class _ModelLoaded(Exception):
    pass


def _run_inproc(argv: list[str]) -> tuple[int, str, str]:
    from autointerp.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except _ModelLoaded:
            code = -1
    return code, out.getvalue(), err.getvalue()


def model_commands():
    """(command path, click command) for every command with a --model option."""
    from autointerp.cli import _load_commands, cli

    _load_commands()
    out = []

    def walk(cmd, path):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, path + [name])
        if path and any("--model" in getattr(p, "opts", []) for p in cmd.params):
            out.append((path, cmd))

    walk(cli, [])
    return out


def probe_bad_inputs(tmp: Path) -> dict:
    """Every numeric option of every model-loading command x BAD_VALUES. Returns the figures and
    the unclean cases."""
    import click

    from autointerp.models.hooked import HookedModel

    def sentinel(*a, **k):
        raise _ModelLoaded()

    saved = HookedModel.__dict__["load"]
    HookedModel.load = classmethod(sentinel)
    tried, unclean = 0, []
    try:
        for path, cmd in model_commands():
            positional = ["L0/N1" if "unit" in (a.name or "") else "x"
                          for a in cmd.params if isinstance(a, click.Argument) and a.required]
            for p in cmd.params:
                if not isinstance(p, click.Option) or not isinstance(p.type, (click.types.FloatParamType,
                                                                                 click.types.IntParamType)):
                    continue
                opt = max(p.opts, key=len)
                for v in BAD_VALUES:
                    store = tmp / f"s{tried}.db"
                    argv = [*path, *positional, opt, v]
                    if any("--store" in q.opts for q in cmd.params if isinstance(q, click.Option)):
                        argv += ["--store", str(store)]
                    if os.environ.get("PROBE_VERBOSE"):
                        print("  ", " ".join(argv), file=sys.__stderr__, flush=True)
                    code, _out, err = _run_inproc(argv)
                    tried += 1
                    lines = [ln for ln in err.splitlines() if ln.strip()]
                    ok = (code == 2 and len(lines) == 1 and lines[0].startswith("error:")
                          and not any(w in err for w in INTERNAL) and not store.exists())
                    if not ok:
                        unclean.append({"argv": " ".join(argv), "code": code, "err": err.strip()[-200:],
                                        "store_made": store.exists()})
    finally:
        HookedModel.load = saved
    return {"commands": len(model_commands()), "tried": tried, "clean": tried - len(unclean), "unclean": unclean}


# ---- batch probes (tiny random Llama, the tests' local HTTP LLM server) ----------------------------
def _batchkit():
    sys.path.insert(0, str(ROOT / "tests" / "batch"))
    sys.path.insert(0, str(ROOT / "tests"))
    import _batchkit

    return _batchkit


def tiny_model(tmp: Path) -> tuple[Path, Path]:
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    bk = _batchkit()
    torch.manual_seed(0)
    tok = bk._root.tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=bk.D_MLP, num_hidden_layers=bk.N_LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=1, pad_token_id=1)
    d = tmp / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    rng = random.Random(0)
    words = [w for w in bk._root.WORDS if w not in ".,"]
    corpus = tmp / "words.txt"
    corpus.write_text(" ".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + " ." for _ in range(3000)))
    return d, corpus


def _rows(path, sql, args=()):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, args)]
    finally:
        c.close()


def _integrity(store: Path, units: set[str]) -> dict:
    jobs = _rows(store, "select unit, status from jobs")
    done = {j["unit"] for j in jobs if j["status"] == "done"}
    expl = _rows(store, "select unit, count(*) n from explanations where explainer != 'baseline' group by unit")
    dup_expl = sum(1 for e in expl if e["n"] > 1)
    dup_scores = len(_rows(store, "select explanation_id, kind, count(*) c from scores group by explanation_id, kind having c > 1"))
    return {"lost": len(units - done), "duplicated": dup_expl + dup_scores, "done": len(done)}


def probe_kill9(tmp: Path, cycles: int = 3) -> dict:
    bk = _batchkit()
    d, corpus = tiny_model(tmp)
    srv = bk.BatchLLMServer(delay=0.15)
    store = tmp / "k.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-probe", "AUTOINTERP_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "autointerp", *bk.batch_args(d, corpus, srv.url, "--store", store, "--no-progress",
                                                              "--concurrency", "2")]
    units = {f"L{L}/N{i}" for L in range(bk.N_LAYERS) for i in range(bk.D_MLP)}
    kills, completed_before_kill = 0, []
    try:
        for _ in range(cycles):
            p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0, base = time.monotonic(), (_integrity(store, units)["done"] if store.exists() else 0)
            while p.poll() is None and time.monotonic() - t0 < 300:
                try:
                    n = _integrity(store, units)["done"]
                except sqlite3.Error:
                    n = base
                if n >= base + 2:                       # units really completed in this run: kill now
                    os.kill(p.pid, signal.SIGKILL)
                    kills += 1
                    completed_before_kill.append(n)
                    break
                time.sleep(0.1)
            p.wait(60)
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        res = _integrity(store, units)
        res.update(kills=kills, done_at_kills=completed_before_kill, resume_exit=r.returncode)
        return res
    finally:
        srv.close()


def probe_concurrency(tmp: Path, runs: int = 2) -> dict:
    bk = _batchkit()
    d, corpus = tiny_model(tmp)
    srv = bk.BatchLLMServer(delay=0.05)
    env = {**os.environ, "OPENAI_API_KEY": "sk-probe", "AUTOINTERP_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    units = {f"L{L}/N{i}" for L in range(bk.N_LAYERS) for i in range(bk.D_MLP)}
    out = []
    try:
        for run in range(runs):
            store, other = tmp / f"c{run}.db", tmp / f"o{run}.db"
            # a second store to merge in while the workers run (its own shard of layer 1's units)
            subprocess.run([sys.executable, "-m", "autointerp", *bk.batch_args(d, corpus, srv.url, "--store", other,
                                                                              "--layers", "0", "--no-progress")],
                           env=env, capture_output=True, timeout=600)
            # the store must exist before serve starts: mine it once
            subprocess.run([sys.executable, "-m", "autointerp", *bk.batch_args(d, corpus, srv.url, "--store", store,
                                                                              "--limit", "1", "--no-progress")],
                           env=env, capture_output=True, timeout=600)
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            viewer = subprocess.Popen([sys.executable, "-m", "autointerp", "serve", "--port", str(port), "--quiet",
                                       "--store", str(store)], env=env, stderr=subprocess.PIPE, text=True)
            viewer.stderr.readline()
            workers = [subprocess.Popen([sys.executable, "-m", "autointerp",
                                         *bk.batch_args(d, corpus, srv.url, "--store", store, "--no-progress")],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                       for _ in range(3)]
            time.sleep(1.0)
            merge = subprocess.run([sys.executable, "-m", "autointerp", "merge", str(other), "--into", str(store)],
                                   env=env, capture_output=True, text=True, timeout=600)
            statuses = []
            while any(w.poll() is None for w in workers):
                import urllib.error
                import urllib.request

                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q=word", timeout=30) as r:
                        statuses.append(r.status)
                except urllib.error.HTTPError as e:
                    statuses.append(e.code)
                except OSError:
                    statuses.append(0)
                time.sleep(0.2)
            codes = [w.wait(600) for w in workers]
            errs = [w.stderr.read().strip().splitlines()[-1:] for w in workers]
            viewer.terminate()
            viewer.wait(10)
            res = _integrity(store, units)
            res.update(worker_exits=codes, merge_exit=merge.returncode, viewer_requests=len(statuses),
                       viewer_ok=sum(1 for x in statuses if x == 200), errors=[e for e in errs if e and codes[errs.index(e)]])
            out.append(res)
        return {"runs": out}
    finally:
        srv.close()


# ---- LLM faults through explain and pairs ------------------------------------------------------------
class _Trickle:
    def __init__(self, every: float = 2.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.every = every
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        try:
            c.settimeout(1.0)
            with contextlib.suppress(OSError):
                c.recv(65536)
            for b in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n" + b"x" * 500:
                c.sendall(bytes([b]))
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def probe_llm_faults(tmp: Path) -> dict:
    from autointerp.llm.embedded import EmbeddedLLM
    from autointerp.llm.serve import start_server

    d, corpus = tiny_model(tmp)
    llm = EmbeddedLLM(str(d), device="cpu")
    env_key = os.environ.setdefault("OPENAI_API_KEY", "sk-probe")
    assert env_key
    os.environ["AUTOINTERP_CACHE"] = str(tmp / "cache")
    results = []
    servers = {m: start_server(llm=llm, mode=m) for m in ("vllm", "llamacpp", "chat-only")}
    trickle = _Trickle()
    try:
        cases = []
        for mode in ("vllm", "llamacpp", "chat-only"):
            cases.append((f"{mode}", mode, None))
        cases += [("429+retry-after", "vllm", lambda s: s.fail_next(2, status=429, retry_after=0.5)),
                  ("500x2", "vllm", lambda s: s.fail_next(2, status=500)),
                  ("500x20", "vllm", lambda s: s.fail_next(20, status=500)),
                  ("hang 8s", "vllm", lambda s: s.hang_next(1, seconds=8.0)),
                  ("trickle 1B/2s", "trickle", None),
                  ("unreachable", "unreachable", None)]
        for cmd in ("explain", "pairs"):
            for name, mode, fault in cases:
                if mode == "trickle":
                    url = trickle.url
                elif mode == "unreachable":
                    url = "http://127.0.0.1:9/v1"
                else:
                    srv = servers[mode]
                    srv.clear()
                    if fault:
                        fault(srv)
                    url = srv.url
                store = tmp / f"{cmd}-{name.replace(' ', '_').replace('/', '_')}.db"
                common = ["--llm", "openai:tiny", "--llm-base-url", url, "--llm-timeout", "3", "--model", str(d),
                          "--device", "cpu", "--store", str(store)]
                if cmd == "explain":
                    argv = ["explain", "L0/N1", "--corpus", str(corpus), "--n-tokens", "2048", "--k", "1",
                            "--scorers", "simulation", "--n-boot", "20", *common]
                else:
                    argv = ["pairs", "--task", "capital cities: 'The capital of France is' -> ' Paris'", "--n", "4",
                            *common]
                t0 = time.monotonic()
                code, out, err = _run_inproc(argv)
                took = time.monotonic() - t0
                lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
                clean = (code == 0 or (len(lines) == 1 and not any(w in err for w in INTERNAL))) and took < 120
                results.append({"cmd": cmd, "fault": name, "exit": code, "seconds": round(took, 1), "clean": clean,
                                "error": lines[0][:160] if lines else None})
        return {"cases": results}
    finally:
        trickle.close()
        for s in servers.values():
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="bad_inputs,kill9,concurrency,llm_faults")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    only = a.only.split(",")
    with tempfile.TemporaryDirectory(prefix="probe-rel-") as t:
        tmp = Path(t)
        if "bad_inputs" in only:
            r = probe_bad_inputs(tmp / "bad")
            print(f"bad_inputs: {r['commands']} model-loading commands, {r['tried']} bad values tried, {r['clean']} clean"
                  + (f"; unclean: {json.dumps(r['unclean'][:5], ensure_ascii=False)}" if r["unclean"] else ""), flush=True)
        if "kill9" in only:
            (tmp / "k").mkdir()
            r = probe_kill9(tmp / "k")
            print(f"kill9: {r['kills']} kills (after {r['done_at_kills']} units done), resume exit {r['resume_exit']}: "
                  f"{r['done']} done, {r['lost']} lost, {r['duplicated']} duplicated", flush=True)
        if "concurrency" in only:
            (tmp / "c").mkdir()
            r = probe_concurrency(tmp / "c")
            for i, x in enumerate(r["runs"]):
                print(f"concurrency run {i + 1}: 3 workers exit {x['worker_exits']}, merge exit {x['merge_exit']}, viewer "
                      f"{x['viewer_ok']}/{x['viewer_requests']} answered 200; {x['done']} done, {x['lost']} lost, "
                      f"{x['duplicated']} duplicated" + (f"; errors {x['errors']}" if x["errors"] else ""), flush=True)
        if "llm_faults" in only:
            (tmp / "f").mkdir()
            r = probe_llm_faults(tmp / "f")
            for c in r["cases"]:
                print(f"llm_faults {c['cmd']:<7} {c['fault']:<16} exit {c['exit']} in {c['seconds']:5.1f}s "
                      f"{'clean' if c['clean'] else 'UNCLEAN'}" + (f": {c['error']}" if c["error"] else ""), flush=True)


if __name__ == "__main__":
    main()
