"""The viewer's circuit page: a stored edge-level circuit (`autointerp circuit`): the circuit
drawn as an inline SVG graph, its faithfulness-vs-edges curve and its edges, head nodes linked
to their unit pages. Everything from the store is escaped.

The graph (no script, no external assets): one row per layer that has a node, from the input
embeddings at the bottom to the logits at the top; in a row, heads by head index and the MLP
last, in fixed columns, so one head stays in one column. One node per head / MLP / embed /
logits that an edge of the circuit touches. Edges run from the sender's top to the receiver's
bottom, into a head at its q, k or v port (left, middle, right, each labelled); stroke width and
opacity scale with |score| (the largest drawn = widest), blue for a negative score (patching the
edge lowers the logit difference: it carries the behaviour), red for a positive one: the
sign colours of core/palette.py, shared with the investigation report's circuit figure. At most
MAX_DRAWN edges are drawn, the circuit's first by rank; the caption says when more exist."""

from __future__ import annotations

import re

from ..core.units import HEAD, Unit
from ..errors import UnitError
from ..core.palette import NEG_HEX as NEG, POS_HEX as POS, sign_hex
from .render import fnum, render, unit_url

MAX_DRAWN = 100
_MLP_RE = re.compile(r"^blocks\.(\d+)\.mlp\.out$")
_W, _H, _COL, _ROW, _PAD = 64, 22, 78, 70, 24       # node box, column and row pitch, margin (px)
_PORTS = {"q": -_W / 3, "k": 0.0, "v": _W / 3}


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


def circuit_svg(edges: list[dict], model: str, max_drawn: int = MAX_DRAWN) -> dict | None:
    """The geometry of the circuit's edges ({sender, receiver, score, edge}, most important first)
    as an SVG graph with a caption (drawn by templates/circuit.html); None if nothing can be drawn."""
    drawn, skipped = [], 0
    for e in edges[:max_drawn]:
        base, _, ch = str(e["receiver"]).partition(":")
        s, r = _place(str(e["sender"])), _place(base)
        if s is None or r is None or (ch and ch not in _PORTS):
            skipped += 1
            continue
        drawn.append((e, str(e["sender"]), base, ch, s, r))
    if not drawn:
        return None
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
        if abs(sy - ry) < 1:      # same row (a head into its own layer's MLP): an arc above
            d = f"M{_num(x1)},{_num(y1)} C{_num(x1)},{_num(y1 - 40)} {_num(x2)},{_num(y1 - 40)} {_num(x2)},{_num(ry)}"
        else:
            my = (y1 + y2) / 2
            d = f"M{_num(x1)},{_num(y1)} C{_num(x1)},{_num(my)} {_num(x2)},{_num(my)} {_num(x2)},{_num(y2)}"
        name = e.get("edge") or f"{sn} -> {e['receiver']}"
        paths.append({"d": d, "stroke": sign_hex(sc), "width": f"{0.6 + 3.4 * a:.2f}", "opacity": f"{0.3 + 0.65 * a:.2f}",
                      "edge": e.get("edge") or "", "sender": sn, "receiver": rn, "channel": ch,
                      "score": "" if sc is None else sc, "title": f"{name}  score {fnum(sc, '+.4f')}"})
    boxes = []
    for n, (_, _, label) in nodes.items():
        x, y = xy[n]
        w = _W if label not in ("embed", "logits") else _W + 16
        boxes.append({"name": n, "label": label, "x": _num(x - w / 2), "y": _num(y), "w": w, "h": _H,
                      "tx": _num(x), "ty": _num(y + 15), "href": unit_url(model, n) if Unit.is_id(n) else None})
    labels = [{"x": _num(xy[n][0] + _PORTS[c]), "y": _num(xy[n][1] + _H + 10), "node": n, "port": c}
              for n, c in sorted(ports)]
    return {"width": _num(width), "height": _num(height), "paths": paths, "boxes": boxes, "labels": labels,
            "shown": len(drawn), "n_nodes": len(nodes), "n_edges": len(edges), "max_drawn": max_drawn,
            "skipped": skipped, "neg": NEG, "pos": POS}


def circuit_page(row: dict) -> str:
    model = row["model_id"]
    edges = [e for e in row["edges"] if e["in_circuit"]]
    abl = row.get("ablation") or "corrupt"
    base = (row.get("settings") or {}).get("baseline_logit_diff")
    rows = [{"rank": e["rank"], "score": e["score"], "sender": _node(e["sender"]), "receiver": _node(e["receiver"])}
            for e in edges]
    return render("circuit.html", title=f"circuit {row['id']}", row=row, model=model, n_edges=len(edges), abl=abl,
                  base=base, graph=circuit_svg(edges, model), edges=rows)


def _node(name: str) -> dict:
    """A node name split for linking: {unit (a unit id, linked) or None, rest (':q' or the whole name)}."""
    base, sep, ch = name.partition(":")
    if Unit.is_id(base):
        return {"unit": base, "rest": f":{ch}" if sep else ""}
    return {"unit": None, "rest": name}
