"""Server-side rendering of the viewer's pages: small functions from the store's read methods'
dicts to HTML strings. Everything that came from the store goes through esc(). No third-party
assets: inline CSS, and one small script of our own (the true/simulated toggle) served by the
viewer itself at SCRIPT_URL, so the Content-Security-Policy can forbid inline scripts."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from ..core.units import HEAD, UNIT_KINDS, UNIT_RE  # the one unit-id regex

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header form{margin-left:auto}
main{padding:12px 20px;max-width:1200px}
h1{font-size:20px;margin:8px 0} h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:4px 0} td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600} .num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777} .expl{font-size:16px;margin:4px 0} .ci{color:#666;font-size:12px}
.rec{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;margin:3px 0;white-space:pre-wrap;line-height:1.9;
  overflow-wrap:anywhere;word-break:break-word;max-width:100%}
.tok{white-space:pre-wrap;border-radius:2px;padding:1px 0} .q{outline:2px solid #333}
.legend .sw{display:inline-block;width:12px;height:12px;vertical-align:middle;border-radius:2px;margin:0 3px 0 8px}
.wide{max-width:100%;overflow-x:auto}
td{overflow-wrap:anywhere}
.hm td{width:38px;height:22px;text-align:center;font-size:11px;padding:0;border:1px solid #fff}
.hm td a{color:#000;text-decoration:none;display:block}
.pill{display:inline-block;background:#eceff1;border-radius:10px;padding:0 8px;margin:1px;font-family:ui-monospace,monospace}
button{cursor:pointer}
"""

STATIC = Path(__file__).parent / "static"
TOGGLE_JS = (STATIC / "viewer.js").read_text(encoding="utf-8")

SCRIPT_PATH = "/static/viewer.js"
# versioned by content, so a browser never runs a stale copy after an upgrade
SCRIPT_URL = f"{SCRIPT_PATH}?v={hashlib.sha256(TOGGLE_JS.encode()).hexdigest()[:12]}"


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def unit_url(model: str, unit: str) -> str:
    return f"/unit/{quote(model, safe='')}/{unit}"


def dataset_url(name: str) -> str:
    return f"/dataset/{quote(name, safe='')}"


def fnum(x: Any, fmt: str = "+.3f") -> str:
    return "-" if x is None else format(x, fmt)


def score_html(value, lo=None, hi=None) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    ci = f' <span class="ci">[{lo:.2f}, {hi:.2f}]</span>' if lo is not None and hi is not None else ""
    return f"{value:+.3f}{ci}"


def layout(title: str, body: str, q: str = "") -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · autointerp</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body data-view="true"><header><a href="/">autointerp</a>
<form action="/search" method="get" role="search"><input type="search" name="q" id="q" value="{esc(q)}" placeholder="search explanations" size="32">
<button type="submit">search</button></form></header>
<main>{body}</main></body></html>"""


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """rows hold already-escaped HTML cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


POS_RGB = (255, 140, 0)    # positive activations: orange
NEG_RGB = (30, 136, 229)   # negative activations: blue
SIM_RGB = (46, 160, 67)    # simulated activations: green


def colour(v: float | None, vmax: float, rgb=POS_RGB) -> str:
    """A background for a value in [0, vmax] (alpha = v / vmax); '' for none or ~0."""
    if v is None or vmax <= 0:
        return ""
    a = max(0.0, min(1.0, v / vmax))
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.3f})" if a > 0.005 else ""


def act_colour(v: float | None, pos_max: float, neg_max: float) -> str:
    """Positive activations in orange scaled to the unit's max, negative ones in blue scaled to the
    largest negative magnitude shown (negative activations are often much smaller, e.g. GELU's >= -0.17)."""
    if v is None:
        return ""
    return colour(v, pos_max) if v >= 0 else colour(-v, neg_max, NEG_RGB)


def effect_colour(v: float, vmax: float) -> str:
    if vmax <= 0:
        return "#fff"
    a = max(-1.0, min(1.0, v / vmax))
    return f"rgba(211,47,47,{a:.3f})" if a >= 0 else f"rgba(25,118,210,{-a:.3f})"


