"""Tiny in-code tokenizer shared by tests (import as `from tinykit import ...`; tests/ is on pythonpath)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

WORDS = ("the a cat dog sat on mat and ran to park is big small red blue house tree . , "
         "when mary john went store gave drink then France Paris capital of").split()


def word_corpus(path, lines: int, seed: int = 0) -> str:
    """Write `lines` lines of 40 random WORDS (seeded) to path: a text corpus the tiny models are
    mined and trained on. Returns the path as a string."""
    import random

    rng = random.Random(seed)
    Path(path).write_text("".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "\n" for _ in range(lines)))
    return str(path)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "<bos>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>")


def make_rec(ctx_idx, tokens, acts, kind="top", bin=0):
    """An ActivationRecord built by hand (no model, no mining)."""
    from autointerp.mine.records import ActivationRecord

    return ActivationRecord(ctx_idx=ctx_idx, kind=kind, bin=bin, tokens=list(tokens), acts=[float(a) for a in acts],
                            max_act=float(max(acts)))


def induction_gpt2(noise: float = 0.3, seed: int = 0, spec: str = "toy-induction"):
    """A 2-layer GPT-2 with a circuit built by hand: L0/H0 is a previous-token head, L1/H0 an
    induction head reading it through its keys and writing the attended token to the logits;
    the other heads are small random distractors (`noise`, 0 for none)."""
    import torch

    from transformers import GPT2Config, GPT2LMHeadModel

    from autointerp.models import HookedModel

    tok = tiny_tokenizer()
    V, NP, H, DH = len(tok), 40, 4, 40
    A, P, Bs = 0, V, V + NP
    D = H * DH
    cfg = GPT2Config(vocab_size=V, n_positions=NP, n_embd=D, n_layer=2, n_head=H, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=2, eos_token_id=1)
    m = GPT2LMHeadModel(cfg).eval()
    s, c = 9.0, 2.0
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for blk in m.transformer.h:
            blk.ln_1.weight.fill_(1.0)
            blk.ln_2.weight.fill_(1.0)
        m.transformer.ln_f.weight.fill_(1.0)
        for t in range(V):
            m.transformer.wte.weight[t, A + t] = s
        for p in range(NP):
            m.transformer.wpe.weight[p, P + p] = s
        W0 = m.transformer.h[0].attn.c_attn.weight          # [D, 3D]: q | k | v, head h = columns [h*DH, (h+1)*DH)
        for p in range(NP - 1):
            W0[P + p, p] = c
            W0[P + p, D + p + 1] = c
        for t in range(V):
            W0[A + t, 2 * D + t] = 1.0
            m.transformer.h[0].attn.c_proj.weight[t, Bs + t] = 1.0
        W1 = m.transformer.h[1].attn.c_attn.weight
        for t in range(V):
            W1[A + t, t] = c
            W1[Bs + t, D + t] = c
            W1[A + t, 2 * D + t] = 1.0
            m.transformer.h[1].attn.c_proj.weight[t, A + t] = 3.0       # write the attended token's identity
        # distractor heads 1..3 of both layers: small random q/k/v/o
        for blk in m.transformer.h:
            for h in range(1, H):
                cols = torch.cat([torch.arange(h * DH, (h + 1) * DH) + o for o in (0, D, 2 * D)])
                blk.attn.c_attn.weight[:, cols] = noise * torch.randn(D, len(cols), generator=g) / D ** 0.5
                blk.attn.c_proj.weight[h * DH:(h + 1) * DH] = noise * torch.randn(DH, D, generator=g) / DH ** 0.5
    m.requires_grad_(False)
    return HookedModel(m, tok, spec=spec)


def run_cli(capsys, *args):
    """The autointerp CLI run in this process: (exit code, stdout, stderr)."""
    from autointerp.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def save_model_dir(hm, d):
    """A HookedModel's HF model and tokenizer saved as a model directory (a valid --model spec)."""
    hm.model.save_pretrained(d)
    hm.tokenizer.save_pretrained(d)
    return d


