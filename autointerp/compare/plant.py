"""A planted difference: model B = model A with the output of chosen heads zeroed, saved as a
local model directory (a spec any command loads). It validates the diff: the diff must find
the heads (weights, head outputs, DLA, patching) and the text they mattered for.

    heads = strongest_heads(detect_heads(hm), "induction", k=2)     # e.g. ['L1/H0', ...]
    zero_head_outputs(hm, heads); save_model(hm, "runs/b")           # then: autointerp diff A runs/b
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..core.units import Unit
from ..errors import UsageError


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
        if u.kind != "head":
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