# ---- pages ------------------------------------------------------------------------
def index_page(ov: dict, best: list[dict]) -> str:
    models = table(["model", "family", "layers", "d_mlp", "heads", "explained units", ""],
                   [[esc(m["id"]), esc(m["family"]), esc(m["n_layers"]), esc(m["d_mlp"]), esc(m["n_heads"]),
                     esc(m["explained_units"]),
                     f'<a href="/search?{esc(urlencode({"model": m["id"]}))}">best explanations</a>'] for m in ov["models"]])
    datasets = table(["dataset", "task", "source", "items", "patch runs"],
                     [[f'<a href="{esc(dataset_url(d["name"]))}">{esc(d["name"])}</a>', esc(d["task"]), esc(d["source"]),
                       esc(d["n_items"]), esc(d["runs"])] for d in ov["datasets"]]) if ov["datasets"] else \
        '<p class="muted">no datasets</p>'
    cals = ov.get("calibrations") or []
    cal_html = table(["LLM", "calibration", "scorer", "AUROC [95% CI]", "true / decoys / null"],
                     [[esc(c["llm"]), f"#{esc(c['id'])} {esc(c['created_at'])}", esc(k),
                       score_html(v["auroc"], v["low"], v["high"]).replace("+", ""),
                       f"{esc(v['n_true'])} / {esc(v['n_decoy'])} / {esc(v['n_null'])}"]
                      for c in cals for k, v in c["scorers"].items()]) if cals else \
        ('<p class="muted">none: the LLM scores in this store are uncalibrated (run <code>autointerp calibrate</code>)</p>')
    body = (f"<h1>autointerp store</h1><h2>models</h2>{models}<h2>datasets</h2>{datasets}"
            f"<h2>scorer calibration (planted units: AUROC of true vs decoy explanations; 0.5 = chance)</h2>{cal_html}"
            f"<h2>best-scored explanations</h2>{results_table(best)}")
    return layout("store", body)


def results_table(rows: list[dict]) -> str:
    if not rows:
        return '<p class="muted" id="no-results">no matches</p>'
    return table(["unit", "model", "layer", "score [ci]", "explainer", "explanation"],
                 [[f'<a class="unit-link" href="{esc(unit_url(r["model_id"], r["unit"]))}">{esc(r["unit"])}</a>',
                   esc(r["model_id"]), esc(r["layer"]), score_html(r["score"], r["ci_low"], r["ci_high"]),
                   esc(r["explainer"]), esc(r["text"])] for r in rows], cls="results")


def search_page(q: str, params: dict, rows: list[dict], models: list[str]) -> str:
    opts = "".join(f'<option value="{esc(m)}"{" selected" if params.get("model") == m else ""}>{esc(m)}</option>'
                   for m in models)
    form = (f'<form action="/search" method="get" id="search-form"><input type="search" name="q" value="{esc(q)}" size="40" '
            f'placeholder="e.g. day of the week"> min score <input name="min_score" size="5" value="{esc(params.get("min_score", ""))}"> '
            f'layer <input name="layer" size="3" value="{esc(params.get("layer", ""))}"> '
            f'model <select name="model"><option value="">any</option>{opts}</select> '
            f'<button type="submit">search</button></form>')
    title = f"search: {q}" if q else "search"
    return layout(title, f"<h1>{esc(title)}</h1>{form}<p class='muted'>{len(rows)} result(s)</p>{results_table(rows)}", q)


