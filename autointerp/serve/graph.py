"""The viewer's attribution-graph page (`/graph/<id>`, graphs stored by `autointerp graph`): the
pruned graph drawn as an inline SVG (no script, no external assets), its scores, the completeness
identity, the intervention check, and a table of its latent nodes with their explanations and
scores, each linked to its unit page. Everything from the store is escaped.

Layout: one column per prompt position (the token under it), one row per layer, the embeddings at
the bottom and the target logits at the top (at the last position). In a cell, a layer's latent
nodes (circles) side by side and its error node (a square) last. Edges run from source to target;
width and opacity scale with |weight| (the largest drawn = widest), red for a positive direct
effect, blue for a negative one (core/palette.py's convention). Rendered by templates/graph.html. At most MAX_DRAWN edges are drawn, the largest first."""

from __future__ import annotations

from ..core.palette import NEG_HEX as NEG, POS_HEX as POS, sign_hex
from .render import render, unit_url

MAX_DRAWN = 300
_COL, _ROW, _PAD, _R, _SLOT = 120, 64, 30, 6, 15


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def graph_svg(g: dict) -> dict:
    """The geometry of the kept nodes and edges (drawn by templates/graph.html), with the number of
    edges drawn."""
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
    lines = []
    for e in reversed(edges):
        (x1, y1), (x2, y2) = xy[e["source"]], xy[e["target"]]
        a = min(1.0, abs(e["weight"]) / vmax)
        s, t = nodes[e["source"]], nodes[e["target"]]
        lines.append({"x1": _num(x1), "y1": _num(y1), "x2": _num(x2), "y2": _num(y2),
                      "stroke": POS if e["weight"] > 0 else NEG if e["weight"] < 0 else sign_hex(None),
                      "width": f"{0.5 + 3.5 * a:.2f}", "opacity": f"{0.25 + 0.7 * a:.2f}", "source": e["source"],
                      "target": e["target"], "weight": f"{e['weight']:.6g}",
                      "title": f"{_label(s)} -> {_label(t)}  weight {e['weight']:+.4g}"})
    marks = []
    for j, n in nodes.items():
        x, y = xy[j]
        title = (_label(n) + (f"  influence {n['influence']:.4f}" if n.get("influence") is not None else "")
                 + (f"  act {n['activation']:.3f}" if n.get("activation") is not None else "")
                 + (f"  {n['explanation']}" if n.get("explanation") else ""))
        marks.append({"idx": j, "kind": n["kind"], "unit": n.get("unit"), "title": title, "x": _num(x), "y": _num(y),
                      "rx": _num(x - _R), "ry": _num(y - _R), "r": _R, "side": 2 * _R,
                      "href": unit_url(g["model"], n["unit"]) if n["kind"] == "latent" else None,
                      "fill": {"error": "#cfd8dc", "embedding": "#e8f5e9", "logit": "#e3f2fd"}.get(n["kind"], "#ffb74d")})
    tok_labels = [{"x": _num(_PAD + (p + 0.5) * _COL), "y": _num(height - 8), "text": repr(tok)}
                  for p, tok in enumerate(tokens)]
    row_labels = [{"y": _num(_PAD + (len(rows) - 1 - rows.index(r)) * _ROW + 14),
                   "text": "emb" if r == -1 else "logit" if r == top else f"L{r}"} for r in rows]
    return {"width": _num(width), "height": _num(height), "lines": lines, "marks": marks, "tok_labels": tok_labels,
            "row_labels": row_labels, "drawn": len(edges)}


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
    d = g["data"]
    lat = sorted((n for n in g["nodes"] if n["kind"] == "latent" and n["kept"]), key=lambda n: -(n["influence"] or 0))
    return render("graph.html", title=f"graph {g['id']}", g=g, d=d, model=g["model"], svg=graph_svg(g),
                  n_kept_edges=len(g["edges"]), c=d.get("completeness") or {}, v=g.get("validation"),
                  targets=[{"token": repr(t["token"]), "prob": t["prob"]} for t in d.get("logits") or []],
                  latents=[dict(n, token_repr=repr(n["token"])) for n in lat], pos=POS, neg=NEG,
                  target_repr=repr(g["target"]))
