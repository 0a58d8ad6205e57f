"""Black-box diff of two causal LMs on the same text: where does B predict the text better than A?

Per token (tokenizers match) or per common character span (they do not; see spans.py), with
lp = log p(actual next text | the text before it):

    logp   Δ log p            = lp_B - lp_A
    p      Δ p                = exp(lp_B) - exp(lp_A)
    clip   Δ max(-5, log p)   = max(-5, lp_B) - max(-5, lp_A)   (a token both models find
                                 hopeless counts as a tie; Δ log p there is noise)
    kl     KL(A || B) of the next-token distributions (tokens only, when the vocabularies match)

The default metric is clip, and the reason is the ranking: the top contexts are those with the
most extreme values, and unclipped Δ log p is most extreme in the tail, on tokens that both models
find all but impossible (log p -12 against -9: Δ 3, a difference that says nothing about what
either model predicts). Clipping at -5 (p < 0.7%) makes those ties, so the top contexts are the
ones where a model gives the actual next token real probability and the other does not. Measured
on the planted difference (SmolLM2 without its 3 strongest induction heads, scripts/bench_diff.py,
4096 tokens): of the top 10 "A better" contexts, 8 have a peak token that completes a bigram seen
earlier in the context with clip against 6 with logp; 8 against 5 on 16384 tokens (rank max; rank
sum does not help here: 7 and 4 with clip, 6 and 4 with logp).

A diff value sits on the token (span) it predicts. Contexts are ranked on each side
("b_better": B - A large, "a_better": B - A very negative) by one of two scores (`rank`), with
m_t the chosen metric's per-token Δ (B - A) and s = +1 for b_better, -1 for a_better:

    max   max_t s·m_t    the context's single largest difference, like a unit's top records
    sum   Σ_t s·m_t      the context's total difference; for logp it is s·(log p_B(context) -
                         log p_A(context)), the log-likelihood ratio of the whole context, so a
                         context ranks high when one model predicts it better as a whole, not
                         when one token of it happens to move a lot

The records are ActivationRecords whose acts are the metric oriented towards the side (so the
explain pipeline explains "where B is better than A" as it explains a neuron); a record's
max_act is its peak token's value whichever score ranked it.

Cost and memory: one forward of each model per batch (the same batches stream through both);
only running sums, a top-k heap per side and a reservoir of random contexts are kept, so memory
is flat in corpus length.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from pydantic import BaseModel, Field

from ..corpus import iter_batches, open_source
from ..errors import UsageError
from ..mine.records import ActivationRecord
from .spans import common_spans, span_sums

METRICS = ("logp", "p", "clip")
RANKS = ("max", "sum")
SIDES = ("b_better", "a_better")
CLIP = -5.0


def same_tokenizer(tok_a, tok_b) -> bool:
    """The two tokenizers give the same ids for the same text (same vocabulary and special ids)."""
    if tok_a is tok_b:
        return True
    try:
        if tok_a.get_vocab() != tok_b.get_vocab():
            return False
    except (AttributeError, NotImplementedError):
        return False
    for attr in ("bos_token_id", "eos_token_id"):
        if getattr(tok_a, attr, None) != getattr(tok_b, attr, None):
            return False
    probe = "The cat sat on the mat.\n\n  Ünïcode 1234 — ok?"
    return tok_a(probe, add_special_tokens=False)["input_ids"] == tok_b(probe, add_special_tokens=False)["input_ids"]


class BlackBoxResult(BaseModel):
    mode: str                                     # token | span
    metric: str
    rank: str = "max"                             # max | sum: how contexts were ranked (module doc)
    n_contexts: int
    n_units: int                                  # tokens (token mode) or spans (span mode) compared
    n_tokens_a: int
    summary: dict[str, float | None]              # mean lp_A, lp_B, Δ of each metric, KL, frac B better
    top: dict[str, list[ActivationRecord]]        # side -> records, best first (acts oriented to the side)
    scores: dict[str, list[float]] = Field(default_factory=dict)   # side -> the rank score of each top record
    random: list[ActivationRecord]                # random contexts, acts = Δ (B - A) of the metric
    values: dict[str, dict[int, dict[str, list[float]]]] = Field(default_factory=dict)
    # side -> ctx_idx -> {metric: per-token Δ (B - A), 'lp_a', 'lp_b', 'kl'?} (for the store and the viewer)
    seconds: float = 0.0

    def side_records(self, side: str) -> tuple[list[ActivationRecord], list[ActivationRecord]]:
        """(top, random) records of a side, random ones oriented like the top ones."""
        sign = 1.0 if side == "b_better" else -1.0
        rand = [r.model_copy(update={"acts": [sign * a for a in r.acts], "max_act": max(sign * a for a in r.acts)})
                for r in self.random]
        return self.top[side], rand


@dataclass
class _Acc:
    """Running sums, heaps and the reservoir of one pass."""
    metric: str
    top_k: int
    n_random: int
    seed: int
    rank: str = "max"
    sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in ("lp_a", "lp_b", "logp", "p", "clip", "kl", "b_better")})
    n: int = 0
    n_kl: int = 0
    n_ctx: int = 0
    heaps: dict[str, list] = field(default_factory=lambda: {s: [] for s in SIDES})
    reservoir: list = field(default_factory=list)
    seen: int = 0

    def __post_init__(self):
        self.rng = random.Random(self.seed)

    def add(self, ctx_idx: int, tokens: list[str], ids: list[int], lp_a: torch.Tensor, lp_b: torch.Tensor,
            kl: torch.Tensor | None) -> None:
        lp_a, lp_b = lp_a.double(), lp_b.double()
        d = {"logp": lp_b - lp_a, "p": lp_b.exp() - lp_a.exp(), "clip": lp_b.clamp_min(CLIP) - lp_a.clamp_min(CLIP)}
        n = lp_a.numel()
        if n == 0:
            return
        self.n += n
        self.n_ctx += 1
        self.sums["lp_a"] += float(lp_a.sum())
        self.sums["lp_b"] += float(lp_b.sum())
        for k, v in d.items():
            self.sums[k] += float(v.sum())
        self.sums["b_better"] += float((d["logp"] > 0).sum())
        if kl is not None:
            self.sums["kl"] += float(kl.double().sum())
            self.n_kl += kl.numel()
        vals = {k: [round(float(x), 5) for x in v] for k, v in d.items()}
        vals["lp_a"] = [round(float(x), 5) for x in lp_a]
        vals["lp_b"] = [round(float(x), 5) for x in lp_b]
        if kl is not None:
            vals["kl"] = [round(float(x), 5) for x in kl]
        m = d[self.metric]
        item = (ctx_idx, tokens, ids, vals)
        scores = ((float(m.max()), float((-m).max())) if self.rank == "max" else (float(m.sum()), float(-m.sum())))
        for side, score in zip(SIDES, scores):
            h = self.heaps[side]
            entry = (score, -ctx_idx, item)
            if len(h) < self.top_k:
                heapq.heappush(h, entry)
            elif entry[:2] > h[0][:2]:
                heapq.heapreplace(h, entry)
        self.seen += 1
        if len(self.reservoir) < self.n_random:
            self.reservoir.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.n_random:
                self.reservoir[j] = item

    def result(self, mode: str, n_tokens_a: int, seconds: float) -> BlackBoxResult:
        if self.n == 0:
            raise UsageError("the corpus gave no text to compare (empty corpus, or --tokens too small for one context)")
        n = self.n
        summary = {"mean_logp_a": self.sums["lp_a"] / n, "mean_logp_b": self.sums["lp_b"] / n,
                   "delta_logp": self.sums["logp"] / n, "delta_p": self.sums["p"] / n,
                   "delta_clip_logp": self.sums["clip"] / n, "frac_b_better": self.sums["b_better"] / n,
                   "kl_a_b": self.sums["kl"] / self.n_kl if self.n_kl else None}
        summary = {k: (None if v is None else round(v, 6)) for k, v in summary.items()}
        top: dict[str, list[ActivationRecord]] = {}
        scores: dict[str, list[float]] = {}
        values: dict[str, dict[int, dict]] = {}
        for side in SIDES:
            sign = 1.0 if side == "b_better" else -1.0
            entries = sorted(self.heaps[side], key=lambda e: (-e[0], -e[1]))
            top[side] = [_record(item, self.metric, sign, "top", rank) for rank, (_, _, item) in enumerate(entries)]
            scores[side] = [round(e[0], 5) for e in entries]
            values[side] = {item[0]: item[3] for _, _, item in entries}
        rand = [_record(item, self.metric, 1.0, "random", 0) for item in sorted(self.reservoir, key=lambda it: it[0])]
        values["random"] = {item[0]: item[3] for item in self.reservoir}
        return BlackBoxResult(mode=mode, metric=self.metric, rank=self.rank, n_contexts=self.n_ctx, n_units=n,
                              n_tokens_a=n_tokens_a, summary=summary, top=top, scores=scores, random=rand, values=values,
                              seconds=round(seconds, 3))


def _record(item, metric: str, sign: float, kind: str, rank: int) -> ActivationRecord:
    """A context as an ActivationRecord: acts = the metric's per-token Δ (B - A) times sign."""
    ctx_idx, tokens, ids, vals = item
    acts = [sign * v for v in vals[metric]]
    return ActivationRecord(ctx_idx=ctx_idx, kind=kind, bin=rank, tokens=tokens, acts=acts,
                            max_act=max(acts) if acts else 0.0, input_ids=ids)