def record_html(r: dict, max_act: float, sim_max: float, head: bool, neg_max: float = 0.0) -> str:
    acts, sim, toks = r["acts"], r.get("sim"), r["tokens"]
    q = max(range(len(acts)), key=lambda i: acts[i]) if acts else -1
    spans = []
    for i, t in enumerate(toks):
        a = acts[i] if i < len(acts) else None
        s = sim[i] if sim and i < len(sim) else None
        ct, cs = act_colour(a, max_act, neg_max), colour(s, sim_max, SIM_RGB)
        tip = f"act {a:.3f}" if a is not None else "act -"
        if s is not None:
            tip += f" · sim {s:.3f}"
        style = f' style="background:{ct}"' if ct else ""
        spans.append(f'<span class="tok{" q" if head and i == q else ""}" data-t="{ct}" data-s="{cs}" '
                     f'title="{esc(tip)}"{style}>{esc(t)}</span>')
    label = f'{esc(r["kind"])} {esc(r["bin"])} · ctx {esc(r["ctx_idx"])} · max {r["max_act"]:.3f}'
    out = f'<div class="rec" data-record="{esc(r["id"])}"><span class="muted">{label}</span>\n{"".join(spans)}</div>'
    if head and r.get("extra"):
        att = r["extra"]
        amax = max(att) if att else 0
        aspans = "".join(f'<span class="tok attn{" q" if i == q else ""}" title="attention {w:.3f}" '
                         f'style="background:{colour(w, amax, (106, 27, 154)) or "transparent"}">{esc(toks[i] if i < len(toks) else "")}</span>'
                         for i, w in enumerate(att))
        out += f'<div class="rec attn-row"><span class="muted">attention from the outlined token</span>\n{aspans}</div>'
    return out


def sae_html(sae: dict, stats: dict | None) -> str:
    """An SAE latent's SAE (identity, hook points, sizes) and the latent's density in its run."""
    hook = esc(sae["hook"]) + (f" &rarr; {esc(sae['hook_out'])}" if sae.get("hook_out") else "")
    rows = [["name", esc(sae["name"])], ["id (content hash)", f"<code>{esc(sae['id'])}</code>"],
            ["architecture", esc(sae["architecture"])], ["hook point", hook],
            ["d_in / d_sae", f"{esc(sae['d_in'])} / {esc(sae['d_sae'])}"],
            ["normalisation", esc(sae.get("normalisation") or "none")], ["loaded from", esc(sae.get("path") or "-")]]
    fa = stats.get("frac_active") if stats else None
    if fa is None:
        dens = "<span class='muted'>not mined</span>"
    elif fa > 0:
        dens = f"<span id='density'>{fa:.3%}</span> of tokens (firing about once every {1 / fa:,.0f} tokens)"
    else:
        dens = "<span id='density'>0</span> <span class='muted'>(dead: never fired in its mining run)</span>"
    return ("<h2>density</h2><p>" + dens + "</p><h2>SAE</h2>"
            + table(["", ""], rows, cls="sae-info").replace("<thead><tr><th></th><th></th></tr></thead>", ""))


