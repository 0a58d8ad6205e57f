"""Reliability probes of issue #25 item 9, one line per probe and a summary line per family
(run from the repository root; every case is its own `autointerp` process with a timeout):

    python scripts/probe_reliability.py [--only bad_inputs,kill9,concurrency,llm_faults] [--all-values]

bad_inputs   every numeric option of every command that has --model, given bad values (nan, inf,
             1e400, 10^20, an Arabic-Indic digit; --all-values adds -inf and text): clean = exit 2,
             one `error:` line on stderr, no traceback, no file made in the case's folder or store
kill9        `batch` over a tiny random-init Llama (tests/tinykit.py) with the batch tests' real
             local HTTP LLM server (tests/batch/_batchkit.py), killed with SIGKILL after units
             completed, 3 times, then resumed: lost / duplicated units against a clean run
concurrency  3 `batch` workers + `merge` of a second store + `serve` answering HTTP requests, on
             one store at once: exits, viewer answers, lost / duplicated units
llm_faults   `explain` and `pairs` against LLM servers that answer 500, 429, garbage JSON or
             prose, trickle one byte every 2 s, or are unreachable: each ends within its bound
             with exit 0 or one clear error line and no traceback, and stores nothing when it fails
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD_INT = ["99999999999999999999", "٣", "nan"]
BAD_FLOAT = ["nan", "inf", "1e400"]
MORE = ["-inf", "abc"]
INTERNAL = ("Traceback", "ValueError", "TypeError", "IntegrityError", "OverflowError", "OperationalError", "KeyError")
CASE_TIMEOUT = 60.0


def _exe() -> list[str]:
    ai = Path(sys.executable).parent / "autointerp"
    return [str(ai)] if ai.exists() else [sys.executable, "-m", "autointerp"]


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOINTERP_")}
    env.update(PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-probe", AUTOINTERP_CACHE=str(tmp / "cache"), **extra)
    return env


def cli(argv, *, env, cwd=None, timeout=CASE_TIMEOUT) -> dict:
    """One `autointerp` process: exit code (None when killed at the timeout), out, err, seconds."""
    t0 = time.monotonic()
    p = subprocess.Popen([*_exe(), *map(str, argv)], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        code = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        code = None
    return {"code": code, "out": out, "err": err, "seconds": time.monotonic() - t0}


def _err_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


# ---- the tiny model and corpus ----------------------------------------------------------------------
def _batchkit():
    for p in (ROOT / "tests" / "batch", ROOT / "tests"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import _batchkit

    return _batchkit


def tiny_model(tmp: Path) -> tuple[Path, Path]:
    """A tiny random-init Llama (2 layers x 6 MLP neurons, the batch tests' shape) saved to a folder
    with tinykit's tokenizer, and a 3000-sentence corpus in its vocabulary."""
    import torch
    from tinykit import WORDS, tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    bk = _batchkit()
    d = tmp / "tiny-llama"
    corpus = tmp / "words.txt"
    if d.exists() and corpus.exists():
        return d, corpus
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=bk.D_MLP, num_hidden_layers=bk.N_LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=2, eos_token_id=1, pad_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    rng = random.Random(0)
    words = [w for w in WORDS if w not in ".,"]
    corpus.write_text(" ".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + " ." for _ in range(3000)))
    return d, corpus


# ---- bad inputs to the commands that load a model ---------------------------------------------------
def model_commands():
    """(command path, click command) for every command with a --model option."""
    from autointerp.cli import _load_commands, cli as group

    _load_commands()
    out = []

    def walk(cmd, path):
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, path + [name])
        if path and any("--model" in getattr(p, "opts", []) for p in cmd.params):
            out.append((path, cmd))

    walk(group, [])
    return out


def bad_input_cases(model_dir: Path, all_values: bool = False, only: set[str] | None = None) -> list[list[str]]:
    """argv lists: one bad value for one numeric option, the rest valid (--model the tiny model)."""
    import click

    cases = []
    for path, cmd in model_commands():
        if only and " ".join(path) not in only:
            continue
        positional = ["L0/N1" if "unit" in (a.name or "") else "x"
                      for a in cmd.params if isinstance(a, click.Argument) and a.required]
        for q in cmd.params:    # the other required options, valid (so only the bad value is wrong)
            if isinstance(q, click.Option) and q.required:
                positional += [max(q.opts, key=len), "L0/N1" if "unit" in (q.name or "") else "x"]
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            if isinstance(p.type, click.types.FloatParamType):
                values = BAD_FLOAT
            elif isinstance(p.type, click.types.IntParamType):
                values = BAD_INT
            else:
                continue
            opt = max(p.opts, key=len)
            for v in values + (MORE if all_values else []):
                argv = [*path, *positional, opt, v]
                if opt != "--model":
                    argv += ["--model", str(model_dir), "--device", "cpu"] if any(
                        "--device" in q.opts for q in cmd.params if isinstance(q, click.Option)) else ["--model", str(model_dir)]
                if any("--store" in q.opts for q in cmd.params if isinstance(q, click.Option)):
                    argv += ["--store", "s.db"]
                cases.append(argv)
    return cases


