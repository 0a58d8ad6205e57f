"""Probes: new short inputs built from an explanation, run through the subject model.

An explanation predicts that the unit fires on some inputs and not on others. Two probe sets
test that prediction on inputs the explainer never saw:

  code  built without any LLM. The explanation's key words (the words it quotes; else its
        content words) are written into *neutral carriers*: windows of `window` tokens of the
        unit's own mined random/quantile contexts, the quietest window of each context, those
        whose mined max stays below the firing threshold first (token ids from the store,
        never re-tokenised). The key word replaces the token 2/3 into the window; its matched
        negative is the same window with an unrelated filler token in that slot (a minimal
        pair). Fillers: the carriers' most frequent word tokens that are no key word of the
        explanation(s) tested. Works whatever the LLM and whatever the tokenizer.
  llm   the LLM writes a few sentences that contain the concept (and ones that do not,
        prompts/probes_chat.txt, JSON); where a positive sentence contains a key word the code
        adds a matched negative with the key word swapped for a filler word. A poor or failed
        reply only shrinks this set.

A probe *fires* when its max activation over its text positions is >= frac x the unit's mined
max. Scores (labels = what the explanation predicts, positive or negative):
  precision = fired positives / all probes that fired
  recall    = fired positives / positives
  AUC       = P(max act of a random positive > that of a random negative), ties half
              (score.metrics.auroc: threshold-free, 0.5 = the explanation predicts nothing).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Sequence

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from ..core.stats import bootstrap, per_resample
from ..score.metrics import auroc

_QUOTED = re.compile(r'"([^"\n]{1,40})"|“([^”\n]{1,40})”|(?<![\w])\'([^\'\n]{1,40})\'(?![\w])')
# a clause naming what comes *after* the unit's input (the baseline's ", often before ..." part)
_OUTPUT_CLAUSE = re.compile(r"\b(often before|before|followed by|predict(?:s|ing)?|next token)\b", re.I)
_STOP = frozenset("""a an the and or of in on at to for from by with as is are was were be been being this that these
those it its it's which who whom what when where why how not no nor but if then than so such can could would should may
might will shall do does did has have had there their they them he she his her we our you your i me my mine token tokens
word words neuron neurons fires fire firing find finds text texts mainly mostly often usually especially particular
particularly related relating mention mentions mentioning about like other various things thing something part parts
use used using main activates activate activation letter letters phrase phrases piece pieces sentence sentences also
some any many much more most very just only""".split())


class Probe(BaseModel):
    text: str
    label: bool                    # what the explanation predicts: the unit fires on it
    source: str                    # code | llm
    key: str | None = None         # the key word written in (positives) or swapped out (negatives)
    pair: int | None = None        # index of the matched probe
    ids: list[int] | None = None   # token ids run (code probes; BOS included)
    max_act: float | None = None
    fires: bool | None = None


class ProbeScores(BaseModel):
    auc: float | None
    precision: float | None
    recall: float | None
    n: int
    n_pos: int
    n_fired: int
    threshold: float
    auc_ci: tuple[float, float] | None = None
    by_source: dict[str, dict] = {}
    auc_reason: str | None = None          # why auc is null (a degenerate sample), else None
    precision_reason: str | None = None
    recall_reason: str | None = None


# ---- what an explanation says ----------------------------------------------------------------
def parse_explanation(text: str, max_words: int = 6) -> dict:
    """{'input': key words the unit should fire on, 'output': words named as what follows,
    'source': 'quoted' | 'content'}. Input words are the quoted ones before an output clause
    ("often before", "followed by", "predicts"); without quotes, the clause's content words."""
    m = _OUTPUT_CLAUSE.search(text)
    head, tail = (text[: m.start()], text[m.end():]) if m else (text, "")

    def quoted(s):
        out = []
        for g in _QUOTED.findall(s):
            w = next((x for x in g if x), "").strip()
            if w and w.lower() not in [o.lower() for o in out]:
                out.append(w)
        return out

    inp, out = quoted(head), quoted(tail)
    source = "quoted"
    if not inp:
        source = "content"
        seen = []
        for w in re.findall(r"[A-Za-z][A-Za-z'-]+", head):
            if w.lower() not in _STOP and len(w) >= 3 and w.lower() not in [s.lower() for s in seen]:
                seen.append(w)
        inp = seen
    return {"input": inp[:max_words], "output": out[:max_words], "source": source}


def norm_word(tok: str) -> str:
    return tok.strip().lower()


# ---- carriers and fillers from the unit's quiet records ---------------------------------------
def neutral_windows(ex, threshold: float, window: int, n: int = 64) -> list[tuple[object, int]]:
    """Carrier windows: (record, start) of `window` text tokens in the unit's random and
    quantile records (top records when there are none), quietest first (the window's max
    activation, as mined); windows below the threshold first, then the quietest others, so a
    unit active almost everywhere still gets carriers. One window per record."""
    seen, cands = set(), []
    recs = list(ex.random) + list(ex.quantiles) or list(ex.top)
    for r in recs:
        if r.ctx_idx in seen or not r.input_ids or not r.acts:
            continue
        seen.add(r.ctx_idx)
        w = min(window, len(r.acts))
        best = min(range(len(r.acts) - w + 1), key=lambda s: (max(r.acts[s:s + w]), s))
        cands.append((max(r.acts[best:best + w]), r.ctx_idx, r, best))
    cands.sort(key=lambda c: (c[0] >= threshold, c[0], c[1]))
    return [(r, s) for _, _, r, s in cands[:n]]


