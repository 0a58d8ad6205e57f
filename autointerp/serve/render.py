"""The viewer's one HTML renderer: Jinja2 templates (serve/templates/) with autoescape on for
every template, so whatever came from the store is escaped unless a template says otherwise.
Python code in serve/ prepares plain values (numbers, strings, colours); markup lives in the
templates only. `render(name, **context)` is the only way a page becomes HTML."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"


def fnum(x: Any, fmt: str = "+.3f") -> str:
    return "-" if x is None else format(x, fmt)


def unit_url(model: str, unit: str) -> str:
    return f"/unit/{quote(model, safe='')}/{unit}"


def dataset_url(name: str) -> str:
    return f"/dataset/{quote(name, safe='')}"


def score_rows(scores: list[dict]) -> list[dict]:
    """Stored scores as the viewer lists them, named by the scorer registry (score/registry.py):
    in its order (each scorer's headline kind first), each with its `label` and the `scorer_name`
    that writes it; `sub` marks a scorer's secondary kinds (drawn indented). Kinds no registered
    scorer writes (validate's probe_auc, intervention, ...) follow under their own names."""
    from ..score.registry import SCORERS

    order = {k: (i, j, spec) for i, spec in enumerate(SCORERS.values()) for j, k in enumerate(spec.kinds)}
    out = []
    for n, s in enumerate(scores):
        i, j, spec = order.get(s.get("kind"), (len(order), 0, None))
        out.append((i, j, n, dict(s, label=spec.labels.get(s["kind"], s["kind"]).strip() if spec else s.get("kind"),
                                  scorer_name=spec.name if spec else None, sub=j > 0)))
    return [r for *_, r in sorted(out, key=lambda t: t[:3])]


def score_label(kind: str) -> str:
    """The registry's label of a score kind (the kind itself when no scorer writes it)."""
    from ..score.registry import score_labels

    return score_labels().get(kind, kind).strip()


@functools.lru_cache(maxsize=1)
def env() -> Environment:
    e = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    e.filters["fnum"] = fnum
    from ..store.query import SIM_KIND     # the kind a unit's best score is ranked by

    e.globals.update(unit_url=unit_url, dataset_url=dataset_url, score_label=score_label, best_kind=SIM_KIND)
    return e


def render(template: str, **context: Any) -> str:
    return env().get_template(template).render(**context)


def link(href: str, text: str, cls: str = "") -> Markup:
    """An escaped <a> (for the Markdown renderer's unit links, which take HTML)."""
    return Markup(env().from_string('<a{% if cls %} class="{{ cls }}"{% endif %} href="{{ href }}">{{ text }}</a>')
                  .render(href=href, text=text, cls=cls))