def run_bad_input(argv: list[str], tmp: Path, i: int) -> dict:
    cwd = tmp / f"case{i}"
    cwd.mkdir(parents=True)
    r = cli(argv, env=_env(tmp), cwd=cwd)
    made = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
    lines = _err_lines(r["err"])
    problems = []
    if r["code"] is None:
        problems.append(f"timed out after {CASE_TIMEOUT:g}s")
    elif r["code"] != 2:
        problems.append(f"exit {r['code']}")
    if len(lines) != 1 or not lines[0].startswith("error:"):
        problems.append(f"{len(lines)} stderr lines")
    if any(w in r["err"] for w in INTERNAL):
        problems.append("internal error")
    if made:
        problems.append(f"made {made[:3]}")
    return {"argv": argv, "seconds": r["seconds"], "clean": not problems, "problems": problems,
            "error": lines[-1][:140] if lines else ""}


def probe_bad_inputs(tmp: Path, jobs: int = 2, all_values: bool = False, only=None, say=print) -> dict:
    model_dir, _ = tiny_model(tmp)
    cases = bad_input_cases(model_dir, all_values, only)
    results = []
    with ThreadPoolExecutor(jobs) as ex:
        for r in ex.map(lambda ic: run_bad_input(ic[1], tmp / "cases", ic[0]), enumerate(cases)):
            shown = " ".join(a if a != str(model_dir) else "TINY" for a in r["argv"])
            say(f"bad_input {'clean  ' if r['clean'] else 'UNCLEAN'} {r['seconds']:4.1f}s {shown}"
                + ("" if r["clean"] else f"  [{'; '.join(r['problems'])}] {r['error']}"))
            results.append(r)
    clean = sum(r["clean"] for r in results)
    n_cmds = len({tuple(r["argv"][:2]) for r in results})
    summary = {"family": "bad_inputs", "commands": len(model_commands()) if not only else n_cmds, "tried": len(results),
               "clean": clean, "failures": len(results) - clean}
    say(f"SUMMARY bad_inputs: {summary['commands']} model-loading commands, {summary['tried']} tried, "
        f"{summary['clean']} clean, {summary['failures']} failures")
    return {**summary, "cases": results}


# ---- kill -9 of a batch whose units complete, then resume -------------------------------------------
def _rows(path, sql, args=()):
    c = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=30)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, args)]
    finally:
        c.close()


def _units():
    bk = _batchkit()
    return {f"L{L}/N{i}" for L in range(bk.N_LAYERS) for i in range(bk.D_MLP)}


def integrity(store: Path, units: set[str]) -> dict:
    """done / lost (a unit with no done job or not exactly one LLM explanation) / duplicated (a
    unit with more than one LLM explanation, baseline or job; a repeated score)."""
    jobs = _rows(store, "select unit, status from jobs")
    done = {j["unit"] for j in jobs if j["status"] == "done"}
    expl = {r["unit"]: r["n"] for r in _rows(store, "select unit, count(*) n from explanations "
                                                   "where explainer != 'baseline' group by unit")}
    base = {r["unit"]: r["n"] for r in _rows(store, "select unit, count(*) n from explanations "
                                                   "where explainer = 'baseline' group by unit")}
    dup_jobs = len(jobs) - len({j["unit"] for j in jobs})
    dup_scores = len(_rows(store, "select explanation_id, kind, count(*) c from scores group by explanation_id, kind "
                                  "having c > 1"))
    lost = sorted(u for u in units if u not in done or expl.get(u, 0) < 1)
    dup = sorted(u for u in units if expl.get(u, 0) > 1 or base.get(u, 0) > 1)
    return {"done": len(done & units), "lost": len(lost), "duplicated": len(dup) + dup_jobs + dup_scores,
            "explanations": sum(expl.values()), "lost_units": lost[:5], "dup_units": dup[:5]}


def _done(store: Path) -> int:
    try:
        return len(_rows(store, "select 1 from jobs where status = 'done'"))
    except sqlite3.Error:
        return 0