# ----------------------------------------------------------------------------- the passes


def _next_token_logprobs(hm, ids: torch.Tensor, mask: torch.Tensor | None = None, want_full: bool = False):
    """(log p of ids[:, 1:] given the prefix [b, p-1], full log-softmax [b, p-1, V] or None)."""
    run = hm.forward(ids.to(hm.device), None if mask is None else mask.to(hm.device))
    lsm = torch.log_softmax(run.logits[:, :-1].float(), dim=-1)
    tgt = ids[:, 1:].to(lsm.device)
    lp = lsm.gather(-1, tgt[..., None])[..., 0]
    return lp, (lsm if want_full else None)


def token_pass(hm_a, hm_b, source, *, n_tokens: int, context_len: int = 64, batch_size: int = 8,
               metric: str = "clip", top_k: int = 24, n_random: int = 24, seed: int = 0, rank: str = "max",
               progress: Callable | None = None) -> BlackBoxResult:
    """Token-level diff (the tokenizers match): the same token batches through both models."""
    import time

    t0 = time.perf_counter()
    n_ctx = max(1, n_tokens // context_len)
    acc = _Acc(metric, top_k, n_random, seed, rank)
    kl_ok = hm_a.vocab_size == hm_b.vocab_size
    tok = hm_a.tokenizer
    bar = progress(total=n_ctx) if progress else None
    for first, ids in iter_batches(tok, source, context_len, batch_size, limit=n_ctx):
        lp_a, full_a = _next_token_logprobs(hm_a, ids, want_full=kl_ok)
        lp_b, full_b = _next_token_logprobs(hm_b, ids, want_full=kl_ok)
        lp_b = lp_b.to(lp_a.device)
        kl = None
        if kl_ok:
            full_b = full_b.to(full_a.device)
            kl = (full_a.exp() * (full_a - full_b)).sum(-1)
            del full_a, full_b
        for i in range(ids.shape[0]):
            row = ids[i].tolist()
            toks = [tok.decode([t]) for t in row[1:]]
            acc.add(first + i, toks, row, lp_a[i].cpu(), lp_b[i].cpu(), None if kl is None else kl[i].cpu())
        if bar:
            bar.update(ids.shape[0])
    if bar:
        bar.close()
    return acc.result("token", acc.n_ctx * context_len, time.perf_counter() - t0)


def _chunks(tok, source, body: int, max_chunks: int) -> Iterator[tuple[str, int]]:
    """(text, n tokens of `tok`) chunks of documents, each `body` tokens of `tok` (the last of a
    document may be shorter), cut at token boundaries so the text is the same for any tokenizer."""
    made = 0
    for text in source.texts():
        if not text.strip():
            continue
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
        for s in range(0, len(offs), body):
            piece = offs[s:s + body]
            if len(piece) < 2:
                continue
            yield text[piece[0][0]:piece[-1][1]], len(piece)
            made += 1
            if made >= max_chunks:
                return


def _encode(hm, text: str, max_len: int | None) -> tuple[list[int], list[tuple[int, int]], int]:
    """(ids with the BOS prepended when the tokenizer has one, text-token offsets, first_pos)."""
    tok = hm.tokenizer
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"{hm.spec}: span alignment needs a fast tokenizer (character offsets)")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    first = 1 if bos is not None else 0
    if max_len is not None and len(ids) + first > max_len:
        ids, offs = ids[:max_len - first], offs[:max_len - first]
    return ([bos] if first else []) + ids, offs, first