def neutral_records(ex, threshold: float, window: int = 12) -> list:
    return [r for r, _ in neutral_windows(ex, threshold, window)]


def filler_tokens(records: Sequence, tokenizer, exclude: Sequence[str], n: int = 12) -> list[tuple[int, str]]:
    """The most frequent word-like tokens of `records` (ids as the model saw them) that are not
    key words: (id, decoded string). Unrelated words for the negatives."""
    excl = {norm_word(w) for w in exclude}
    cnt: Counter = Counter()
    for r in records:
        cnt.update(r.input_ids)
    out = []
    for tid, _ in cnt.most_common():
        s = tokenizer.decode([tid])
        w = norm_word(s)
        if len(w) < 2 or not w.isalpha() or w in excl or w in _STOP or any(w in e or e in w for e in excl if len(e) > 2):
            continue
        if tid in (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
            continue
        out.append((int(tid), s))
        if len(out) >= n:
            break
    return out


def word_ids(tokenizer, word: str) -> list[int] | None:
    """Token ids of a key word as it appears mid-sentence (leading space), None when the
    tokenizer cannot write it (unknown token)."""
    for form in (" " + word.strip(), word.strip()):
        ids = tokenizer.encode(form, add_special_tokens=False)
        if ids and (tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids):
            return [int(i) for i in ids]
    return None


def code_probes(ex, tokenizer, key_words: Sequence[str], threshold: float, *, per_word: int = 6, window: int = 12,
                fillers: Sequence[tuple[int, str]] | None = None) -> list[Probe]:
    """Minimal pairs: each key word written into `per_word` neutral carrier windows, each
    matched by the same window with a filler token in the slot."""
    carriers = neutral_windows(ex, threshold, window)
    if not carriers or not key_words:
        return []
    fillers = list(fillers) if fillers is not None else filler_tokens([r for r, _ in carriers], tokenizer, key_words)
    if not fillers:
        return []
    fp = ex.first_pos
    probes: list[Probe] = []
    j = 0
    for w in key_words:
        kid = word_ids(tokenizer, w)
        if kid is None:
            continue
        for i in range(per_word):
            rec, start = carriers[(j + i) % len(carriers)]
            win = rec.input_ids[fp + start:fp + start + window]
            slot = (2 * len(win)) // 3
            bos = rec.input_ids[:fp]
            fid, fstr = fillers[(j + i) % len(fillers)]
            pos_ids = bos + win[:slot] + kid + win[slot + 1:]
            neg_ids = bos + win[:slot] + [fid] + win[slot + 1:]
            k = len(probes)
            probes.append(Probe(text=tokenizer.decode(pos_ids[fp:]), label=True, source="code", key=w, pair=k + 1, ids=pos_ids))
            probes.append(Probe(text=tokenizer.decode(neg_ids[fp:]), label=False, source="code", key=fstr.strip(), pair=k,
                                ids=neg_ids))
        j += per_word
    return probes


# ---- LLM-written probes -----------------------------------------------------------------------
class LLMProbes(BaseModel):
    """The LLM's probe texts; the bounds keep a constrained reply (llm.structured) short."""

    positive: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=8)
    negative: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=8)

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _cap(cls, v):   # a free-form reply (no schema enforced) longer than the bounds is cut, not refused
        return [x[:200] if isinstance(x, str) else x for x in v][:8] if isinstance(v, list) else v


def _has(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.I) is not None


def swap_words(text: str, words: Sequence[str], filler: str) -> str:
    for w in words:
        text = re.sub(rf"(?<!\w){re.escape(w)}(?!\w)", filler, text, flags=re.I)
    return text


