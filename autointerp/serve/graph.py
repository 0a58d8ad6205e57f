"""The viewer's attribution-graph page (`/graph/<id>`, graphs stored by `autointerp graph`): the
pruned graph drawn as an inline SVG (no script, no external assets), its scores, the completeness
identity, the intervention check, and a table of its latent nodes with their explanations and
scores, each linked to its unit page. Everything from the store is escaped.

Layout: one column per prompt position (the token under it), one row per layer, the embeddings at
the bottom and the target logits at the top (at the last position). In a cell, a layer's latent
nodes (circles) side by side and its error node (a square) last. Edges run from source to target;
width and opacity scale with |weight| (the largest drawn = widest), red for a positive direct
effect, blue for a negative one. At most MAX_DRAWN edges are drawn, the largest first."""

from __future__ import annotations

from .pages import esc, fnum, layout, table, unit_url

MAX_DRAWN = 300
POS, NEG = "#c62828", "#1565c0"
_COL, _ROW, _PAD, _R, _SLOT = 120, 64, 30, 6, 15


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def graph_svg(g: dict) -> tuple[str, int]:
    """(the SVG of the kept nodes and edges, the number of edges drawn)."""
    nodes = {n["idx"]: n for n in g["nodes"] if n["kept"]}
    tokens = g["data"].get("tokens") or []
    P = max(1, len(tokens))
    layers = sorted({n["layer"] for n in nodes.values() if n["kind"] in ("latent", "error")})
    top = max(layers, default=0) + 1
    rows = [-1] + layers + [top]            # embeddings, layers, logits
    cells: dict[tuple[int, int], list[int]] = {}
    for j, n in sorted(nodes.items(), key=lambda kv: (kv[1]["kind"] == "error", kv[0])):
        row = -1 if n["kind"] == "embedding" else top if n["kind"] == "logit" else n["layer"]
        cells.setdefault((row, n["pos"]), []).append(j)
    width = 2 * _PAD + P * _COL
    height = 2 * _PAD + (len(rows) - 1) * _ROW + 40
    xy: dict[int, tuple[float, float]] = {}
    for (row, pos), js in cells.items():
        y = _PAD + (len(rows) - 1 - rows.index(row)) * _ROW + 10
        n_slots = min(len(js), _COL // _SLOT - 1)
        for k, j in enumerate(js):
            x = _PAD + (pos + 0.5) * _COL + ((k % n_slots) - (n_slots - 1) / 2) * _SLOT
            xy[j] = (x, y + (k // n_slots) * 4)
    edges = [e for e in g["edges"] if e["source"] in xy and e["target"] in xy][:MAX_DRAWN]
    vmax = max((abs(e["weight"]) for e in edges), default=0.0) or 1.0
    paths = []
    for e in reversed(edges):
        (x1, y1), (x2, y2) = xy[e["source"]], xy[e["target"]]
        a = min(1.0, abs(e["weight"]) / vmax)
        colour = POS if e["weight"] > 0 else NEG
        s, t = nodes[e["source"]], nodes[e["target"]]
        title = f"{_label(s)} -> {_label(t)}  weight {e['weight']:+.4g}"
        paths.append(f'<line class="edge" x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
                     f'stroke="{colour}" stroke-width="{0.5 + 3.5 * a:.2f}" stroke-opacity="{0.25 + 0.7 * a:.2f}" '
                     f'data-source="{e["source"]}" data-target="{e["target"]}" data-weight="{e["weight"]:.6g}">'
                     f'<title>{esc(title)}</title></line>')
    marks = []
    for j, n in nodes.items():
        x, y = xy[j]
        title = esc(_label(n) + (f"  influence {n['influence']:.4f}" if n.get("influence") is not None else "")
                    + (f"  act {n['activation']:.3f}" if n.get("activation") is not None else "")
                    + (f"  {n['explanation']}" if n.get("explanation") else ""))
        if n["kind"] == "latent":
            shape = f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_R}" fill="#ffb74d" stroke="#e65100"/>'
            marks.append(f'<a class="node latent" data-node="{j}" data-unit="{esc(n["unit"])}" '
                         f'href="{esc(unit_url(g["model"], n["unit"]))}">{shape}<title>{title}</title></a>')
        else:
            fill = {"error": "#cfd8dc", "embedding": "#e8f5e9", "logit": "#e3f2fd"}[n["kind"]]
            shape = (f'<rect x="{_num(x - _R)}" y="{_num(y - _R)}" width="{2 * _R}" height="{2 * _R}" fill="{fill}" '
                     f'stroke="#546e7a"/>')
            marks.append(f'<g class="node {n["kind"]}" data-node="{j}">{shape}<title>{title}</title></g>')
    labels = []
    for p, tok in enumerate(tokens):
        labels.append(f'<text x="{_num(_PAD + (p + 0.5) * _COL)}" y="{_num(height - 8)}" text-anchor="middle" '
                      f'font-size="11" font-family="ui-monospace,monospace">{esc(repr(tok))}</text>')
    for r in rows:
        y = _PAD + (len(rows) - 1 - rows.index(r)) * _ROW + 14
        lab = "emb" if r == -1 else "logit" if r == top else f"L{r}"
        labels.append(f'<text x="4" y="{_num(y)}" font-size="10" fill="#607d8b">{lab}</text>')
    svg = (f'<svg class="attribution-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(width)} '
           f'{_num(height)}" width="{_num(width)}" height="{_num(height)}" role="img" aria-label="attribution graph">'
           f'{"".join(paths)}{"".join(marks)}{"".join(labels)}</svg>')
    return svg, len(edges)


def _label(n: dict) -> str:
    k = n["kind"]
    if k == "latent":
        return f"{n['unit']} at {n['pos']}"
    if k == "error":
        return f"error L{n['layer']} at {n['pos']}"
    if k == "embedding":
        return f"embedding {n['token']!r} at {n['pos']}"
    return f"logit {n['token']!r}"


def graph_page(g: dict) -> str:
    """g: Store.get_graph's row, each latent node optionally with explanation / score / control / margin."""
    d, model = g["data"], g["model"]
    svg, drawn = graph_svg(g)
    n_kept_edges = len(g["edges"])
    c = d.get("completeness") or {}
    head = (f'<p class="muted">graph {esc(g["id"])} · model {esc(model)} · transcoders {esc(g["transcoder_set"])} · '
            f'{esc(len(d.get("tokens") or []))} tokens</p><h1>attribution graph: {esc(g["prompt"])}</h1>')
    targets = ", ".join(f"{esc(repr(t['token']))} p={t['prob']:.3f}" for t in d.get("logits") or [])
    summary = (f"<p>targets: {targets}</p>"
               f"<p>{esc(g['n_nodes'])} nodes and {esc(n_kept_edges)} edges kept ({100 * g['node_share']:.0f}% of node "
               f"influence, {100 * g['edge_share']:.0f}% of edge influence); replacement score "
               f"<b>{fnum(g['replacement_score'], '.3f')}</b>, completeness score "
               f"<b>{fnum(g['completeness_score'], '.3f')}</b> (circuit-tracer's definitions)</p>"
               f"<p>completeness identity for {esc(repr(g['target']))}: raw logit {g['raw_logit']:.4f} = bias terms "
               f"{g['bias_terms']:.4f} + {esc(len(c.get('contributions') or []))} direct contributions "
               f"{fnum(c.get('sum_of_contributions'), '.4f')} (relative error {g['completeness_error']:.1e})</p>")
    v = g.get("validation")
    val = ""
    if v:
        corr = (f"<b>{v['correlation']:.3f}</b>" if v.get("correlation") is not None
                else f'null <span class="muted">({esc(v.get("correlation_reason"))})</span>')
        val = (f"<h2>intervention check</h2><p>{esc(v['k'])} latents ablated in the real model (transcoder splice with "
               f"the error term): correlation of predicted and observed changes of the target logit {corr}, MAE "
               f"{fnum(v.get('mae'), '.4g')} (mean |observed| {fnum(v.get('mean_abs_observed'), '.4g')})</p>"
               + table(["latent", "position", "predicted", "observed"],
                       [[f'<a href="{esc(unit_url(model, r["unit"]))}">{esc(r["unit"])}</a>', esc(r["pos"]),
                         fnum(r["predicted"], "+.4g"), fnum(r["observed"], "+.4g")] for r in v["latents"]]))
    lat = sorted((n for n in g["nodes"] if n["kind"] == "latent" and n["kept"]), key=lambda n: -(n["influence"] or 0))
    rows = [[f'<a href="{esc(unit_url(model, n["unit"]))}">{esc(n["unit"])}</a>', esc(n["pos"]), esc(repr(n["token"])),
             fnum(n["activation"], ".3f"), fnum(n["influence"], ".4f"), esc(n.get("explanation") or "-"),
             fnum(n.get("score"), "+.3f"), fnum(n.get("control"), "+.3f"), fnum(n.get("margin"), "+.3f")]
            for n in lat]
    cap = (f'<figcaption class="muted">{drawn} of {n_kept_edges} kept edges drawn (largest |weight| first). Columns: '
           f'positions; rows: embeddings (bottom), layers, target logits (top). Circles: latents (link to their unit '
           f'pages), squares: error, embedding and logit nodes. <span style="color:{POS}">red</span>: positive direct '
           f'effect, <span style="color:{NEG}">blue</span>: negative; width and opacity: |weight|.</figcaption>')
    body = (head + summary + f'<h2>graph</h2><figure class="wide">{svg}{cap}</figure>' + val
            + "<h2>latent nodes</h2>"
            + table(["latent", "pos", "token", "activation", "influence", "explanation", "score", "control", "margin"],
                    rows))
    return layout(f"graph {g['id']}", body)


def with_explanations(store, g: dict) -> dict:
    """g with each kept latent node's newest explanation (an LLM's before the baseline's) and its
    first score's value, control and margin, from the store."""
    for n in g["nodes"]:
        if n["kind"] != "latent" or not n["kept"]:
            continue
        ex = store.explanations_for(g["model"], n["unit"])
        if not ex:
            continue
        e = sorted(ex, key=lambda e: e["explainer"] == "baseline")[0]
        n["explanation"] = e["text"]
        sc = store.scores_for(e["id"], details=False)
        if sc:
            s = sc[0]
            n.update(score=s["value"], control=s.get("control"), margin=s.get("margin"), score_kind=s["kind"])
    return g
