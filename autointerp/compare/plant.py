"""A planted difference: model B = model A with the output of chosen heads zeroed, saved as a
local model directory (a spec any command loads). It validates the diff: the diff must find
the heads (weights, head outputs, DLA, patching) and the text they mattered for.

    heads = strongest_heads(detect_heads(hm), "induction", k=2)     # e.g. ['L1/H0', ...]
    zero_head_outputs(hm, heads); save_model(hm, "runs/b")           # then: autointerp diff A runs/b

    plant_heads(hm, "runs/b", heads=3)    # the same in one call (`autointerp plant`): a Planted record
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from pydantic import BaseModel

from ..core.units import HEAD, Unit
from ..errors import UnitError, UsageError
from ..patching import DETECTORS, detect_heads

PLANT_FILE = "plant.json"      # written beside the weights: what was zeroed, from which model


def strongest_heads(scores: dict[str, dict[str, float]], detector: str = "induction", k: int = 2) -> list[str]:
    """The k heads scoring highest on a detector of the head wiki ({unit: {detector: score}})."""
    ranked = sorted(scores, key=lambda u: (-scores[u].get(detector, 0.0), u))
    return ranked[:k]


@torch.no_grad()
def zero_head_outputs(hm, heads: Sequence[str]) -> list[str]:
    """Zero the output weights W_O^h (and nothing else) of each head, in place. Returns the ids."""
    done = []
    for h in heads:
        u = hm.check_unit(h)
        if u.record is not HEAD:
            raise UsageError(f"{h}: not a head (use L<layer>/H<head>)")
        w = hm.W_O(u.layer)
        w[u.index].zero_()
        if float(hm.W_O(u.layer)[u.index].abs().sum()) != 0.0:   # W_O must be a view of the weights
            raise UsageError(f"{hm.spec}: cannot edit the output weights of {u} in place")
        done.append(Unit.head(u.layer, u.index).id)
    return done


def save_model(hm, out_dir: str | Path) -> Path:
    """The model and its tokenizer as a Hugging Face directory (loadable as a model spec)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hm.model.save_pretrained(out)
    hm.tokenizer.save_pretrained(out)
    return out


class Planted(BaseModel):
    model: str                      # the source model's spec
    out: str                        # the model directory written (a model spec)
    detector: str
    heads: list[dict]               # [{"unit": "L18/H6", "score": 0.84}], in the order zeroed
    chosen: str                     # "strongest" (top k by the detector) or "given"


def check_detector(detector: str) -> None:
    if detector not in DETECTORS:
        raise UsageError(f"--detector {detector!r}: use {', '.join(DETECTORS)}")


def check_out_dir(out_dir: str | Path) -> Path:
    """A folder that does not exist yet, or an empty one: plant never writes over anything."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: exists and is not empty (plant writes a new model directory; "
                         "remove it or pick another path)")
    return out


def parse_heads(spec: str) -> int | list[str]:
    """--heads: a count ("3") or head ids ("L18/H6,L17/H4"); checked without a model."""
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 1:
            raise UsageError(f"--heads {spec}: give at least 1")
        return int(spec)
    heads = [h.strip() for h in spec.split(",") if h.strip()]
    if not heads:
        raise UsageError(f"--heads {spec!r}: give a count or heads like L18/H6,L17/H4")
    out = []
    for h in heads:
        try:
            u = Unit.parse(h)
        except UnitError:
            u = None
        if not isinstance(u, Unit) or u.record is not HEAD:
            raise UsageError(f"--heads {h}: not a head (give a count or heads like L18/H6,L17/H4)")
        out.append(u.id)
    return out


def plant_heads(hm, out_dir: str | Path, heads: int | Sequence[str] = 3, *, detector: str = "induction",
                n_seqs: int = 16, seq_len: int = 24, seed: int = 0) -> Planted:
    """Model B for a planted-difference diff: `hm` with the output weights of `heads` zeroed, saved
    as a model directory. `heads` is a count (the strongest heads by the head wiki's `detector`,
    scored on repeated random tokens as `autointerp heads` does) or a list of head ids. Edits `hm`
    in place. The detector scores of the zeroed heads (before zeroing) go into the record and into
    `plant.json` beside the weights."""
    check_detector(detector)
    out = check_out_dir(out_dir)
    n_all = hm.n_layers * hm.n_heads
    if isinstance(heads, int):
        if not 1 <= heads <= n_all:
            raise UsageError(f"--heads {heads}: {hm.spec} has {n_all} heads; give 1 to {n_all}")
    else:
        heads = [hm.check_unit(h).id for h in parse_heads(",".join(heads))]
    if hm.max_context:                              # the repeated sequences must fit the model
        seq_len = max(2, min(seq_len, (hm.max_context - 1) // 2))
    scores = detect_heads(hm, n_seqs=n_seqs, seq_len=seq_len, seed=seed)
    chosen = "strongest" if isinstance(heads, int) else "given"
    ids = strongest_heads(scores, detector, heads) if isinstance(heads, int) else list(dict.fromkeys(heads))
    zero_head_outputs(hm, ids)
    rec = Planted(model=hm.spec, out=str(out), detector=detector, chosen=chosen,
                  heads=[{"unit": h, "score": round(float(scores[h].get(detector, 0.0)), 4)} for h in ids])
    save_model(hm, out)
    (out / PLANT_FILE).write_text(json.dumps(rec.model_dump(), indent=2) + "\n")
    return rec