def unit_page(v: dict) -> str:
    model, unit, head = v["model_id"], v["unit"], v["kind"] == HEAD.name
    what = UNIT_KINDS[v["kind"]].noun if v["kind"] in UNIT_KINDS else v["kind"]
    sae = v.get("sae")
    of = f" of SAE {esc(sae['name'])}" if sae else ""
    parts = [f"<h1>{esc(unit)} <span class='muted'>· {esc(model)} · layer {esc(v['layer'])} "
             f"{what} {esc(v['index'])}{of}</span></h1>"]

    def value_cell(s: dict) -> str:
        if s.get("value") is None and s.get("reason"):
            return f"<span class='muted'>null: {esc(s['reason'])}</span>"
        return score_html(s["value"], s["ci_low"], s["ci_high"])

    def expl_block(e: dict, cls: str) -> str:
        sc = "".join(f"<tr><td>{esc(s['kind'])}</td><td class='num'>{value_cell(s)}</td>"
                     f"<td class='num'>{score_html(s.get('control'))}</td>"
                     f"<td class='num'>{score_html(s.get('margin'), s.get('margin_low'), s.get('margin_high'))}</td>"
                     f"<td class='num'>{esc(s['n'])}</td><td>{esc(s['scorer'])}</td></tr>" for s in e["scores"])
        sc_t = (f"<table><thead><tr><th>score</th><th>value [ci]</th><th>control</th><th>margin [ci]</th><th>n</th>"
                f"<th>scorer</th></tr></thead><tbody>{sc}</tbody></table>"
                if sc else "<p class='muted'>not scored</p>")
        return (f"<div class='{cls}' data-explanation='{esc(e['id'])}'><p class='expl'>{esc(e['text'])}</p>"
                f"<p class='muted'>{esc(e['explainer'])} · {esc(e['method'])} · {esc(e['created_at'])}</p>{sc_t}</div>")

    if sae:
        parts.append(sae_html(sae, v["stats"]))
    parts.append("<h2>explanations</h2>")
    parts += [expl_block(e, "explanation") for e in v["explanations"]] or ["<p class='muted'>no LLM explanation yet</p>"]
    parts.append("<h2>baseline</h2>")
    parts += [expl_block(e, "baseline") for e in v["baselines"]] or ["<p class='muted'>no baseline</p>"]
    if v["promoted"] or v["suppressed"]:
        def pills(xs):
            return "".join(f"<span class='pill' title='{esc(fnum(w))}'>{esc(t)}</span>" for t, w in xs[:20])
        parts.append(f"<h2>logit effect</h2><p>promoted: <span id='promoted'>{pills(v['promoted'])}</span></p>"
                     f"<p>suppressed: <span id='suppressed'>{pills(v['suppressed'])}</span></p>")
    if v["head_scores"]:
        parts.append("<h2>head detectors</h2>" + table(["detector", "score"], [[esc(h["detector"]), f"<span class='num'>{h['score']:.3f}</span>"]
                                                                            for h in v["head_scores"]], cls="head-scores"))
    st = v["stats"]
    if st:
        parts.append(f"<p class='muted'>max act {fnum(st['max_act'], '.3f')} · mean {fnum(st['mean_act'], '.3f')} · "
                     f"std {fnum(st['std_act'], '.3f')} · active {fnum(st['frac_active'], '.2%')}</p>")
    recs = v["records"]
    has_sim = any(r.get("sim") for r in recs)
    sim_max = max([max(r["sim"]) for r in recs if r.get("sim")] + [0.0])
    toggle = ('<button id="toggle" type="button">show simulated activations</button> '
              "<span class='muted'>(simulated by the best-scored explanation)</span>") if has_sim else \
        "<span class='muted'>no simulated activations stored</span>"
    neg_max = max([-min(r["acts"]) for r in recs if r["acts"]] + [0.0])
    legend = (f"<p class='legend muted'><span class='sw' style='background:rgb{POS_RGB}'></span>positive "
              f"(to {fnum(v['max_act'], '.3f')})")
    if neg_max > 0:
        legend += (f"<span class='sw' style='background:rgb{NEG_RGB}'></span>negative "
                   f"(to {fnum(-neg_max, '.3f')})")
    if has_sim:
        legend += f"<span class='sw' style='background:rgb{SIM_RGB}'></span>simulated"
    legend += "</p>"
    parts.append(f"<h2>records <span class='muted'>({len(recs)} of {v['n_records']})</span></h2><p>{toggle}</p>")
    if recs:
        parts.append(legend)
        parts += [record_html(r, v["max_act"], sim_max, head, neg_max) for r in recs]
    else:
        parts.append("<p class='muted'>not mined</p>")
    if v["patching"]:
        parts.append("<h2>patching effects</h2>" + table(
            ["dataset", "run", "position", "effect"],
            [[f'<a href="{esc(dataset_url(p["dataset"]))}">{esc(p["dataset"])}</a>', esc(f"{p['what']} / {p['method']}"),
              esc("all" if p["position"] in (None, -1) else p["position"]), f"<span class='num'>{p['effect']:+.3f}</span>"]
             for p in v["patching"]]))
    parts.append(f'<script src="{SCRIPT_URL}" defer></script>')
    return layout(f"{unit} · {model}", "".join(parts))


