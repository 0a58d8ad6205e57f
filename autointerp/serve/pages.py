"""The viewer's pages: small functions from the store's read methods' dicts to HTML, through the
Jinja2 templates in serve/templates (autoescape on: everything from the store is escaped there).
Python here prepares values (colours, labels, chart geometry); markup lives in the templates. No
third-party assets: inline CSS, and one small script of our own (the true/simulated toggle) served
by the viewer itself at SCRIPT_URL, so the Content-Security-Policy can forbid inline scripts.

Records are turned into token spans once (record_view), for unit pages, test-your-text and model
diffs alike, and drawn by one template macro (macros.html `record`)."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ..core.units import HEAD, UNIT_KINDS, UNIT_RE, Unit  # the one unit-id regex
from . import charts
from .render import dataset_url, fnum, render, score_rows, unit_url

__all__ = ["esc", "unit_url", "dataset_url", "fnum", "layout", "unit_page", "index_page", "search_page",
           "dataset_page", "error_page", "record_view", "colour", "act_colour", "effect_colour"]

STATIC = Path(__file__).parent / "static"
TOGGLE_JS = (STATIC / "viewer.js").read_text(encoding="utf-8")

SCRIPT_PATH = "/static/viewer.js"
# versioned by content, so a browser never runs a stale copy after an upgrade
SCRIPT_URL = f"{SCRIPT_PATH}?v={hashlib.sha256(TOGGLE_JS.encode()).hexdigest()[:12]}"


def esc(x: Any) -> str:
    """HTML-escaped text (for callers outside the templates, e.g. the Markdown renderer's links)."""
    return html.escape("" if x is None else str(x), quote=True)


def layout(title: str, body: str, q: str = "") -> str:
    """A page around a body that is already HTML (rendered by a template or the Markdown renderer)."""
    from markupsafe import Markup

    return render("page.html", title=title, body=Markup(body), q=q)


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
    """Patching effects: red positive, blue negative (core.palette's sign convention)."""
    from ..core.palette import sign_rgba

    return sign_rgba(v, vmax) if vmax > 0 else "#fff"


# ---- records: token spans, built once --------------------------------------------------
def record_view(tokens: list[str], values: list[float | None], *, label: str, bg, tip, sim: list | None = None,
                sim_bg=None, outline: int = -1, cls: str = "", data: list[tuple[str, Any]] = (),
                toggle: bool = False) -> dict:
    """A record as the `record` macro draws it: per token its text, background (bg(value)), tooltip
    (tip(i, value)), and with toggle the simulated colour (sim_bg(sim value)) the script swaps in."""
    spans = []
    for i, t in enumerate(tokens):
        v = values[i] if i < len(values) else None
        s = sim[i] if sim and i < len(sim) else None
        spans.append({"text": t, "bg": bg(v), "tip": tip(i, v, s), "q": i == outline, "toggle": toggle,
                      "sim": sim_bg(s) if sim_bg else "", "extra_cls": "", "force_bg": False})
    return {"label": label, "spans": spans, "cls": cls, "data": list(data)}


def _act_tip(i: int, a, s) -> str:
    t = f"act {a:.3f}" if a is not None else "act -"
    return t + (f" · sim {s:.3f}" if s is not None else "")


def unit_record(r: dict, max_act: float, sim_max: float, neg_max: float, head: bool) -> list[dict]:
    """A stored record (and a head's attention row) as record views."""
    acts = r["acts"]
    q = max(range(len(acts)), key=lambda i: acts[i]) if acts else -1
    out = [record_view(r["tokens"], acts, label=f'{r["kind"]} {r["bin"]} · ctx {r["ctx_idx"]} · max {r["max_act"]:.3f}',
                       bg=lambda a: act_colour(a, max_act, neg_max), tip=_act_tip, sim=r.get("sim"),
                       sim_bg=lambda s: colour(s, sim_max, SIM_RGB), outline=q if head else -1,
                       data=[("record", r["id"])], toggle=True)]
    if head and r.get("extra"):
        att, toks = r["extra"], r["tokens"]
        amax = max(att) if att else 0
        v = record_view([toks[i] if i < len(toks) else "" for i in range(len(att))], att,
                        label="attention from the outlined token", bg=lambda w: colour(w, amax, (106, 27, 154)),
                        tip=lambda i, w, s: f"attention {w:.3f}", outline=q, cls="attn-row")
        for sp in v["spans"]:
            sp.update(extra_cls="attn", force_bg=True)
        out.append(v)
    return out


# ---- pages ------------------------------------------------------------------------
def index_page(ov: dict, best: list[dict], has_diffs: bool = False) -> str:
    models = [dict(m, search_query=urlencode({"model": m["id"]})) for m in ov["models"]]
    return render("index.html", title="store", ov=dict(ov, models=models), cals=ov.get("calibrations") or [],
                  best=best, has_diffs=has_diffs)


def search_page(q: str, params: dict, rows: list[dict], models: list[str]) -> str:
    title = f"search: {q}" if q else "search"
    return render("search.html", title=title, q=q, params=params, rows=rows, models=models)


def _groups(v: dict, shown: list[dict], max_act: float, sim_max: float, neg_max: float, head: bool) -> list[dict]:
    """Shown records grouped by kind and quantile bin, each with the interval of its records' max
    activation (over every stored record of the group, not only the ones shown)."""
    ivals = v.get("groups") or {}
    groups: dict[tuple, dict] = {}
    for r in shown:
        key = (r["kind"], r["bin"]) if r["kind"] == "quantile" else (r["kind"],)
        g = groups.get(key)
        if g is None:
            iv = ivals.get("/".join(map(str, key))) or {}
            if r["kind"] == "quantile":
                title = f"quantile interval {r['bin']}"
            else:
                title = {"top": "top activations", "top_attn": "top attention", "random": "random contexts"}.get(
                    r["kind"], r["kind"])
            lo, hi, n = iv.get("lo"), iv.get("hi"), iv.get("n")
            interval = (f"max act {lo:.3f} to {hi:.3f} · {n} record(s) stored" if lo is not None else "")
            g = groups[key] = {"key": "/".join(map(str, key)), "title": title, "interval": interval, "records": []}
        g["records"] += unit_record(r, max_act, sim_max, neg_max, head)
    return list(groups.values())


def _scored(expls: list[dict]) -> list[dict]:
    """Explanations with their scores named and ordered by the scorer registry (render.score_rows)."""
    return [dict(e, scores=score_rows(e.get("scores") or [])) for e in expls]


def unit_page(v: dict, tryit: dict | None = None) -> str:
    model, unit, head = v["model_id"], v["unit"], v["kind"] == HEAD.name
    what = UNIT_KINDS[v["kind"]].noun if v["kind"] in UNIT_KINDS else v["kind"]
    recs = v["records"]
    has_sim = any(r.get("sim") for r in recs)
    sim_max = max([max(r["sim"]) for r in recs if r.get("sim")] + [0.0])
    neg_max = max([-min(r["acts"]) for r in recs if r["acts"]] + [0.0])
    st = v["stats"]
    hist = charts.histogram(st.get("hist") if st else None, log=v["kind"] in UNIT_KINDS and UNIT_KINDS[v["kind"]].sparse,
                            frac_active=st.get("frac_active") if st else None)
    logit = charts.logit_bars(v["promoted"], v["suppressed"])
    tryit = tryit or {"enabled": False, "hint": "SPEC"}
    return render("unit.html", title=f"{unit} · {model}", model=model, unit=unit, layer=v["layer"], what=what,
                  index=v["index"], sae=v.get("sae"), density=st.get("frac_active") if st else None, stats=st,
                  hist=hist, logit=logit, explanations=_scored(v["explanations"]), baselines=_scored(v["baselines"]),
                  promoted=v["promoted"], suppressed=v["suppressed"], head_scores=v["head_scores"],
                  n_shown=len(recs), n_records=v["n_records"], has_sim=has_sim, max_act=v["max_act"], neg_max=neg_max,
                  pos_rgb=POS_RGB, neg_rgb=NEG_RGB, sim_rgb=SIM_RGB,
                  groups=_groups(v, recs, v["max_act"], sim_max, neg_max, head),
                  patching=v["patching"], circuits=v.get("circuits") or [], graphs=v.get("graphs") or [],
                  tryit=tryit, script_url=SCRIPT_URL)


def heatmap(run: dict, max_cols: int = 64) -> dict:
    """A patching run's results as a grid (layer x unit, component x position) or, when too wide,
    its strongest components as a list."""
    res = run["results"]
    if not res:
        return {"layout": "empty"}
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
    pos = lambda p: "all" if p in (None, -1) else p  # noqa: E731
    if len(cols) > max_cols:  # too wide for a grid (e.g. thousands of neurons): the strongest ones as a list
        top = sorted(res, key=lambda r: -abs(r["effect"]))[:40]
        return {"layout": "list", "top": [{"component": r["component"], "is_unit": bool(UNIT_RE.match(r["component"])),
                                         "pos": pos(r["position"]), "effect": r["effect"],
                                         "bg": effect_colour(r["effect"], vmax)} for r in top]}
    grid = []
    for row in rows:
        tds = []
        for c in cols:
            r = cells.get((row, c))
            tds.append(None if r is None else {
                "component": r["component"], "effect": r["effect"], "bg": effect_colour(r["effect"], vmax),
                "is_unit": bool(UNIT_RE.match(r["component"])),
                "tip": f"{r['component']} pos {r['position']}: {r['effect']:+.4f}"})
        grid.append({"label": row_label(row), "cells": tds})
    return {"layout": "grid", "cols": [pos(c) for c in cols], "rows": grid}


def dataset_page(v: dict) -> str:
    runs = []
    for run in v["runs"]:
        cld = f" · clean {run['clean_logit_diff']:+.3f} / corrupt {run['corrupt_logit_diff']:+.3f}" \
            if run.get("clean_logit_diff") is not None and run.get("corrupt_logit_diff") is not None else ""
        runs.append(dict(run, cld=cld, heatmap=heatmap(run)))
    top = [dict(r, is_unit=bool(UNIT_RE.match(r["unit"]))) for r in v["top"]]
    return render("dataset.html", title=f"dataset {v['dataset']['name']}", d=v["dataset"], pairs=v["pairs"],
                  top=top, runs=runs)


def error_page(status: int, message: str) -> str:
    return render("error.html", title=str(status), status=status, message=message)


def is_unit(name: str) -> bool:
    return Unit.is_id(name)
