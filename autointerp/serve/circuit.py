"""The viewer's circuit page: a stored edge-level circuit (`autointerp circuit`): the circuit
drawn as an inline SVG graph, its faithfulness-vs-edges curve and its edges, head nodes linked
to their unit pages. Everything from the store is escaped.

The graph (no script, no external assets): one row per layer that has a node, from the input
embeddings at the bottom to the logits at the top; in a row, heads by head index and the MLP
last, in fixed columns, so one head stays in one column. One node per head / MLP / embed /
logits that an edge of the circuit touches. Edges run from the sender's top to the receiver's
bottom, into a head at its q, k or v port (left, middle, right, each labelled); stroke width and
opacity scale with |score| (the largest drawn = widest), blue for a negative score (patching the
edge lowers the logit difference: it carries the behaviour), red for a positive one. At most
MAX_DRAWN edges are drawn, the circuit's first by rank; the caption says when more exist."""

from __future__ import annotations

import re

from ..core.units import HEAD, Unit
from ..errors import UnitError
from .pages import dataset_url, esc, fnum, layout, table, unit_url

MAX_DRAWN = 100
NEG, POS, NONE = "#1565c0", "#c62828", "#9e9e9e"     # score < 0 (carries the behaviour), > 0, unscored
_MLP_RE = re.compile(r"^blocks\.(\d+)\.mlp\.out$")
_W, _H, _COL, _ROW, _PAD = 64, 22, 78, 70, 24       # node box, column and row pitch, margin (px)
_PORTS = {"q": -_W / 3, "k": 0.0, "v": _W / 3}


def _node(name: str, model: str) -> str:
    base, sep, ch = name.partition(":")
    if Unit.is_id(base):
        return f'<a href="{esc(unit_url(model, base))}">{esc(base)}</a>' + (f":{esc(ch)}" if sep else "")
    return esc(name)


def _place(name: str) -> tuple[float, int, str] | None:
    """(row key, column, label) of a node: embed -1, layer L, logits +inf; None if unknown."""
    if name == "embed":
        return -1.0, -1, "embed"
    if name == "logits":
        return float("inf"), -1, "logits"
    m = _MLP_RE.match(name)
    if m:
        return float(m.group(1)), 10**6, f"MLP {m.group(1)}"
    if Unit.is_id(name):
        try:
            u = Unit.parse(name)
        except UnitError:
            return None
        if u.record is HEAD:
            return float(u.layer), u.index, name
    return None


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def circuit_svg(edges: list[dict], model: str, max_drawn: int = MAX_DRAWN) -> str:
    """The circuit's edges ({sender, receiver, score, edge}, most important first) as an SVG graph
    with a caption; '' if there is nothing to draw."""
    drawn, skipped = [], 0
    for e in edges[:max_drawn]:
        base, _, ch = str(e["receiver"]).partition(":")
        s, r = _place(str(e["sender"])), _place(base)
        if s is None or r is None or (ch and ch not in _PORTS):
            skipped += 1
            continue
        drawn.append((e, str(e["sender"]), base, ch, s, r))
    if not drawn:
        return ""
    nodes: dict[str, tuple[float, int, str]] = {}
    for _, sn, rn, _, s, r in drawn:
        nodes.setdefault(sn, s)
        nodes.setdefault(rn, r)
    rows = sorted({p[0] for p in nodes.values()})
    cols = sorted({p[1] for p in nodes.values() if p[1] >= 0})
    n_cols = max(1, len(cols))
    width = 2 * _PAD + n_cols * _COL
    height = 2 * _PAD + (len(rows) - 1) * _ROW + _H + 14
    xy: dict[str, tuple[float, float]] = {}
    for n, (row, col, _) in nodes.items():
        x = _PAD + (cols.index(col) + 0.5) * _COL if col >= 0 else width / 2
        y = _PAD + 14 + (len(rows) - 1 - rows.index(row)) * _ROW      # the box's top; embed lowest
        xy[n] = (x, y)
    vmax = max((abs(e["score"]) for e, *_ in drawn if e.get("score") is not None), default=0.0) or 1.0
    paths, ports = [], set()
    for e, sn, rn, ch, _, _ in reversed(drawn):      # the most important edge painted last, on top
        (sx, sy), (rx, ry) = xy[sn], xy[rn]
        x1, y1 = sx, sy
        x2, y2 = rx + _PORTS.get(ch, 0.0), ry + _H
        if ch:
            ports.add((rn, ch))
        sc = e.get("score")
        a = 0.0 if sc is None else min(1.0, abs(sc) / vmax)
        colour = NONE if sc is None else (NEG if sc < 0 else POS)
        if abs(sy - ry) < 1:      # same row (a head into its own layer's MLP): an arc above
            d = f"M{_num(x1)},{_num(y1)} C{_num(x1)},{_num(y1 - 40)} {_num(x2)},{_num(y1 - 40)} {_num(x2)},{_num(ry)}"
        else:
            my = (y1 + y2) / 2
            d = f"M{_num(x1)},{_num(y1)} C{_num(x1)},{_num(my)} {_num(x2)},{_num(my)} {_num(x2)},{_num(y2)}"
        name = e.get("edge") or f"{sn} -> {e['receiver']}"
        title = f"{name}  score {fnum(sc, '+.4f')}"
        paths.append(f'<path class="edge" d="{d}" fill="none" stroke="{colour}" stroke-width="{0.6 + 3.4 * a:.2f}" '
                     f'stroke-opacity="{0.3 + 0.65 * a:.2f}" data-edge="{esc(e.get("edge") or "")}" '
                     f'data-sender="{esc(sn)}" data-receiver="{esc(rn)}" data-channel="{esc(ch)}" '
                     f'data-score="{esc(sc)}"><title>{esc(title)}</title></path>')
    boxes = []
    for n, (_, _, label) in nodes.items():
        x, y = xy[n]
        w = _W if label not in ("embed", "logits") else _W + 16
        box = (f'<rect x="{_num(x - w / 2)}" y="{_num(y)}" width="{w}" height="{_H}" rx="4" fill="#eceff1" '
               f'stroke="#546e7a"/><text x="{_num(x)}" y="{_num(y + 15)}" text-anchor="middle" font-size="11" '
               f'font-family="ui-monospace,monospace">{esc(label)}</text><title>{esc(n)}</title>')
        if Unit.is_id(n):
            boxes.append(f'<a class="node" data-node="{esc(n)}" href="{esc(unit_url(model, n))}">{box}</a>')
        else:
            boxes.append(f'<g class="node" data-node="{esc(n)}">{box}</g>')
    labels = [f'<text class="port" x="{_num(xy[n][0] + _PORTS[c])}" y="{_num(xy[n][1] + _H + 10)}" '
              f'text-anchor="middle" font-size="9" fill="#37474f" data-node="{esc(n)}">{esc(c)}</text>'
              for n, c in sorted(ports)]
    svg = (f'<svg class="circuit-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(width)} '
           f'{_num(height)}" width="{_num(width)}" height="{_num(height)}" role="img" '
           f'aria-label="circuit graph">{"".join(paths)}{"".join(boxes)}{"".join(labels)}</svg>')
    shown = len(drawn)
    more = (f"; the first {min(len(edges), max_drawn)} of {len(edges)} edges by rank are drawn"
            if len(edges) > max_drawn else "")
    bad = f"; {skipped} with a node this page cannot place left out" if skipped else ""
    cap = (f"{shown} edges between {len(nodes)} nodes{more}{bad}. Embed at the bottom, logits at the top; into a "
           f"head at its q / k / v port. Width and opacity: |score|; "
           f'<span style="color:{NEG}">blue</span>: negative score (patching the edge lowers the logit '
           f'difference), <span style="color:{POS}">red</span>: positive. Heads link to their pages.')
    return f'<figure class="wide">{svg}<figcaption class="muted">{cap}</figcaption></figure>'


