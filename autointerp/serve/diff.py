"""The viewer's model-diff pages: /diffs (every stored diff) and /diff/<id> (one diff: metrics,
top differing contexts with tokens coloured by the difference, component rankings, tasks and the
explanations with their scores). Rendered by templates/diff.html; contexts are records drawn by
the same record_view / `record` macro as a unit page's."""

from __future__ import annotations

from ..core.units import Unit
from .pages import NEG_RGB, POS_RGB, colour, record_view
from .render import fnum, render, score_rows

SIDE_TITLE = {"a_better": "where A is better than B", "b_better": "where B is better than A", "random": "random contexts"}
ANALYSES = {"weight_tensor": "weight change per tensor (relative Frobenius norm)",
            "weight_head": "weight change per head (W_O^h, relative)",
            "weight_neuron": "weight change per neuron (W_out row, relative)",
            "attn_js": "attention-pattern JS divergence per head (nats)",
            "head_out": "head-output change per head (relative)",
            "neuron_corr": "least-correlated neurons (Pearson r, A vs B)",
            "dla": "DLA difference on the top contexts (B - A, logits)",
            "patching": "patching from the better model into the worse (fraction of the gap recovered)"}


def diffs_page(rows: list[dict]) -> str:
    return render("diffs.html", title="model diffs", rows=rows)


def _context(c: dict, metric: str, vmax: float) -> dict:
    """Tokens coloured by Δ (B - A): orange where B is better, blue where A is better."""
    vals = c["values"].get(metric) or []

    def tip(i, v, _s):
        if v is None:
            return ""
        t = f"Δ {metric} {v:+.3f}"
        if "lp_a" in c["values"]:
            t += f" · log p A {c['values']['lp_a'][i]:.2f} · B {c['values']['lp_b'][i]:.2f}"
        return t

    return record_view(c["tokens"], vals, label=f'{c["side"]} {c["rank"] + 1} · ctx {c["ctx_idx"]} · peak {fnum(c["score"])}',
                       bg=lambda v: "" if v is None else (colour(v, vmax, POS_RGB) if v >= 0 else colour(-v, vmax, NEG_RGB)),
                       tip=tip, cls="diff-rec", data=[("side", c["side"])])


def diff_page(d: dict, n_contexts: int = 10, n_components: int = 10) -> str:
    s = d.get("summary") or {}
    metric = s.get("metric", "logp")
    heads = ["mean log p A", "mean log p B", "Δ log p", "Δ p", "Δ max(-5, log p)", "KL(A‖B)", "B better on"]
    cells = [fnum(s.get("mean_logp_a"), ".3f"), fnum(s.get("mean_logp_b"), ".3f"), fnum(s.get("delta_logp")),
             fnum(s.get("delta_p"), "+.4f"), fnum(s.get("delta_clip_logp")), fnum(s.get("kl_a_b"), ".4f"),
             f"{100 * s['frac_b_better']:.0f}%" if s.get("frac_b_better") is not None else "-"]
    expls = [{"title": SIDE_TITLE.get(e["side"], e["side"]), "explainer": e["explainer"], "text": e["text"],
              "scores_line": "; ".join(f"{r['label']} {fnum(r.get('value'))} (control {fnum(r.get('control'))})"
                                       for r in score_rows(e["scores"]))} for e in d.get("explanations", [])]
    ctxs = d.get("contexts", [])
    vmax = max((abs(v) for c in ctxs if c["side"] != "random" for v in (c["values"].get(metric) or [])), default=1.0)
    sides = [{"title": SIDE_TITLE[side], "rep": s.get(f"repeat_frac_top10_{side}"),
              "records": [_context(c, metric, vmax) for c in ctxs if c["side"] == side][:n_contexts]}
             for side in ("a_better", "b_better")]
    analyses = [{"name": a, "title": ANALYSES.get(a, a),
                 "rows": [dict(r, is_unit=Unit.is_id(r["component"])) for r in rows[:n_components]]}
                for a, rows in (d.get("components") or {}).items()]
    return render("diff.html", title=f"diff {d['model_a']} vs {d['model_b']}", d=d, metric_heads=heads,
                  metric_cells=cells, notes=(d.get("settings") or {}).get("notes") or [], explanations=expls,
                  sides=sides, tasks=d.get("tasks", []), analyses=analyses, model_a=d["model_a"])