def heatmap(run: dict, model: str, max_cols: int = 64) -> str:
    res = run["results"]
    if not res:
        return "<p class='muted'>no results</p>"
    vmax = max(abs(r["effect"]) for r in res) or 1.0
    all_pos = all(r["position"] in (None, -1) for r in res)
    units = all(UNIT_RE.match(r["component"]) for r in res)
    cells: dict[tuple, dict] = {}
    if all_pos and units:
        for r in res:
            m = UNIT_RE.match(r["component"])
            cells[(int(m.group(1)), f"{m.group(2)}{m.group(3)}")] = r
        rows = sorted({k[0] for k in cells})
        cols = sorted({k[1] for k in cells}, key=lambda c: (c[0], int(c[1:])))
        row_label = lambda x: f"L{x}"  # noqa: E731
    elif all_pos:
        for r in res:
            cells[(r["component"], "effect")] = r
        rows, cols = list(dict.fromkeys(r["component"] for r in res)), ["effect"]
        row_label = str
    else:
        for r in res:
            cells[(r["component"], r["position"])] = r
        rows = list(dict.fromkeys(r["component"] for r in res))
        cols = sorted({k[1] for k in cells}, key=lambda p: (p is None or p < 0, p))
        row_label = str
    if len(cols) > max_cols:  # too wide for a grid (e.g. thousands of neurons): the strongest ones as a list
        top = sorted(res, key=lambda r: -abs(r["effect"]))[:40]
        return table(["component", "position", "effect"],
                     [[_comp_link(r["component"], model), esc("all" if r["position"] in (None, -1) else r["position"]),
                       f"<span style='background:{effect_colour(r['effect'], vmax)}'>{r['effect']:+.3f}</span>"] for r in top],
                     cls="hm-list")
    head = "<th></th>" + "".join(f"<th>{esc('all' if c in (None, -1) else c)}</th>" for c in cols)
    body = []
    for row in rows:
        tds = []
        for c in cols:
            r = cells.get((row, c))
            if r is None:
                tds.append("<td></td>")
                continue
            inner = f"{r['effect']:+.2f}"
            if UNIT_RE.match(r["component"]):
                inner = f'<a href="{esc(unit_url(model, r["component"]))}">{inner}</a>'
            tds.append(f"<td style='background:{effect_colour(r['effect'], vmax)}' "
                       f"title='{esc(r['component'])} pos {esc(r['position'])}: {r['effect']:+.4f}'>{inner}</td>")
        body.append(f"<tr><th>{esc(row_label(row))}</th>{''.join(tds)}</tr>")
    return (f"<div class='wide'><table class='hm' data-run='{esc(run['id'])}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _comp_link(component: str, model: str) -> str:
    if UNIT_RE.match(component):
        return f'<a class="unit-link" href="{esc(unit_url(model, component))}">{esc(component)}</a>'
    return esc(component)


def dataset_page(v: dict) -> str:
    d = v["dataset"]
    parts = [f"<h1>dataset {esc(d['name'])}</h1>",
             f"<p class='muted'>task {esc(d.get('task'))} · source {esc(d.get('source'))} · {esc(d.get('n_items'))} items · "
             f"model {esc(d.get('model_id'))}</p>"]
    if v["pairs"]:
        parts.append("<h2>pairs (first 5)</h2>" + table(
            ["clean", "corrupt", "answer", "wrong"],
            [[esc(p["clean"]), esc(p["corrupt"]), esc(p["answer"]), esc(p["wrong"])] for p in v["pairs"]]))
    parts.append("<h2>top components</h2>")
    if v["top"]:
        parts.append(table(["component", "effect", "run", "score [ci]", "explanation"],
                           [[_comp_link(r["unit"], r["model_id"]), f"<span class='num'>{r['effect']:+.3f}</span>",
                             esc(f"{r['what']} / {r['method']}"), score_html(r["score"], r["ci_low"], r["ci_high"]),
                             esc(r["explanation"]) if r["explanation"] else "<span class='muted'>not explained</span>"]
                            for r in v["top"]], cls="top-components"))
    else:
        parts.append("<p class='muted'>no unit-level results</p>")
    for run in v["runs"]:
        cld = f" · clean {run['clean_logit_diff']:+.3f} / corrupt {run['corrupt_logit_diff']:+.3f}" \
            if run.get("clean_logit_diff") is not None and run.get("corrupt_logit_diff") is not None else ""
        parts.append(f"<h2>run {esc(run['id'])}: {esc(run['what'])} · {esc(run['method'])} · {esc(run['direction'])} "
                     f"<span class='muted'>{esc(run['model_id'])}{esc(cld)}</span></h2>")
        parts.append(heatmap(run, run["model_id"]))
    return layout(f"dataset {d['name']}", "".join(parts))


def error_page(status: int, message: str) -> str:
    return layout(f"{status}", f"<h1>{status}</h1><p id='error'>{esc(message)}</p><p><a href='/'>back to the store</a></p>")
