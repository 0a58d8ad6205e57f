"""The viewer's model-diff pages: /diffs (every stored diff) and /diff/<id> (one diff: metrics,
top differing contexts with tokens coloured by the difference, component rankings, tasks and the
explanations with their scores). Everything from the store goes through esc()."""

from __future__ import annotations

from .pages import NEG_RGB, POS_RGB, colour, esc, fnum, layout, table, unit_url

SIDE_TITLE = {"a_better": "where A is better than B", "b_better": "where B is better than A", "random": "random contexts"}
ANALYSES = {"weight_tensor": "weight change per tensor (relative Frobenius norm)",
            "weight_head": "weight change per head (W_O^h, relative)",
            "weight_neuron": "weight change per neuron (W_out row, relative)",
            "attn_js": "attention-pattern JS divergence per head (nats)",
            "head_out": "head-output change per head (relative)",
            "neuron_corr": "least-correlated neurons (Pearson r, A vs B)",
            "dla": "DLA difference on the top contexts (B - A, logits)",
            "patching": "patching from the better model into the worse (fraction of the gap recovered)"}


def diff_url(diff_id: str) -> str:
    return f"/diff/{esc(diff_id)}"


def diffs_list(rows: list[dict]) -> str:
    if not rows:
        return '<p class="muted" id="no-diffs">no model diffs</p>'
    return table(["diff", "A", "B", "mode", "level", "Δ log p", "KL(A‖B)", "updated"],
                 [[f'<a class="diff-link" href="{diff_url(r["id"])}">{esc(r["id"][:12])}</a>', esc(r["model_a"]),
                   esc(r["model_b"]), esc(r["mode"]), esc(r["level"]), fnum((r["summary"] or {}).get("delta_logp")),
                   fnum((r["summary"] or {}).get("kl_a_b"), ".4f"), esc(r["updated_at"])] for r in rows], cls="diffs")


def diffs_page(rows: list[dict]) -> str:
    return layout("model diffs", f"<h1>model diffs</h1>{diffs_list(rows)}")


def _context_html(c: dict, metric: str, vmax: float) -> str:
    """Tokens coloured by Δ (B - A): orange where B is better, blue where A is better."""
    vals = c["values"].get(metric) or []
    spans = []
    for i, t in enumerate(c["tokens"]):
        v = vals[i] if i < len(vals) else None
        bg = "" if v is None else (colour(v, vmax, POS_RGB) if v >= 0 else colour(-v, vmax, NEG_RGB))
        tip = "" if v is None else f"Δ {metric} {v:+.3f}"
        if v is not None and "lp_a" in c["values"]:
            tip += f" · log p A {c['values']['lp_a'][i]:.2f} · B {c['values']['lp_b'][i]:.2f}"
        style = f' style="background:{bg}"' if bg else ""
        spans.append(f'<span class="tok" title="{esc(tip)}"{style}>{esc(t)}</span>')
    label = f'{esc(c["side"])} {esc(c["rank"] + 1)} · ctx {esc(c["ctx_idx"])} · peak {fnum(c["score"])}'
    return f'<div class="rec diff-rec" data-side="{esc(c["side"])}"><span class="muted">{label}</span>\n{"".join(spans)}</div>'


def _component_cell(name: str, model: str) -> str:
    from ..core.units import Unit

    if Unit.is_id(name):
        return f'<a href="{esc(unit_url(model, name))}">{esc(name)}</a>'
    return esc(name)


def diff_page(d: dict, n_contexts: int = 10, n_components: int = 10) -> str:
    s = d.get("summary") or {}
    metric = s.get("metric", "logp")
    head = (f"<h1>model diff <span class='muted'>{esc(d['id'][:12])}</span></h1>"
            f"<p><b>A</b> {esc(d['model_a'])} · <b>B</b> {esc(d['model_b'])} · {esc(d['mode'])} level · "
            f"{esc(d['level'])} · corpus {esc(d['corpus'])} · {esc(d['n_tokens'])} tokens</p>")
    metrics = table(["mean log p A", "mean log p B", "Δ log p", "Δ p", "Δ max(-5, log p)", "KL(A‖B)", "B better on"],
                    [[fnum(s.get("mean_logp_a"), ".3f"), fnum(s.get("mean_logp_b"), ".3f"), fnum(s.get("delta_logp")),
                      fnum(s.get("delta_p"), "+.4f"), fnum(s.get("delta_clip_logp")), fnum(s.get("kl_a_b"), ".4f"),
                      f"{100 * s['frac_b_better']:.0f}%" if s.get("frac_b_better") is not None else "-"]], cls="metrics")
    legend = ('<p class="legend">Δ = B - A per token:<span class="sw" style="background:rgb(255,140,0)"></span>B better'
              '<span class="sw" style="background:rgb(30,136,229)"></span>A better</p>')
    parts = [head, "<h2>metrics</h2>", metrics]
    for note in (d.get("settings") or {}).get("notes") or []:
        parts.append(f'<p class="muted">{esc(note)}</p>')
    for e in d.get("explanations", []):
        scores = "; ".join(f"{esc(r.get('kind'))} {fnum(r.get('value'))} (control {fnum(r.get('control'))})"
                           for r in e["scores"])
        parts.append(f"<h2>explanation: {esc(SIDE_TITLE.get(e['side'], e['side']))} ({esc(e['explainer'])})</h2>"
                     f'<p class="expl">{esc(e["text"])}</p><p class="muted">{scores}</p>')
    ctxs = d.get("contexts", [])
    vmax = max((abs(v) for c in ctxs if c["side"] != "random" for v in (c["values"].get(metric) or [])), default=1.0)
    for side in ("a_better", "b_better"):
        rows = [c for c in ctxs if c["side"] == side][:n_contexts]
        rep = s.get(f"repeat_frac_top10_{side}")
        sub = f' <span class="muted">{100 * rep:.0f}% of the top 10 complete a repeat</span>' if rep is not None else ""
        parts.append(f"<h2>top contexts {esc(SIDE_TITLE[side])}{sub}</h2>" + (legend if side == "a_better" else "")
                     + "".join(_context_html(c, metric, vmax) for c in rows))
    for task in d.get("tasks", []):
        out = table(["clean prompt", "answer", "wrong", "LD A", "LD B", "Δ"],
                    [[esc(o["clean"]), esc(o["answer"]), esc(o["wrong"]), fnum(o["ld_a"], "+.2f"), fnum(o["ld_b"], "+.2f"),
                      fnum(o["delta"], "+.2f")] for o in task.get("outliers") or []])
        parts.append(f"<h2>task {esc(task['task'])} <span class='muted'>n={esc(task['n_items'])}</span></h2>"
                     f"<p>logit diff A {fnum(task['logit_diff_a'], '+.2f')} · B {fnum(task['logit_diff_b'], '+.2f')} · "
                     f"accuracy A {fnum(task['accuracy_a'], '.2f')} · B {fnum(task['accuracy_b'], '.2f')}</p>{out}")
    for analysis, rows in (d.get("components") or {}).items():
        model = d["model_a"]
        parts.append(f"<h2>{esc(ANALYSES.get(analysis, analysis))}</h2>" + table(
            ["rank", "component", "value"],
            [[esc(r["rank"] + 1), _component_cell(r["component"], model), fnum(r["value"], "+.4f")]
             for r in rows[:n_components]], cls=f"comp comp-{esc(analysis)}"))
    return layout(f"diff {d['model_a']} vs {d['model_b']}", "".join(parts))
