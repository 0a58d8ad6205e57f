"""Heatmaps of patching results (matplotlib, optional dependency: pip install 'autointerp[plot]')."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import pyplot, save_png
from ..core.units import HEAD, NEURON, Unit, UnitKind
from .core import PatchResult


def _unit(component: str, kind: UnitKind) -> Unit | None:
    """The unit a result row names, if it is a unit of this kind ("blocks.3.mlp.out" rows are not)."""
    if not Unit.is_id(component):
        return None
    u = Unit.parse(component)
    return u if u.record is kind else None


def result_grid(res: PatchResult, n_layers: int, n_heads: int) -> tuple[np.ndarray, list[str], list[str], str, str]:
    """(grid [rows, cols], row labels, column labels, row axis name, column axis name)."""
    rows = res.results
    per_pos = any(r.get("position") is not None for r in rows)
    heads = all(_unit(r["component"], HEAD) for r in rows)
    neurons = all(_unit(r["component"], NEURON) for r in rows)
    toks = res.settings.get("str_tokens") or []
    if per_pos:
        P = max(r["position"] for r in rows) + 1
        if heads:
            keys = sorted({_unit(r["component"], HEAD) for r in rows})
            index = {k: i for i, k in enumerate(keys)}
            g = np.full((len(keys), P), np.nan)
            for r in rows:
                g[index[_unit(r["component"], HEAD)], r["position"]] = r["effect"]
            ylab = [u.id for u in keys]
            yname = "head"
        else:
            layers = sorted({r["layer"] for r in rows})
            g = np.full((len(layers), P), np.nan)
            for r in rows:
                g[layers.index(r["layer"]), r["position"]] = r["effect"]
            ylab, yname = [str(L) for L in layers], "layer"
        xlab = [f"{p}:{toks[p]!r}" if p < len(toks) else str(p) for p in range(P)]
        return g, ylab, xlab, yname, "position"
    if heads:
        g = np.full((n_layers, n_heads), np.nan)
        for r in rows:
            u = _unit(r["component"], HEAD)
            g[u.layer, u.index] = r["effect"]
        return g, [str(L) for L in range(n_layers)], [str(h) for h in range(n_heads)], "layer", "head"
    if neurons:
        units = [_unit(r["component"], NEURON) for r in rows]
        layers = sorted({u.layer for u in units})
        width = max(u.index for u in units) + 1
        g = np.full((len(layers), width), np.nan)
        for u, r in zip(units, rows):
            g[layers.index(u.layer), u.index] = r["effect"]
        return g, [str(L) for L in layers], [str(i) for i in range(width)], "layer", "neuron"
    layers = sorted({r["layer"] for r in rows})
    g = np.full((len(layers), 1), np.nan)
    for r in rows:
        g[layers.index(r["layer"]), 0] = r["effect"]
    return g, [str(L) for L in layers], [rows[0]["component"].split(".", 2)[-1] if rows else ""], "layer", ""


def plot_result(res: PatchResult, path: str | Path, n_layers: int, n_heads: int, title: str | None = None,
                force: bool = False) -> Path:
    plt = pyplot()
    g, ylab, xlab, yname, xname = result_grid(res, n_layers, n_heads)
    lim = float(np.nanmax(np.abs(g))) if np.isfinite(g).any() else 1.0
    lim = lim or 1.0
    h = min(max(3.0, 0.25 * len(ylab) + 1.5), 30)
    w = min(max(4.0, 0.35 * len(xlab) + 2.5), 30)
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(g, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    if len(xlab) <= 60:
        ax.set_xticks(range(len(xlab)), xlab, rotation=90 if xname == "position" else 0, fontsize=7)
    if len(ylab) <= 80:
        ax.set_yticks(range(len(ylab)), ylab, fontsize=7)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    unit = "logits" if not res.normalised else "normalised logit diff"
    ax.set_title(title or f"{res.method} patching, {res.what}, {res.direction or ''} ({unit})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return save_png(fig, path, force=force, dpi=120)