def run_cli_lines(args, capsys):
    """run_cli with stderr as its non-empty lines: (exit code, stdout, [stderr lines])."""
    code, out, err = run_cli(capsys, *args)
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


JSON_TEXTS = ['{"slot": "name", "templates": ["When {name} came home,", "Then {name} said that"], "values": '
              '[{"value": "Mary", "answer": "she"}, {"value": "John", "answer": "he"}], "fillers": []}',
              '{"probe": "autointerp-structured", "ok": true, "items": [1, 2, 3], "text": "hello world"}']


def json_tokenizer(vocab_size: int = 300):
    """A tiny byte-level BPE tokenizer (every byte is a token, so any JSON can be spelt; a few
    merges learnt from JSON_TEXTS), built in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(JSON_TEXTS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>")


def tiny_json_llm(seed: int = 0, spec: str = "tiny-json"):
    """An EmbeddedLLM over a random-init 2-layer Llama with json_tokenizer(): real generation,
    no sense at all, so only a constraint makes its output parse."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from autointerp.llm.embedded import EmbeddedLLM

    tok = json_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    return EmbeddedLLM(spec, model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, device="cpu")


class Trickler:
    """An OpenAI-style server on 127.0.0.1 that answers slowly (tests/llm/test_deadline.py and
    scripts/probe_reliability.py): it accepts connections and sends an HTTP response one byte every
    `every` seconds, for up to `for_s` seconds a connection (then closes it). `head_first`: the headers arrive at once and
    only the body trickles."""

    def __init__(self, every: float = 0.3, for_s: float = 30.0, head_first: bool = False):
        self.every, self.for_s, self.head_first = every, for_s, head_first
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.accepted = 0
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": "x" * 400}}]}).encode()
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n")
        t0 = time.monotonic()
        try:
            c.settimeout(1.0)
            try:
                c.recv(65536)
            except OSError:
                pass
            data = body if self.head_first else head + body
            if self.head_first:
                c.sendall(head)
            for i in range(len(data)):
                if self.stop.is_set() or time.monotonic() - t0 > self.for_s:
                    break
                c.sendall(data[i:i + 1])
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def rand_sae(arch, d_in=64, d_sae=128, d_out=None, hook="blocks.1.hook_resid_post", hook_out=None, seed=0, **kw):
    """A random SAE or transcoder of architecture `arch` (models/sae.py SAE), seeded."""
    import torch

    from autointerp.models.sae import SAE

    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    w = dict(W_enc=torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5, b_enc=torch.randn(d_sae, generator=g) * 0.1,
             W_dec=torch.randn(d_sae, d_out, generator=g) / d_sae ** 0.5, b_dec=torch.randn(d_out, generator=g) * 0.1)
    if "jumprelu" in arch:
        w["threshold"] = torch.rand(d_sae, generator=g) * 0.3
    if arch == "skip_transcoder":
        w["W_skip"] = torch.randn(d_out, d_in, generator=g) * 0.01
    return SAE(architecture=arch, hook=hook, hook_out=hook_out, name=f"t-{arch}", **w, **kw)


def mine_killed(monkeypatch, hm, store, corpus, after: int = 25, **args) -> None:
    """Mine until `after` batches are done, then a simulated kill (a KeyboardInterrupt from the
    miner's per-batch hook): the run is left 'running' with its last checkpoint."""
    import pytest

    from autointerp.mine import mine
    from autointerp.mine import miner as miner_mod

    def kill(n_done):
        if n_done >= after:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(miner_mod, "_after_batch", kill)
    with pytest.raises(KeyboardInterrupt):
        mine(hm, store, corpus, **args)


def run_ids(store, run_id: int):
    """(token ids of a mining run's contexts [n_done, n_ctx], the run's first mined position):
    what a test replays through a plain forward pass to check the mined records."""
    import numpy as np
    import torch

    run = store.get_mining_run(run_id)
    ctx = store.get_contexts(run["corpus_id"])
    ids = torch.tensor(np.stack([ctx[i]["token_ids"] for i in range(run["n_done"])]).astype(np.int64))
    return ids, run["settings"]["first_pos"]
