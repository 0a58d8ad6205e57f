"""The report's figures (matplotlib, Agg): patching heatmaps (drawn by patching/plot.py), the
circuit as a graph (nodes = components placed by layer, arrows = path-patching effects), and
bar charts of the hypothesis tests and of the backup test. Each returns PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from ..core.palette import sign_hex
from ..core.files import pyplot
from ..core.units import layer_of


def _plt():
    return pyplot("the report's figures need")


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def heatmap_png(res, n_layers: int, n_heads: int, title: str) -> bytes:
    """A patching run as a heatmap (patching/plot.py), as PNG bytes."""
    import tempfile
    from pathlib import Path

    from ..patching.plot import plot_result

    with tempfile.TemporaryDirectory() as d:
        p = plot_result(res, Path(d) / "f.png", n_layers, n_heads, title=title)
        return p.read_bytes()


def bars_png(labels: list[str], series: dict[str, list[float]], title: str, ylabel: str, *,
             hline: float | None = None) -> bytes:
    plt = _plt()
    n, k = len(labels), max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * n * k + 2), 3.4))
    x = np.arange(n)
    w = 0.8 / k
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + (i - (k - 1) / 2) * w, vals, w, label=name)
    if hline is not None:
        ax.axhline(hline, color="#555", lw=0.8, ls="--")
    ax.axhline(0, color="#000", lw=0.6)
    ax.set_xticks(x, labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if k > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def circuit_png(heads: list[str], mlps: list[str], edges: list[dict], roles: dict[str, str], effects: dict[str, float],
                n_layers: int, *, min_edge: float = 0.02, title: str = "") -> bytes:
    """The circuit: heads and MLP layers as nodes at their layer (bottom = early), the logits on
    top; an arrow per path-patching edge with |effect| >= min_edge (width ~ |effect|, red =
    positive, blue = negative: core.palette's convention, as the viewer's circuit page; label = the receiver's input: q/k/v or direct). MLP layers have no
    path-patching edges (path patching senders are heads): they are drawn unconnected."""
    plt = _plt()
    nodes = list(heads) + list(mlps)
    by_layer: dict[int, list[str]] = {}
    for n in nodes:
        L = layer_of(n)
        by_layer.setdefault(L, []).append(n)
    layers = sorted(by_layer)
    ypos = {L: i for i, L in enumerate(layers)}
    pos: dict[str, tuple[float, float]] = {}
    width = max(len(v) for v in by_layer.values()) if by_layer else 1
    for L, ns in by_layer.items():
        shift = ((ypos[L] % 3) - 1) * 1.3          # stagger the layers so arrows do not run through nodes
        for j, n in enumerate(ns):
            pos[n] = ((j - (len(ns) - 1) / 2) * 2.2 + shift, ypos[L] * 1.6)
    top_y = (len(layers)) * 1.6
    pos["logits"] = (0.0, top_y)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * width + 2), max(3.5, 1.2 * len(layers) + 2.2)))
    shown = [e for e in edges if abs(e["effect"]) >= min_edge and e["sender"] in pos and e["receiver"] in pos]
    emax = max((abs(e["effect"]) for e in shown), default=1.0) or 1.0
    for e in shown:
        (x0, y0), (x1, y1) = pos[e["sender"]], pos[e["receiver"]]
        col = sign_hex(e["effect"])            # core.palette: red positive, blue negative (as the viewer)
        lw = 0.8 + 4.0 * abs(e["effect"]) / emax
        rad = 0.15 if e["receiver"] != "logits" else 0.05
        ax.annotate("", xy=(x1, y1 - 0.28), xytext=(x0, y0 + 0.28),
                    arrowprops=dict(arrowstyle="-|>", color=col, lw=lw, alpha=0.8, connectionstyle=f"arc3,rad={rad}",
                                    shrinkA=2, shrinkB=2))
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        lab = e["channel"] if e["channel"] != "direct" else ""
        ax.text(mx + 0.15, my, f"{lab} {e['effect']:+.2f}".strip(), fontsize=7, color=col)
    for n, (x, y) in pos.items():
        if n == "logits":
            ax.text(x, y, "logits\n(answer - wrong)", ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.4", fc="#eeeeee", ec="#333"))
            continue
        is_mlp = n.startswith("blocks.")
        name = f"MLP {layer_of(n)}" if is_mlp else n
        eff = effects.get(n)
        r = roles.get(n, "")
        txt = name + (f"\n{eff:+.2f}" if eff is not None else "") + (f"\n{_short(r)}" if r else "")
        ax.text(x, y, txt, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.35", fc="#fff3d6" if is_mlp else "#dcebff", ec="#333"))
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.6)
    ax.set_ylim(-0.9, top_y + 0.9)
    ax.set_yticks([ypos[L] * 1.6 for L in layers], [f"layer {L}" for L in layers], fontsize=8)
    ax.set_xticks([])
    for sp in ("top", "right", "bottom"):
        ax.spines[sp].set_visible(False)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title or "circuit (node: activation-patching effect; arrow: path-patching "
                                                   "effect)", 60)), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _short(role: str, n: int = 22) -> str:
    return role if len(role) <= n else role[: n - 1] + "…"

