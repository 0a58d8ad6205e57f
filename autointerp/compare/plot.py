"""A PNG of a diff (matplotlib, optional: pip install 'autointerp[plot]'): the per-token Δ of the
top contexts of each side and the rankings of every component analysis. Drawing only."""

from __future__ import annotations

from pathlib import Path

from ..core.files import pyplot, save_png


def plot_diff(res, path: str | Path, top: int = 10, force: bool = False) -> Path:
    plt = pyplot()
    panels = [("contexts", None)] + [(a, rows) for a, rows in res.components.items() if rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), squeeze=False)
    ax = axes[0][0]
    bb = res.blackbox
    for side, colour in (("a_better", "tab:blue"), ("b_better", "tab:orange")):
        vals = (bb.scores.get(side) or [r.max_act for r in bb.top[side]])[:top]
        ax.plot(range(1, len(vals) + 1), vals, "o-", color=colour, label=side.replace("_", " "))
    what = "peak" if bb.rank == "max" else "total"
    ax.set_title(f"{res.model_a} vs {res.model_b}: {what} Δ {bb.metric} of the top contexts")
    ax.set_xlabel("rank")
    ax.legend()
    for (name, rows), row in zip(panels[1:], axes[1:]):
        ax = row[0]
        rows = rows[:top]
        ax.bar(range(len(rows)), [r["value"] for r in rows], color="tab:gray")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["component"][-24:] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_title(name)
    fig.tight_layout()
    return save_png(fig, path, force=force, dpi=90)
