"""The embedded backend: a transformers model in this process (loaded through
autointerp.models.loader), no server.

- chat uses the tokenizer's chat template; sampling when temperature > 0 with the seed
  honoured; n samples batched; token counts from the tokenizer; cost 0.
- prompt logprobs are exact over the full vocabulary: one forward pass over the prompt,
  segments tokenised separately and concatenated (each slot is a token boundary); a
  multi-token candidate ("10" is "1","0" for SmolLM2) gets the product of its tokens'
  conditional probabilities from one extra batched pass that reads the first pass's KV cache
  under a custom 4D attention mask.
- prefix reuse: the KV cache of a prompt prefix (the few-shot preamble, identical for every
  unit) is computed once per process per model and shared by every later call; it is never
  mutated (new keys are concatenated onto fresh tensors).
- one copy per (spec, device, dtype) per process: get_llm("embedded:X") twice loads once,
  and a subject model already loaded can be handed in (EmbeddedLLM(spec, model=, tokenizer=)).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..errors import LLMError
from .base import LLM, Result
from .base import starts_with
from .budget import Budget

_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_PREFIXES: dict[int, "OrderedDict[str, _PrefixState]"] = {}
_LOCKS: dict[int, threading.RLock] = {}
_GLOBAL = threading.Lock()
MAX_PREFIXES = 8


def register_model(spec: str, model, tokenizer, device: str = "auto", dtype: str = "float32") -> None:
    """Make an already-loaded (model, tokenizer) the process copy for (spec, device, dtype), so
    an LLM with the same spec as the subject model shares it instead of loading a second."""
    with _GLOBAL:
        _MODELS[(str(spec), device, dtype)] = (model, tokenizer)


def loaded_model(spec: str, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any]:
    key = (str(spec), device, dtype)
    with _GLOBAL:
        if key in _MODELS:
            return _MODELS[key]
    from ..models.loader import load_model  # the only way this layer loads weights

    model, tok = load_model(spec, device=device, dtype=dtype)
    with _GLOBAL:
        return _MODELS.setdefault(key, (model, tok))


class _PrefixState:
    __slots__ = ("ids", "kv", "last_logprobs")

    def __init__(self, ids: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]] | None, last_logprobs):
        self.ids, self.kv, self.last_logprobs = ids, kv, last_logprobs


def plain_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(keys, values) per layer when every layer is a plain DynamicLayer (no sliding window);
    None for caches whose reuse is not a plain concatenation."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]], batch: int):
    """A fresh DynamicCache whose layers view the prefix tensors expanded to `batch` rows (no copy)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache()
    for k, v in kv:
        layer = DynamicLayer()
        layer.lazy_initialization(k, v)
        layer.keys = k.expand(batch, -1, -1, -1)
        layer.values = v.expand(batch, -1, -1, -1)
        cache.layers.append(layer)
    return cache