def probe_kill9(tmp: Path, kills: int = 3, say=print) -> dict:
    bk = _batchkit()
    d, corpus = tiny_model(tmp)
    units = _units()
    srv = bk.BatchLLMServer(delay=0.1)
    env = _env(tmp)
    try:
        clean = tmp / "clean.db"
        r = cli(bk.batch_args(d, corpus, srv.url, "--store", clean, "--no-progress"), env=env, timeout=300)
        ref = integrity(clean, units)
        say(f"kill9 clean run: exit {r['code']} in {r['seconds']:.1f}s, {ref['done']} units done, "
            f"{ref['explanations']} explanations")
        store = tmp / "k.db"
        args = [*_exe(), *bk.batch_args(d, corpus, srv.url, "--store", store, "--no-progress")]
        done_at = []
        for k in range(kills):
            p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            base, t0 = _done(store), time.monotonic()
            while p.poll() is None and time.monotonic() - t0 < 240:
                if _done(store) >= base + 2:         # units really completed in this run: kill now
                    os.killpg(p.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
            p.wait(60)
            done_at.append(_done(store))
            say(f"kill9 kill {k + 1}: exit {p.returncode} with {done_at[-1]}/{len(units)} units done")
        r = cli([*bk.batch_args(d, corpus, srv.url, "--store", store, "--no-progress")], env=env, timeout=300)
        res = integrity(store, units)
        res.update(family="kill9", kills=sum(1 for n in done_at if n < len(units)), done_at_kills=done_at,
                   resume_exit=r["code"], clean_explanations=ref["explanations"])
        ok = (r["code"] == 0 and res["lost"] == 0 and res["duplicated"] == 0
              and res["explanations"] == ref["explanations"] == len(units))
        res["failures"] = 0 if ok else 1
        say(f"kill9 resume: exit {r['code']}, {res['done']}/{len(units)} done, {res['explanations']} explanations "
            f"(clean run {ref['explanations']}), {res['lost']} lost, {res['duplicated']} duplicated")
        say(f"SUMMARY kill9: {res['kills']} kills, {res['lost']} lost, {res['duplicated']} duplicated, "
            f"{res['failures']} failures")
        return res
    finally:
        srv.close()


# ---- 3 batch workers + merge + serve on one store ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_concurrency(tmp: Path, runs: int = 2, say=print) -> dict:
    bk = _batchkit()
    d, corpus = tiny_model(tmp)
    units = _units()
    srv = bk.BatchLLMServer(delay=0.05)
    env = _env(tmp)
    out = []
    try:
        for run in range(runs):
            store, other = tmp / f"c{run}.db", tmp / f"o{run}.db"
            # a second store to merge in while the workers run (layer 0 only), and the target's first unit
            cli(bk.batch_args(d, corpus, srv.url, "--store", other, "--layers", "0", "--no-progress"), env=env, timeout=300)
            cli(bk.batch_args(d, corpus, srv.url, "--store", store, "--limit", "1", "--no-progress"), env=env, timeout=300)
            port = _free_port()
            viewer = subprocess.Popen([*_exe(), "serve", "--port", str(port), "--quiet", "--store", str(store)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
            workers = [subprocess.Popen([*_exe(), *bk.batch_args(d, corpus, srv.url, "--store", store, "--no-progress")],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True) for _ in range(3)]
            statuses: list[int] = []
            stop = threading.Event()

            def poll_viewer():
                while not stop.is_set():
                    for path in ("/", "/search?q=word", "/unit/L0/N1"):
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                                statuses.append(r.status)
                        except urllib.error.HTTPError as e:
                            statuses.append(e.code)
                        except OSError:
                            if len(statuses) or time.monotonic() - t0 > 20:   # not yet listening at first
                                statuses.append(0)
                    time.sleep(0.1)

            t0 = time.monotonic()
            th = threading.Thread(target=poll_viewer, daemon=True)
            th.start()
            time.sleep(1.0)
            merge = cli(["merge", other, "--into", store], env=env, timeout=300)
            codes = []
            for w in workers:
                try:
                    codes.append(w.wait(300))
                except subprocess.TimeoutExpired:
                    os.killpg(w.pid, signal.SIGKILL)
                    codes.append(None)
            stop.set()
            th.join(60)
            errs = [(_err_lines(w.stderr.read()) or [""])[-1][:160] for w in workers]
            os.killpg(viewer.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                viewer.wait(10)
            res = integrity(store, units)
            bad_status = [s for s in statuses if s not in (200, 404)]
            res.update(worker_exits=codes, merge_exit=merge["code"], merge_err=(_err_lines(merge["err"]) or [""])[-1][:160],
                       viewer_requests=len(statuses), viewer_ok=sum(1 for s in statuses if s in (200, 404)),
                       viewer_bad=bad_status[:5], errors=[e for e, c in zip(errs, codes) if c != 0])
            res["clean"] = (codes == [0, 0, 0] and merge["code"] == 0 and not bad_status and res["lost"] == 0
                            and res["duplicated"] == 0 and res["done"] == len(units) and len(statuses) > 0)
            say(f"concurrency run {run + 1}: 3 workers exit {codes}, merge exit {merge['code']}, viewer "
                f"{res['viewer_ok']}/{res['viewer_requests']} answered; {res['done']}/{len(units)} done, "
                f"{res['explanations']} explanations, {res['lost']} lost, {res['duplicated']} duplicated "
                f"{'clean' if res['clean'] else 'UNCLEAN'}"
                + (f"; errors {res['errors']}" if res["errors"] else "")
                + (f"; merge: {res['merge_err']}" if merge["code"] else ""))
            out.append(res)
        failures = sum(not r["clean"] for r in out)
        say(f"SUMMARY concurrency: {len(out)} runs, {len(out) - failures} clean, {failures} failures")
        return {"family": "concurrency", "tried": len(out), "clean": len(out) - failures, "failures": failures, "runs": out}
    finally:
        srv.close()


# ---- LLM faults through explain and pairs -----------------------------------------------------------
PAIRS_FRAME = {"slot": "place", "values": ["mat", "house", "store"],
               "templates": ["the cat sat on the {place} and ran to the", "when mary went to the {place} then"]}
PAIRS_ANSWERS = {"mat": "park", "house": "tree", "store": "dog"}


def _pairs_reply(msgs: list) -> str | None:
    """The JSON a pairs request gets (the frame, or the answer after each listed sentence), or None."""
    text = str(msgs[-1].get("content")) if msgs else ""
    if any("templates" in str(m.get("content")) and "slot" in str(m.get("content")) for m in msgs):
        return json.dumps(PAIRS_FRAME)
    if "next word after each sentence beginning" in text:
        sentences = text.split("sentence beginning:", 1)[1].strip().splitlines()
        return json.dumps({x: next((a for v, a in PAIRS_ANSWERS.items() if v in x), "") for x in sentences})
    return None


def fault_server(mode: str):
    """The batch tests' HTTP LLM server (explainer, JSON simulator, judge; pairs specs), with every
    chat request answered according to `mode`: ok, 500, 429, garbage (HTTP 200, broken JSON),
    prose (every answer a sentence, also where JSON is asked)."""
    bk = _batchkit()
    srv = bk.BatchLLMServer()
    explain_chat = srv.chat
    llm = bk._llm

    def chat(body):
        msgs = body.get("messages") or []
        n = body.get("n") or 1
        if mode == "prose":
            return llm.chat_body(["I think this is mostly about cats and dogs, roughly."] * n)
        reply = _pairs_reply(msgs)
        if reply is not None:
            return llm.chat_body([reply] * n)
        return explain_chat(body)

    srv.s.default["/v1/chat/completions"] = chat
    if mode in ("500", "429", "garbage"):
        status = {"500": 500, "429": 429, "garbage": 200}[mode]
        payload = b'{"id": "x", "choices": [{"message": {"content": "the w' if mode == "garbage" else \
            {"error": {"message": f"scripted {mode}"}}
        headers = {"Retry-After": "1"} if mode == "429" else {}
        srv.s.default["/v1/chat/completions"] = None
        srv.s.script["/v1/chat/completions"] = [(status, headers, payload, 0)] * 100000
    return srv


def _stored(store: Path) -> dict:
    if not store.exists():
        return {}
    out = {}
    for table in ("explanations", "scores", "datasets"):
        with contextlib.suppress(sqlite3.Error):
            out[table] = _rows(store, f"select count(*) n from {table}")[0]["n"]
    with contextlib.suppress(sqlite3.Error):    # scores with a value (a null one carries its reason)
        out["valued_scores"] = _rows(store, "select count(*) n from scores where value is not null")[0]["n"]
    return out


LLM_FAULTS = ("ok", "500", "429", "garbage", "prose", "trickle", "unreachable")


def probe_llm_faults(tmp: Path, faults=LLM_FAULTS, commands=("explain", "pairs"), llm_timeout: float = 3.0,
                     bound: float = 90.0, say=print) -> dict:
    d, corpus = tiny_model(tmp)
    env = _env(tmp)
    results = []
    for cmd in commands:
        for fault in faults:
            srv = None
            if fault == "trickle":
                from tinykit import Trickler
                srv = Trickler(every=2.0)
            elif fault == "unreachable":
                url = f"http://127.0.0.1:{_free_port()}/v1"
            else:
                srv = fault_server(fault)
            url = srv.url if srv else url
            store = tmp / f"{cmd}-{fault}.db"
            common = ["--llm", "openai:test", "--llm-base-url", url, "--llm-timeout", f"{llm_timeout:g}",
                      "--model", d, "--device", "cpu", "--store", store]
            if cmd == "explain":
                argv = ["explain", "--unit", "L0/N1", "--corpus", corpus, "--n-tokens", "8192", "--k", "1", "--scorers", "simulation",
                        "--simulator", "json", *common]
            else:
                argv = ["pairs", "--task", "places: 'the cat sat on the mat and ran to the' -> ' park'", "--n", "4",
                        "--margin", "0", *common]
            try:
                r = cli(argv, env=env, timeout=bound + 30)
            finally:
                if srv:
                    srv.close()
            lines = _err_lines(r["err"])
            errors = [ln for ln in lines if ln.startswith("error:")]
            stored = _stored(store)
            problems = []
            if r["code"] is None or r["seconds"] > bound:
                problems.append(f"took {r['seconds']:.0f}s > {bound:g}s")
            if any(w in r["err"] for w in INTERNAL):
                problems.append("internal error")
            if fault == "ok" and r["code"] != 0:
                problems.append("the control (a working server) failed")
            if r["code"] == 2:
                problems.append("usage error: the probe's command line is wrong")
            if r["code"] not in (0, None) and len(errors) != 1:
                problems.append(f"{len(errors)} error lines")
            if r["code"] not in (0, None) and (stored.get("explanations") or stored.get("scores") or stored.get("datasets")):
                problems.append(f"failed but stored {stored}")
            if fault != "ok" and r["code"] == 0 and cmd == "explain" and stored.get("valued_scores"):
                # a faulty LLM cannot have produced a score: a score with a value here is a fake one
                problems.append(f"exit 0 with scores valued {stored}")
            res = {"cmd": cmd, "fault": fault, "exit": r["code"], "seconds": round(r["seconds"], 1),
                   "clean": not problems, "problems": problems, "error": (errors or lines or [""])[-1][:150],
                   "stored": stored}
            say(f"llm_fault {cmd:<7} {fault:<11} exit {r['code']} in {r['seconds']:5.1f}s "
                f"{'clean  ' if res['clean'] else 'UNCLEAN'}"
                + (f" [{'; '.join(problems)}]" if problems else "") + (f": {res['error']}" if res["error"] else ""))
            results.append(res)
    clean = sum(r["clean"] for r in results)
    say(f"SUMMARY llm_faults: {len(results)} tried ({len(faults)} modes x {', '.join(commands)}), {clean} clean, "
        f"{len(results) - clean} failures")
    return {"family": "llm_faults", "tried": len(results), "clean": clean, "failures": len(results) - clean,
            "cases": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="bad_inputs,kill9,concurrency,llm_faults")
    ap.add_argument("--all-values", action="store_true", help="also -inf and text for every numeric option")
    ap.add_argument("--commands", help="bad_inputs: only these commands (comma-separated, e.g. 'explain,sae train')")
    ap.add_argument("--jobs", type=int, default=2, help="bad-input cases run at once")
    ap.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    a = ap.parse_args()
    for p in (ROOT, ROOT / "tests"):
        sys.path.insert(0, str(p))
    only = a.only.split(",")
    out = {}
    with tempfile.TemporaryDirectory(prefix="probe-rel-") as t:
        tmp = Path(t)
        tiny_model(tmp)
        if "bad_inputs" in only:
            out["bad_inputs"] = probe_bad_inputs(tmp, a.jobs, a.all_values,
                                                 only=set(a.commands.split(",")) if a.commands else None, say=lambda s: print(s, flush=True))
        if "kill9" in only:
            out["kill9"] = probe_kill9(tmp, say=lambda s: print(s, flush=True))
        if "concurrency" in only:
            out["concurrency"] = probe_concurrency(tmp, say=lambda s: print(s, flush=True))
        if "llm_faults" in only:
            out["llm_faults"] = probe_llm_faults(tmp, say=lambda s: print(s, flush=True))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str, ensure_ascii=False))
    return 1 if any(v.get("failures") for v in out.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