def llm_probes(llm, explanation: str, key_words: Sequence[str], filler_words: Sequence[str], *, n: int = 4,
               max_chars: int = 200, seed: int = 0) -> tuple[list[Probe], dict]:
    """Ask the LLM for texts; returns (probes, info) where info records the reply or the error."""
    from ..errors import LLMError
    from ..llm import load_prompt

    template = load_prompt("probes_chat")
    info: dict[str, Any] = {"template": template.name, "template_hash": template.hash}
    try:
        msgs = template.render(explanation=explanation.strip(), n=str(n))
        reply = llm.structured(msgs, LLMProbes, template=template, max_tokens=400, seed=seed)
    except LLMError as e:
        info["error"] = str(e)[:300]
        return [], info
    info["n_positive"], info["n_negative"] = len(reply.positive), len(reply.negative)
    out: list[Probe] = []
    seen: set[str] = set()

    def add(p: Probe) -> int:
        out.append(p)
        return len(out) - 1

    fill = [f.strip() for f in filler_words if f.strip()] or ["thing"]
    for i, t in enumerate(reply.positive[: 2 * n]):
        t = (t or "").strip()[:max_chars]
        if not t or t.lower() in seen:
            continue
        seen.add(t.lower())
        ks = [w for w in key_words if _has(t, w)]
        a = add(Probe(text=t, label=True, source="llm", key=ks[0] if ks else None))
        if ks:
            neg = swap_words(t, ks, fill[i % len(fill)])
            if neg.lower() not in seen:
                seen.add(neg.lower())
                b = add(Probe(text=neg, label=False, source="llm", key=fill[i % len(fill)], pair=a))
                out[a].pair = b
    for t in reply.negative[: 2 * n]:
        t = (t or "").strip()[:max_chars]
        if not t or t.lower() in seen or any(_has(t, w) for w in key_words):
            continue
        seen.add(t.lower())
        add(Probe(text=t, label=False, source="llm"))
    return out, info


# ---- running and scoring --------------------------------------------------------------------
@torch.no_grad()
def run_probes(hm, unit, probes: list[Probe], threshold: float, *, batch_size: int = 32, first_pos: int = 1) -> None:
    """Fill each probe's max_act (over its text positions) and fires, batched forward passes
    that stop after the unit's layer. Code probes run their ids, LLM probes are tokenised with
    the BOS the mined contexts start with."""
    from .site import unit_site

    hook, index = unit_site(hm, unit)
    for a in range(0, len(probes), batch_size):
        chunk = probes[a:a + batch_size]
        seqs = []
        for p in chunk:
            if p.ids is not None:
                seqs.append(list(p.ids))
            else:
                ids, _ = hm.tokenize([p.text], prepend_bos=first_pos > 0)
                seqs.append(ids[0].tolist())
        width = max(len(s) for s in seqs)
        pad = hm.tokenizer.pad_token_id if hm.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        run = hm.forward(ids, mask, cache=[hook], return_logits=False, stop_at_layer=unit.layer + 1)
        acts = run[hook][..., index].float().cpu()
        for i, p in enumerate(chunk):
            L = len(seqs[i])
            v = acts[i, min(first_pos, L - 1):L]
            p.max_act = round(float(v.max()), 5)
            p.fires = bool(p.max_act >= threshold)


def auc_ci(labels, scores, n_boot: int, seed: int) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the probes' AUROC, stratified: every resample keeps
    the number of positives and of negatives (so both classes are in each); None with one class
    or no resample."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    if y.all() or (~y).all() or n_boot < 1:
        return None
    order = np.concatenate([np.flatnonzero(y), np.flatnonzero(~y)])
    lo, hi = bootstrap(per_resample(lambda idx: auroc(y[order[idx]], s[order[idx]])), (int(y.sum()), int((~y).sum())),
                       n_boot=n_boot, seed=seed)
    return None if lo is None else (lo, hi)


def auc_null_reason(labels: Sequence[bool], fires: Sequence[bool], acts: Sequence[float | None]) -> str | None:
    """Why a probe AUC carries no information (and is null), or None. Null when there is no
    positive or no negative on either side: no probe predicted to fire (or every one), no probe
    fired (or every one), or one max activation for all (the AUC would be 0.5 [0.50, 0.50])."""
    n = len(labels)
    if n == 0:
        return "no probes"
    if not any(labels):
        return f"the explanation predicts none of the {n} probes to fire"
    if all(labels):
        return f"the explanation predicts all {n} probes to fire (no negatives)"
    if not any(fires):
        return f"no probe fired (all {n} stayed below the threshold)"
    if all(fires):
        return f"every probe fired (all {n} reached the threshold)"
    vals = {float(a) for a in acts if a is not None}
    if len(vals) <= 1:
        return f"every probe has the same max activation ({next(iter(vals), float('nan')):.3g})"
    return None


def probe_scores(probes: Sequence[Probe], threshold: float, *, n_boot: int = 200, seed: int = 0) -> ProbeScores:
    def one(ps):
        y = [p.label for p in ps]
        f = [bool(p.fires) for p in ps]
        tp = sum(a and b for a, b in zip(y, f))
        why = auc_null_reason(y, f, [p.max_act for p in ps])
        return dict(auc=None if why else auroc(y, [p.max_act for p in ps]), auc_reason=why,
                    precision=tp / sum(f) if sum(f) else None, recall=tp / sum(y) if sum(y) else None,
                    precision_reason=None if sum(f) else "no probe fired",
                    recall_reason=None if sum(y) else "no probe predicted to fire",
                    n=len(ps), n_pos=sum(y), n_fired=sum(f))

    by = {src: one([p for p in probes if p.source == src]) for src in sorted({p.source for p in probes})}
    allp = one(list(probes))
    ci = None if allp["auc_reason"] else auc_ci([p.label for p in probes], [p.max_act for p in probes], n_boot, seed)
    return ProbeScores(**allp, threshold=threshold, auc_ci=ci, by_source=by)
