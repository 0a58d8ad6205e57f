"""Benchmark: units/hour of `autointerp batch` on the embedded LLM for a fixed slice.

    .venv/bin/python scripts/bench_batch.py                 # 4 units of layer 3 of smollm2-135m
    .venv/bin/python scripts/bench_batch.py --units 8 --device cuda --json

A fresh temporary store; one small mine of the slice's layer (--tokens, not timed in the rate),
then the first --units neurons of --layer explained and scored by the full default pipeline
(best of k=3 on calibration, simulation + detection + fuzzing, 1000 bootstrap resamples) with
the embedded LLM (the subject model's own weights, shared). Prints the mining time, the batch
time, units/hour and LLM tokens. A second pass over the same slice shows the restart cost
(every unit already done: nothing is redone).

    .venv/bin/python scripts/bench_batch.py --endpoint      # 16 units, concurrency 1,4,8, vllm + chat-only

--endpoint: the same batch against `autointerp llm serve` (its own process; --server thread for
in-process) over a tiny model that answers in a few forward passes, with --latency (0.5 s) added
to every request, so the endpoint is latency-bound. One mine (not timed), then each concurrency on
a fresh copy of that store: units/hour, requests per unit, and the ratio of the highest
concurrency to the lowest, for the vllm mode (logprob simulator and judges) and the chat-only
mode (JSON simulator, chat judges). With the server in its own process it also reports the
server's CPU s/unit (from /proc), and the rate the CPU allows on an idle machine: client and
server share the cores, so units/hour <= 3600 / max(client, server, (client + server) / cores)
CPU s/unit. The server runs torch on one thread (--server-threads 0: torch's default).

    .venv/bin/python scripts/bench_batch.py --endpoint --mode vllm --latency 0 --concurrency 8 --units 32
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


# ---- --endpoint: a tiny model served over HTTP ---------------------------------------------------
WORDS = ("the a an cat dog bird sat on mat and ran to park is was big small red blue green house tree river "
         "when mary john anna went store gave drink then France Paris Rome capital of city in at by with from "
         "one two three four five day night morning rain sun cold warm old new good bad happy sad quickly slowly "
         "book table door window road car train ship king queen child man woman friend water bread apple").split()


def endpoint_corpus(path: Path, n_sentences: int = 4000, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "."
             for _ in range(n_sentences)]
    path.write_text("\n".join(" ".join(sents[i:i + 8]) for i in range(0, len(sents), 8)) + "\n")
    return path


# The tokenizer's training text: a frozen copy of prompts/*.txt as they were (one text per file,
# separated by form feeds), not the live prompt files, so that editing a prompt does not change the
# tiny model (and with it the golden scores of tests/batch/test_scores_golden.py). Prompts that
# change later still tokenize (byte-level BPE), into a few more tokens.
VOCAB_TEXT = Path(__file__).with_name("bench_batch_vocab.txt")
REPLY = "red words"   # what the tiny model answers to every prompt
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_endpoint_model(d: Path, *, vocab_size: int = 1200, hidden: int = 64, d_mlp: int = 8, n_layers: int = 2,
                         seed: int = 0, context: float = 0.0) -> Path:
    """A tiny Llama (n_layers x d_mlp neurons) saved to `d` with a byte-level BPE tokenizer trained
    on a frozen copy of the prompt templates (VOCAB_TEXT) and the bench corpus (so prompts are a few hundred tokens, and "0".."10",
    " yes", " no" are single tokens, as in most real tokenizers) and a minimal chat template. Its
    weights are random except that the attention and MLP outputs are zeroed and the head is set so
    that it answers every prompt with REPLY and then EOS: replies cost a few forward passes, so a
    server over it is latency-bound, not compute-bound. Its MLP neurons still respond to the token
    (random gate/up weights on the embedding), so mining gives every neuron real records.
    context > 0 keeps the attention outputs (random, std `context`) and gives the values and
    yes/no random head weights of that std: then every next-token distribution depends on the text before it, so simulations and
    yes/no judgements vary from record to record and their scores are real numbers (the golden
    scores test, tests/batch/test_scores_golden.py)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    corpus = endpoint_corpus(d / "corpus.txt")
    texts = VOCAB_TEXT.read_text().split("\f") + [corpus.read_text()]
    texts += [" ".join(str(i) for i in range(11)) + " yes no yes no"] * 50
    specials = ["<unk>", "<eos>", "<bos>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>",
                                  pad_token="<eos>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHAT_TEMPLATE
    V = len(tok)
    eos = tok.eos_token_id
    chain = tok.encode(REPLY)                 # the reply, token by token (distinct tokens)
    assert len(set(chain)) == len(chain) and len(chain) + 1 < hidden // 2, chain
    cands = [t for c in [str(i) for i in range(11)] + [" yes", " no"] if len(t := tok.encode(c)) == 1]
    torch.manual_seed(seed)
    # without context the attention's output is zeroed: one narrow head (the server computes attention
    # that is multiplied by 0, as cheaply as it can); with context, four heads
    heads = dict(num_attention_heads=4, num_key_value_heads=2) if context else dict(num_attention_heads=1, num_key_value_heads=1, head_dim=8)
    cfg = LlamaConfig(vocab_size=V, hidden_size=hidden, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                      max_position_embeddings=4096, tie_word_embeddings=False, **heads,
                      bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    m = LlamaForCausalLM(cfg).eval()
    F = 1 + len(chain)                        # dims 0..F-1: a constant (the head's bias) and one flag per reply token
    with torch.no_grad():
        for layer in m.model.layers:          # the residual stream is the token's embedding (+ context * attention)
            if context:
                layer.self_attn.o_proj.weight.normal_(0, context)
            else:
                layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        E = m.model.embed_tokens.weight
        E.normal_(0, 1)
        E[:, :F] = 0.0
        E[:, 0] = 4.0
        H = m.lm_head.weight
        H.normal_(0, 0.02)
        H[:, :F] = 0.0
        H[chain[0], 0] = 3.0                  # after anything: the reply's first token ...
        for c in cands:
            H[c, 0] = 2.0                     # ... with the values and yes/no next (in every top-k)
        if context:                           # the values and yes/no differ by context, not only in their sum
            H[[c[0] for c in cands], F:] = torch.randn(len(cands), hidden - F) * context
        for i, t in enumerate(chain):         # after reply token i: token i+1 (after the last: EOS)
            E[t, 1 + i] = 8.0
            H[chain[0], 1 + i] = -6.0
            H[chain[i + 1] if i + 1 < len(chain) else eos, 1 + i] = 8.0
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


class _ProcessServer:
    """`autointerp llm serve` in its own process (as a real endpoint is: its CPU work does not
    share this process's GIL with the batch workers); requests counted from its --verbose log."""

    def __init__(self, spec: str, mode: str, latency: float, log: Path, threads: int | None = None):
        import os
        import subprocess

        self.log = log
        self.err = open(log, "w")
        self.p = subprocess.Popen([sys.executable, "-m", "autointerp", "llm", "serve", "--model", spec, "--mode", mode,
                                   "--latency", str(latency), "--port", "0", "--served-name", "tiny-bench", "--device",
                                   "cpu", "--verbose"], stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1",
                                       **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                          "TOKENIZERS_PARALLELISM": "false"} if threads == 1 else {})})
        line = self.p.stdout.readline()
        if " at http" not in line:
            self.close()
            raise SystemExit(f"bench_batch: the server did not start: {line!r} {log.read_text()[-500:]}")
        self.url = line.split(" at ")[-1].strip()
        self.max_in_flight = None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the server process has used so far (Linux /proc), else None."""
        import os

        try:
            f = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    @property
    def requests(self) -> list:
        self.err.flush()
        return [ln for ln in self.log.read_text().splitlines() if '"POST ' in ln]

    def close(self) -> None:
        self.p.terminate()
        self.p.wait(timeout=30)
        self.err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def endpoint_bench(a) -> dict:
    """run_batch against the OpenAI-compatible test server (autointerp.llm.serve) over a tiny
    model with a fixed latency per request, at each concurrency, on one mined store copied fresh."""
    import os
    import shutil

    from autointerp.batch import BatchOptions, run_batch
    from autointerp.config import Settings
    from autointerp.llm.openai_backend import forget_endpoints
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.pipeline import ExplainSettings
    from autointerp.store import Store

    levels = [int(x) for x in a.concurrency.split(",")]
    modes = ["vllm", "chat-only"] if a.mode == "both" else [a.mode]
    out: dict = {"latency_s": a.latency, "units": a.units, "k": a.k, "concurrency": levels, "server": a.server,
                 "server_threads": a.server_threads or None,
                 "llm_concurrency": Settings.load().llm_concurrency, "cpus": os.cpu_count(),
                 "load_before": round(os.getloadavg()[0], 2), "modes": {}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model = build_endpoint_model(d / "model", d_mlp=max(1, -(-a.units // 2)))
        spec = str(model)
        hm = HookedModel.load(spec, device="cpu")
        t0 = time.perf_counter()
        base = d / "mined.db"
        with Store(base) as st:
            mine(hm, st, corpus=str(model / "corpus.txt"), n_tokens=a.tokens, layers=[0, 1], progress=False)
        out["mine_s"] = round(time.perf_counter() - t0, 1)
        for mode in modes:
            res: dict = {}
            if a.server == "process":
                server = _ProcessServer(spec, mode, a.latency, d / f"serve-{mode}.log", threads=a.server_threads or None)
            else:
                from autointerp.llm.embedded import EmbeddedLLM
                from autointerp.llm.serve import start_server

                served = EmbeddedLLM(spec, model=hm.model, tokenizer=hm.tokenizer, device="cpu")
                server = start_server(llm=served, mode=mode, latency=a.latency, served_name="tiny-bench")
            with server as srv:
                for n in levels:
                    forget_endpoints()
                    path = d / f"{mode}-{n}.db"
                    shutil.copyfile(base, path)
                    o = BatchOptions(model=spec, layers="0-1", limit=a.units, n_tokens=a.tokens, corpus=str(model / "corpus.txt"),
                                     llm="openai:tiny-bench", llm_base_url=srv.url, concurrency=n, device="cpu",
                                     settings=ExplainSettings(k=a.k))
                    n_req0 = len(srv.requests)
                    srv.max_in_flight = 0 if a.server == "thread" else None
                    s0 = srv.cpu_s() if a.server == "process" else None
                    t0, c0 = time.perf_counter(), time.process_time()
                    s = run_batch(path, o, hm=hm, progress=False, log=open(os.devnull, "w") if not a.verbose else sys.stderr)
                    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                    reqs = len(srv.requests) - n_req0
                    s1 = srv.cpu_s() if s0 is not None else None
                    scpu = None if s1 is None else s1 - s0
                    units = max(s.done + s.failed, 1)
                    res[n] = {"done": s.done, "failed": s.failed, "seconds": round(dt, 1),
                              "units_per_hour": round(s.done / dt * 3600, 1) if dt > 0 else None,
                              "requests": reqs, "requests_per_unit": round(reqs / max(s.done + s.failed, 1), 1),
                              "client_cpu_s": round(cpu, 1), "client_cpu_s_per_unit": round(cpu / units, 3),
                              "server_cpu_s": None if scpu is None else round(scpu, 1),
                              "server_cpu_s_per_unit": None if scpu is None else round(scpu / units, 3),
                              # the rate the CPU allows on an idle machine: both sides' CPU on os.cpu_count() cores, and
                              # each side at most one core (one Python process each, mostly under its GIL)
                              "idle_units_per_hour_bound": None if scpu is None else round(
                                  3600 * units / max(cpu, scpu, (cpu + scpu) / (os.cpu_count() or 1))),
                              "max_in_flight": srv.max_in_flight, "load": round(os.getloadavg()[0], 2)}
                    print(f"  {mode:9s} concurrency {n}: {s.done} done, {s.failed} failed in {dt:.1f} s = "
                          f"{res[n]['units_per_hour']} units/hour; {reqs} requests ({res[n]['requests_per_unit']}/unit), "
                          f"client CPU {cpu:.1f} s ({res[n]['client_cpu_s_per_unit']} s/unit)"
                          + (f", server CPU {scpu:.1f} s ({res[n]['server_cpu_s_per_unit']} s/unit)" if scpu is not None else ""),
                          file=sys.stderr, flush=True)
            lo, hi = min(levels), max(levels)
            ratio = (res[hi]["units_per_hour"] or 0) / res[lo]["units_per_hour"] if res[lo]["units_per_hour"] else None
            out["modes"][mode] = {"runs": res, f"ratio_{hi}_over_{lo}": round(ratio, 2) if ratio else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8192, help="tokens mined first (not in the rate)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--endpoint", action="store_true",
                    help="against the OpenAI-compatible test server (a tiny model, --latency per request) instead")
    ap.add_argument("--mode", default="both", choices=["vllm", "chat-only", "both"], help="--endpoint: the server mode")
    ap.add_argument("--latency", type=float, default=0.5, help="--endpoint: seconds the server adds to every request")
    ap.add_argument("--concurrency", default="1,4,8", help="--endpoint: batch concurrencies to compare")
    ap.add_argument("--verbose", action="store_true", help="--endpoint: the batch log lines on stderr")
    ap.add_argument("--server", default="process", choices=["process", "thread"],
                    help="--endpoint: the server in its own process (like a real endpoint) or in this one")
    ap.add_argument("--server-threads", type=int, default=1,
                    help="--endpoint: torch threads of the server process (0: torch's default, one per core). One: "
                         "the tiny model's passes are too small to split, and on a shared machine a second thread "
                         "mostly spins (the same answers either way)")
    a = ap.parse_args()
    if a.endpoint:
        if "--units" not in sys.argv:
            a.units = 16
        out = endpoint_bench(a)
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"bench_batch --endpoint: {a.units} units, k={a.k}, server latency {a.latency} s/request, "
                  f"LLM concurrency {out['llm_concurrency']} per call, server in a {a.server}; {out['cpus']} CPUs, load "
                  f"{out['load_before']} (mining {out['mine_s']} s, not in the rate)")
            for mode, r in out["modes"].items():
                for n, x in r["runs"].items():
                    print(f"  {mode:9s} N={n}: {x['units_per_hour']:8.1f} units/hour ({x['seconds']} s, {x['done']} done, "
                          f"{x['failed']} failed), {x['requests_per_unit']} requests/unit, "
                          f"client CPU {x['client_cpu_s_per_unit']} s/unit"
                          + (f", server CPU {x['server_cpu_s_per_unit']} s/unit (CPU-bound on {out['cpus']} idle cores: "
                             f"{x['idle_units_per_hour_bound']} units/hour)" if x["server_cpu_s_per_unit"] is not None else "")
                          + (f", {x['max_in_flight']} in flight at most" if x["max_in_flight"] is not None else ""))
                ratio = [v for k, v in r.items() if k.startswith("ratio")]
                print(f"  {mode:9s} ratio N={max(r['runs'])}/N={min(r['runs'])}: {ratio[0]}")
        return

    import torch

    from autointerp.batch import BatchOptions, run_batch
    from autointerp.pipeline import ExplainSettings
    from autointerp.mine import mine
    from autointerp.models.hooked import HookedModel
    from autointerp.store import Store

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.db"
        t0 = time.perf_counter()
        hm = HookedModel.load(a.model, device=a.device)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Store(path) as st:
            mine(hm, st, n_tokens=a.tokens, layers=[a.layer], progress=False)
        mine_s = time.perf_counter() - t0
        o = BatchOptions(model=a.model, layers=str(a.layer), limit=a.units, n_tokens=a.tokens, llm=f"embedded:{a.model}",
                         device=a.device, settings=ExplainSettings(k=a.k))
        t0 = time.perf_counter()
        s = run_batch(path, o, hm=hm, progress=False, log=sys.stderr)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = run_batch(path, o, hm=hm, progress=False, log=sys.stderr)
        again_s = time.perf_counter() - t0
    out = {"model": a.model, "device": a.device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "slice": f"first {a.units} neurons of layer {a.layer}", "k": a.k, "mine_tokens": a.tokens,
           "load_s": round(load_s, 1), "mine_s": round(mine_s, 1), "batch_s": round(batch_s, 1), "done": s.done,
           "failed": s.failed, "units_per_hour": round(s.done / batch_s * 3600, 1) if batch_s > 0 else None,
           "s_per_unit": round(batch_s / max(s.done, 1), 1), "llm_tokens": s.tokens, "scores": s.scores,
           "rerun_s": round(again_s, 2), "rerun_done": again.done}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"bench_batch: {out['slice']} of {a.model} on {a.device} ({out['torch_threads']} threads), k={a.k}")
        print(f"  load {out['load_s']} s, mine {a.tokens} tokens {out['mine_s']} s")
        print(f"  batch: {s.done} done, {s.failed} failed in {out['batch_s']} s = {out['s_per_unit']} s/unit "
              f"= {out['units_per_hour']} units/hour; {s.tokens} LLM tokens")
        print(f"  simulation r: {s.scores}")
        print(f"  rerun of the same slice: {again.done} redone, {out['rerun_s']} s")


if __name__ == "__main__":
    main()
