"""The one sign-colour convention of every figure and page (core: pure, imports no stage).

A signed quantity (a patching effect, a circuit edge's score, a node's effect) is drawn **red
when positive and blue when negative**, with strength by |value|. What the sign means is the
quantity's own definition (for an edge-attribution score, negative = patching the edge lowers
the logit difference); the colour only shows the sign. The viewer's circuit SVG
(serve/circuit.py), its patching heatmaps (serve/pages.py) and the investigation report's
circuit PNG (investigate/figures.py) all take their colours from here. Activations on records
use their own orange/blue (serve/pages.py POS_RGB/NEG_RGB); they are not signed effects."""

from __future__ import annotations

POS_HEX, NEG_HEX, NONE_HEX = "#c62828", "#1565c0", "#9e9e9e"     # positive, negative, no value
POS_RGB, NEG_RGB = (211, 47, 47), (25, 118, 210)                  # the same hues for translucent fills


def sign_hex(v: float | None) -> str:
    """The solid colour of a signed value: blue if < 0, red otherwise, grey for none."""
    if v is None:
        return NONE_HEX
    return NEG_HEX if v < 0 else POS_HEX


def sign_rgba(v: float, vmax: float) -> str:
    """A translucent fill for v in [-vmax, vmax]: red or blue, alpha = |v| / vmax."""
    a = max(-1.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
    r, g, b = POS_RGB if a >= 0 else NEG_RGB
    return f"rgba({r},{g},{b},{abs(a):.3f})"