def circuit_page(row: dict) -> str:
    model = row["model_id"]
    edges = [e for e in row["edges"] if e["in_circuit"]]
    abl = row.get("ablation") or "corrupt"
    base = (row.get("settings") or {}).get("baseline_logit_diff")
    head = (f'<p class="muted">circuit {esc(row["id"])} · {esc(row["method"])} · {esc(abl)} ablation · dataset '
            f'<a href="{esc(dataset_url(row["dataset"]))}">{esc(row["dataset"])}</a> · model {esc(model)} · '
            f'{esc(row["n_items"])} items</p>')
    fa = row.get("faithfulness")
    summary = (f"<p>{len(edges)} of {esc(row['n_edges_total'])} edges; faithfulness "
               f"<b>{'-' if fa is None else esc(f'{fa:.3f}')}</b>"
               + (f" (target {esc(row['target'])})" if row.get("target") else "")
               + f", edges outside it patched to their {esc(abl)} values"
               + f"; logit diff clean {fnum(row['clean_logit_diff'], '.3f')}, corrupt "
                 f"{fnum(row['corrupt_logit_diff'], '.3f')}"
               + (f", every edge mean-ablated {fnum(base, '.3f')}" if abl == "mean" else "") + "</p>")
    graph = circuit_svg(edges, model)
    curve = table(["edges kept", "faithfulness"], [[esc(k), fnum(f, ".3f")] for k, f in row.get("curve", [])])
    rows = [[esc(e["rank"]), _node(e["sender"], model), _node(e["receiver"], model), fnum(e["score"], "+.4f")]
            for e in edges]
    body = (head + f"<h1>circuit: {esc(row['dataset'])}</h1>" + summary
            + (f"<h2>graph</h2>{graph}" if graph else "") + "<h2>faithfulness vs edges</h2>" + curve
            + "<h2>edges</h2>" + table(["rank", "sender", "receiver", "score"], rows))
    return layout(f"circuit {row['id']}", body)