class EmbeddedLLM(LLM):
    backend = "embedded"
    supports_prompt_logprobs = True

    def __init__(self, spec: str, model=None, tokenizer=None, *, store=None, budget: Budget | None = None,
                 device: str = "auto", dtype: str = "float32", reuse_prefix: bool = True, batch_size: int = 8, **_ignored):
        super().__init__(store=store, budget=budget)
        self.model = str(spec)
        self.name = f"embedded:{spec}"
        self.reuse_prefix = reuse_prefix
        self.batch_size = max(1, int(batch_size))
        if model is not None:
            if tokenizer is None:
                raise LLMError("EmbeddedLLM(model=...) needs the tokenizer too")
            register_model(spec, model, tokenizer, device, dtype)
            self.hf, self.tok = model, tokenizer
        else:
            self.hf, self.tok = loaded_model(spec, device, dtype)
        self.hf.eval()
        mid = id(self.hf)
        with _GLOBAL:
            self._lock = _LOCKS.setdefault(mid, threading.RLock())
            self._prefixes = _PREFIXES.setdefault(mid, OrderedDict())
        self._cand_cache: dict[str, list[int]] = {}
        self._closers: dict[int, str] = {}

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def info(self) -> dict:
        return {**super().info(), "device": str(self.device), "dtype": str(next(self.hf.parameters()).dtype).replace("torch.", "")}

    # ---- tokenisation -------------------------------------------------------------------
    def _ids(self, text: str, special: bool = False) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"]) if text or special else []

    def _head_ids(self, prefix: str) -> list[int]:
        """The prefix's ids, with the tokenizer's BOS when it adds one."""
        return self._ids(prefix, special=True)

    def _cand_ids(self, c: str) -> list[int]:
        if c not in self._cand_cache:
            base = self._ids("\n")
            both = self._ids("\n" + c)
            ids = both[len(base):] if both[: len(base)] == base and len(both) > len(base) else self._ids(c)
            if not ids:
                raise LLMError(f"candidate {c!r} has no tokens")
            self._cand_cache[c] = ids
        return self._cand_cache[c]

    # ---- model pieces ------------------------------------------------------------------------
    def _base(self):
        return self.hf.get_decoder() if hasattr(self.hf, "get_decoder") else self.hf.model

    def _logprobs_of(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.hf.get_output_embeddings()(hidden).float()
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    def _prefix(self, prefix: str) -> _PrefixState:
        """The prefix's ids and, when reuse is on, its KV cache (computed once per process)."""
        st = self._prefixes.get(prefix)
        if st is not None:
            self._prefixes.move_to_end(prefix)
            return st
        ids = self._head_ids(prefix)
        kv, last = None, None
        if ids:
            with torch.inference_mode():
                out = self._base()(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            kv = plain_layers(out.past_key_values)
            last = self._logprobs_of(out.last_hidden_state[0, -1])
        st = _PrefixState(ids, kv, last)
        self._prefixes[prefix] = st
        while len(self._prefixes) > MAX_PREFIXES:
            self._prefixes.popitem(last=False)
        return st

    # ---- prompt logprobs ------------------------------------------------------------------
    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates) -> Result:
        cids = [self._cand_ids(c) for c in candidates]
        out: list[np.ndarray] = []
        ntok = 0
        with self._lock, torch.inference_mode():
            reuse = self.reuse_prefix and bool(prefix)
            st = self._prefix(prefix) if reuse else None
            if st is not None and st.kv is None:
                reuse = False  # a cache that is not plainly reusable (sliding windows): recompute
            head = st.ids if st is not None else self._head_ids(prefix)
            ntok += len(head) if reuse else 0
            for i in range(0, len(list_of_segments), self.batch_size):
                chunk = list_of_segments[i:i + self.batch_size]
                arrs, n = self._lp_chunk(head, st if reuse else None, chunk, cids)
                out.extend(starts_with(a, candidates, cids) for a in arrs)
                ntok += n
        return Result(out, ntok, 0)

    def _lp_chunk(self, head: list[int], st: _PrefixState | None, rows: list[list[str]], cids: list[list[int]]):
        dev = self.device
        P = len(head)
        row_ids, slots = [], []
        for segs in rows:
            ids, pos = [], []
            for s in segs:
                ids.extend(self._ids(s))
                pos.append(P + len(ids) - 1)  # absolute position whose next-token distribution we want
            if any(p < 0 for p in pos):
                raise LLMError("prompt_logprobs: a slot before the first token (empty prefix and empty first segment)")
            row_ids.append(ids)
            slots.append(pos)
        B = len(rows)
        L = max(1, max(len(r) for r in row_ids))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        # right padding needs no mask: causal attention never lets a real token see a later pad
        if st is not None:
            inp = torch.tensor([r + [pad] * (L - len(r)) for r in row_ids], device=dev)
            res = self._base()(input_ids=inp, past_key_values=cache_from(st.kv, B), use_cache=True)
            off = P
        else:
            inp = torch.tensor([head + r + [pad] * (L - len(r)) for r in row_ids], device=dev)
            res = self._base()(input_ids=inp, use_cache=True)
            off = 0
        hidden, cache = res.last_hidden_state, res.past_key_values
        n_processed = sum(len(r) for r in row_ids) + (0 if st is not None else B * P)

        # first tokens of every candidate at every slot
        first = torch.tensor([c[0] for c in cids], device=dev)
        lps = []
        for b in range(B):
            idx = torch.tensor(slots[b], device=dev) - off
            lp = torch.empty(len(slots[b]), len(cids), dtype=torch.float32, device=dev)
            inside = idx >= 0
            if inside.any():
                lp[inside] = self._logprobs_of(hidden[b, idx[inside]])[:, first]
            if (~inside).any():  # a slot at the prefix's last token (first segment empty)
                last = st.last_logprobs if st is not None else self._logprobs_of(hidden[b, P - 1])
                lp[~inside] = last[first].unsqueeze(0)
            lps.append(lp)

        multi = [(j, c) for j, c in enumerate(cids) if len(c) > 1]
        if multi:
            n_processed += self._continuations(cache, hidden.shape[1] + (P if st is not None else 0), slots, multi, lps)
        return [torch.exp(lp).double().cpu().numpy() for lp in lps], n_processed

    def _continuations(self, cache, kv_len: int, slots, multi, lps) -> int:
        """Add log P(t2..tm | slot context, t1..) for multi-token candidates: one batched pass of
        the continuation tokens over the first pass's cache, each query masked to see only its
        own slot's context and its own earlier continuation tokens."""
        dev = self.device
        B = len(slots)
        groups = []  # per row: list of (slot_index, cand_index, tokens fed, tokens predicted, abs_pos)
        for b in range(B):
            g = []
            for si, p in enumerate(slots[b]):
                for j, c in multi:
                    g.append((si, j, c[:-1], c[1:], p))
            groups.append(g)
        Q = max(sum(len(x[2]) for x in g) for g in groups)
        dtype = next(self.hf.parameters()).dtype
        neg = torch.finfo(dtype).min
        mask = torch.full((B, 1, Q, kv_len + Q), neg, dtype=dtype, device=dev)
        ids = torch.zeros(B, Q, dtype=torch.long, device=dev)
        pos_ids = torch.zeros(B, Q, dtype=torch.long, device=dev)
        targets = []
        for b, g in enumerate(groups):
            q = 0
            tb = []
            for si, j, feed, pred, p in g:
                start = q
                for k, (tf, tp) in enumerate(zip(feed, pred)):
                    ids[b, q] = tf
                    pos_ids[b, q] = p + 1 + k
                    mask[b, 0, q, : p + 1] = 0
                    mask[b, 0, q, kv_len + start: kv_len + q + 1] = 0
                    tb.append((q, si, j, tp))
                    q += 1
            for r in range(q, Q):  # padding queries: let them see token 0 only
                mask[b, 0, r, 0] = 0
            targets.append(tb)
        res = self._base()(input_ids=ids, position_ids=pos_ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        hidden = res.last_hidden_state
        for b, tb in enumerate(targets):
            if not tb:
                continue
            qs = torch.tensor([t[0] for t in tb], device=dev)
            lp = self._logprobs_of(hidden[b, qs])
            for row, (_, si, j, tp) in enumerate(tb):
                lps[b][si, j] += lp[row, tp]
        return sum(len(t) for t in targets)

    # ---- generation -------------------------------------------------------------------------
    def _render_chat(self, messages: list[dict]) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # base models without a chat template: a plain transcript
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"

    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop) -> Result:
        text = self._render_chat(messages)
        return self._generate(self._ids(text), None, temperature, max_tokens, n, seed, stop)

    def structured_support(self) -> str | None:
        try:
            import lmformatenforcer  # noqa: F401
        except ImportError:  # pragma: no cover - a declared dependency
            return None
        return "constrained"

    def _structured(self, messages, schema, how, *, temperature, max_tokens, n, seed, stop) -> Result:
        """Decode under the schema (see llm/structured.py): every token keeps the text a valid
        prefix of a JSON value of `schema`, so a reply that ends by itself always parses. The
        KV cache of the messages before the last one (a prompt's system text and few-shot turns,
        the same for every request of that prompt) is computed once and reused."""
        from .structured import JsonConstraint

        text = self._render_chat(messages)
        ids = self._ids(text)
        st = None
        if self.reuse_prefix and len(messages) > 1 and getattr(self.tok, "chat_template", None):
            head = self.tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=False)
            if text.startswith(head):
                with self._lock:
                    st = self._prefix(head)
        gen, out, _ = self.generate_structured(ids, JsonConstraint(self.tok, schema), temperature=temperature,
                                               max_tokens=max_tokens, seed=seed, prefix=st)
        return Result([out], len(ids), len(gen))

    def generate_structured(self, ids: list[int], constraint, *, temperature: float = 0.0, max_tokens: int = 256,
                            seed: int | None = None, prefix: _PrefixState | None = None,
                            max_backtracks: int = 6, close_tokens: int = 48) -> tuple[list[int], str, str]:
        """One continuation of `ids` held to a JsonConstraint: (generated ids, text, finish reason
        'stop', 'length', or 'dead end' where the constraint allowed no token). A decode loop of its
        own rather than `generate` with a logits processor, for three things:
        - a token the schema forces (a key under the fixed field order, `": [`, the closing
          brackets) is appended without a forward pass; the forced run is fed with the next one;
        - a string that repeats an earlier one of a distinct role (constraint.distinct) is taken
          back: the decoder returns to the token that began it and bans that token there (at
          most `max_backtracks` times, then repeats are let through);
        - at `max_tokens` the reply is closed rather than cut: up to `close_tokens` more tokens,
          chosen without the model, each the allowed token that closes most (quotes, brackets),
          so the reply parses (finish reason 'length' all the same);
        - `prefix`, a cached KV state of the first tokens of `ids`, is reused when it matches."""
        from transformers.cache_utils import DynamicCache

        from .structured import first_repeat

        eos = constraint.eos
        sample = (temperature or 0.0) > 0
        gen_ = torch.Generator().manual_seed(int(seed)) if sample and seed is not None else None
        P = len(ids)
        gen: list[int] = []
        ends: list[int] = []                   # text length after each generated token
        banned: dict[int, set[int]] = {}       # position -> tokens taken back there
        backtracks = 0
        reason = "length"
        with self._lock, torch.inference_mode():
            if prefix is not None and prefix.kv is not None and 0 < len(prefix.ids) < P and ids[:len(prefix.ids)] == prefix.ids:
                cache, pending = cache_from(prefix.kv, 1), list(ids[len(prefix.ids):])
            else:
                cache, pending = DynamicCache(), list(ids)
            logits = None
            while len(gen) < max_tokens + close_tokens:
                allowed = constraint.allowed(ids + gen)
                if not allowed:                # the schema's parser has no way on (a dead end): stop here,
                    reason = "dead end"        # the caller closes or refuses the text as for a cut-off reply
                    break
                ban = banned.get(len(gen))
                if ban:
                    allowed = [t for t in allowed if t not in ban] or allowed
                if len(allowed) == 1:          # forced: no forward pass needed to choose it
                    tok = allowed[0]
                elif len(gen) >= max_tokens:   # out of tokens: close the reply
                    tok = eos if eos in allowed else max(allowed, key=lambda t: self._closing_rank(t))
                else:
                    if pending:
                        with _step_threads(len(pending), self.device):
                            out = self.hf(input_ids=torch.tensor([pending], device=self.device), cache=cache,
                                          use_cache=True, logits_to_keep=1)   # the cache grows in place
                        logits, pending = out.logits[0, -1].float(), []
                    idx = torch.tensor(allowed, device=logits.device)
                    sub = logits[idx]
                    if sample:
                        probs = torch.softmax(sub / float(temperature), dim=-1).cpu()
                        tok = allowed[int(torch.multinomial(probs, 1, generator=gen_))]
                    else:
                        tok = allowed[int(sub.argmax())]
                if eos is not None and tok == eos:
                    reason = "stop" if len(gen) < max_tokens else "length"
                    break
                before = ends[-1] if ends else 0
                gen.append(tok)
                pending.append(tok)
                text = self.tok.decode(gen)
                ends.append(len(text))
                rep = first_repeat(text, constraint.distinct, before) if backtracks < max_backtracks else None
                if rep is not None:            # take the repeated string back to the token that began it
                    backtracks += 1
                    j = next(k for k, e in enumerate(ends) if e > rep[0])
                    banned = {k: v for k, v in banned.items() if k <= j}
                    banned.setdefault(j, set()).add(gen[j])
                    del gen[j:], ends[j:]
                    keep = min(cache.get_seq_length(), P + j - 1)   # fed again from the token before j
                    try:
                        if cache.get_seq_length() > keep:
                            cache.crop(keep - cache.get_seq_length())
                    except (RuntimeError, ValueError):    # a sliding-window cache past its window: start over
                        cache, keep = DynamicCache(), 0
                    pending = (ids + gen)[keep:]
                    logits = None
        return gen, self.tok.decode(gen, skip_special_tokens=True), reason

    def _closing_rank(self, t: int) -> tuple[int, int]:
        """How much token t closes a JSON reply: closing characters first, then short."""
        text = self._closers.get(t)
        if text is None:
            text = self._closers[t] = self.tok.decode([t])
        return sum(c in '"]}' for c in text), -len(text)

    def _complete(self, prompt, *, prefix=None, temperature, max_tokens, n, seed, stop) -> Result:
        if prefix:
            with self._lock:
                st = self._prefix(prefix) if self.reuse_prefix else None
                head = st.ids if st is not None else self._head_ids(prefix)
                ids = head + self._ids(prompt[len(prefix):])
                return self._generate(ids, st if (st is not None and st.kv is not None) else None,
                                      temperature, max_tokens, n, seed, stop)
        return self._generate(self._ids(prompt, special=True), None, temperature, max_tokens, n, seed, stop)

    def _generate(self, ids: list[int], st: _PrefixState | None, temperature, max_tokens, n, seed, stop) -> Result:
        seqs = self.generate_ids(ids, st, temperature, max_tokens, n, seed, stop)
        return Result([t for _, t, _ in seqs], len(ids), sum(len(g) for g, _, _ in seqs))

    def generate_ids(self, ids: list[int], st: _PrefixState | None = None, temperature: float = 0.0, max_tokens: int = 16,
                     n: int = 1, seed: int | None = None, stop=None) -> list[tuple[list[int], str, str]]:
        """n continuations of `ids`: (generated ids up to EOS, text cut at the first stop string,
        finish reason 'stop' or 'length'). Greedy when temperature is 0 (n copies of one run)."""
        if max_tokens <= 0:
            return [([], "", "length")] * max(1, n)
        sample = (temperature or 0.0) > 0
        runs = n if sample else 1
        kw: dict[str, Any] = dict(max_new_tokens=max_tokens, do_sample=sample, num_return_sequences=runs)
        if sample:
            kw.update(temperature=float(temperature), top_p=1.0, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        eos = self.tok.eos_token_id
        kw["pad_token_id"] = self.tok.pad_token_id if self.tok.pad_token_id is not None else eos
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tok)
        inp = torch.tensor([ids], device=self.device)
        with self._lock, torch.inference_mode(), _seeded(seed if sample else None, self.device):
            if st is not None and st.kv is not None and len(st.ids) < len(ids):
                kw["past_key_values"] = cache_from(st.kv, runs)
                inp = inp.expand(runs, -1).contiguous()
                kw["num_return_sequences"] = 1
            out = self.hf.generate(input_ids=inp, attention_mask=torch.ones_like(inp), **kw)
        res = []
        eos_ids = [] if eos is None else (eos if isinstance(eos, list) else [eos])
        for seq in out[:, len(ids):].tolist():
            cut = next((i for i, t in enumerate(seq) if t in eos_ids), None)
            reason = "stop" if cut is not None else "length"
            seq = seq[:cut] if cut is not None else seq
            t = self.tok.decode(seq, skip_special_tokens=True)
            for s in stop or ():
                k = t.find(s)
                if k >= 0:
                    t, reason = t[:k], "stop"
            res.append((seq, t, reason))
        if not sample and n > 1:
            res = res * n
        return res


@contextlib.contextmanager
def _step_threads(n_tokens: int, device: torch.device):
    """One CPU thread for a decode step of a few tokens. Such a step is a handful of small
    matrix-vector products, and when the cores are shared a second OpenMP thread spins waiting for
    one (measured here, SmolLM2-135M, one token on a 611-token cache, 2 cores with one busy: 78 ms a
    step on 1 thread, 337 ms on 2; not measured on idle cores). The prefill keeps torch's threads.
    Only the structured decoder's own loop uses it; `generate` (HF's loop) does not yet."""
    before = torch.get_num_threads()
    if device.type != "cpu" or n_tokens > 16 or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