def _span_logprobs(hm, encs: list[tuple[list[int], list, int]]) -> list[torch.Tensor]:
    """Per chunk, log p of each text token (NaN for a first token with no BOS before it)."""
    width = max(len(e[0]) for e in encs)
    pad = hm.tokenizer.pad_token_id or 0
    ids = torch.full((len(encs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for i, (row, _, _) in enumerate(encs):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    lp, _ = _next_token_logprobs(hm, ids, mask)
    out = []
    for i, (row, offs, first) in enumerate(encs):
        v = lp[i, :len(row) - 1].cpu()
        if first == 0:  # no BOS: the first token has no prediction
            v = torch.cat([torch.tensor([float("nan")]), v])
        out.append(v[-len(offs):] if offs else v[:0])
    return out


def span_pass(hm_a, hm_b, source, *, n_tokens: int, context_len: int = 64, batch_size: int = 8,
              metric: str = "clip", top_k: int = 24, n_random: int = 24, seed: int = 0, rank: str = "max",
              progress: Callable | None = None) -> BlackBoxResult:
    """Span-level diff (different tokenizers): the same text chunks through both models, log p
    summed over the common spans (spans.py). Chunks are `context_len` tokens of A."""
    import time

    t0 = time.perf_counter()
    body = context_len - 1
    n_chunks = max(1, n_tokens // context_len)
    max_b = hm_b.max_context or 4 * context_len
    acc = _Acc(metric, top_k, n_random, seed, rank)
    n_tok_a = 0
    bar = progress(total=n_chunks) if progress else None
    chunk_iter = _chunks(hm_a.tokenizer, source, body, n_chunks)
    idx = 0
    while True:
        batch = [c for _, c in zip(range(batch_size), chunk_iter)]
        if not batch:
            break
        enc_a = [_encode(hm_a, t, None) for t, _ in batch]
        enc_b = [_encode(hm_b, t, min(max_b, 4 * context_len)) for t, _ in batch]
        lps_a = _span_logprobs(hm_a, enc_a)
        lps_b = _span_logprobs(hm_b, enc_b)
        for (text, n), ea, eb, la, lb in zip(batch, enc_a, enc_b, lps_a, lps_b):
            n_tok_a += n
            spans = common_spans(text, ea[1], eb[1])
            if ea[2] == 0 or eb[2] == 0:     # a model without a BOS cannot predict the first span
                spans = spans[1:]
            if not spans:
                idx += 1
                continue
            sa = torch.tensor(span_sums(spans, ea[1], text, la.tolist()))
            sb = torch.tensor(span_sums(spans, eb[1], text, lb.tolist()))
            acc.add(idx, [s.text for s in spans], [], sa, sb, None)
            idx += 1
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()
    return acc.result("span", n_tok_a, time.perf_counter() - t0)


def blackbox_diff(hm_a, hm_b, corpus: Any = None, *, n_tokens: int = 4096, context_len: int = 64,
                  batch_size: int = 8, metric: str = "clip", top_k: int = 24, n_random: int = 24, seed: int = 0,
                  mode: str = "auto", rank: str = "max", progress: Callable | None = None) -> BlackBoxResult:
    """The black-box diff (module doc). mode: auto (token when the tokenizers match, else span),
    token or span. rank: max or sum, how contexts are ranked (module doc)."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: use {', '.join(METRICS)}")
    if rank not in RANKS:
        raise UsageError(f"--rank {rank!r}: use {', '.join(RANKS)}")
    if mode not in ("auto", "token", "span"):
        raise UsageError(f"mode {mode!r}: use auto, token or span")
    same = same_tokenizer(hm_a.tokenizer, hm_b.tokenizer)
    if mode == "token" and not same:
        raise UsageError(f"token-level diff needs the same tokenizer; {hm_a.spec} and {hm_b.spec} differ (use span)")
    source = open_source(corpus) if corpus is None or isinstance(corpus, str) else corpus
    fn = token_pass if (mode == "token" or (mode == "auto" and same)) else span_pass
    return fn(hm_a, hm_b, source, n_tokens=n_tokens, context_len=context_len, batch_size=batch_size, metric=metric,
              top_k=top_k, n_random=n_random, seed=seed, rank=rank, progress=progress)


def repeated_token_flags(ids: list[int], first_pos: int = 1) -> list[bool]:
    """Per text token (ids[first_pos:]), whether it completes a repeat: the token before it occurred
    earlier, followed there by this same token (an induction head's chance to copy)."""
    out = []
    for i in range(first_pos, len(ids)):
        hit = False
        if i >= 2:
            prev = ids[i - 1]
            for j in range(first_pos, i - 1):
                if ids[j] == prev and ids[j + 1] == ids[i]:
                    hit = True
                    break
        out.append(hit)
    return out


def is_repeat_context(rec: ActivationRecord, n_peaks: int = 1) -> bool:
    """A context whose strongest values (its peak token; with n_peaks > 1 most of its top n_peaks
    tokens) complete a repeat (repeated_token_flags)."""
    if not rec.input_ids:
        return False
    flags = repeated_token_flags(rec.input_ids, len(rec.input_ids) - len(rec.acts))
    order = sorted(range(len(rec.acts)), key=lambda i: -rec.acts[i])[:n_peaks]
    return sum(flags[i] for i in order) * 2 > len(order)


__all__ = ["METRICS", "RANKS", "SIDES", "BlackBoxResult", "blackbox_diff", "token_pass", "span_pass", "same_tokenizer",
           "repeated_token_flags", "is_repeat_context"]
