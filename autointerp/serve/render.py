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


@functools.lru_cache(maxsize=1)
def env() -> Environment:
    e = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    e.filters["fnum"] = fnum
    e.globals.update(unit_url=unit_url, dataset_url=dataset_url)
    return e


def render(template: str, **context: Any) -> str:
    return env().get_template(template).render(**context)


def link(href: str, text: str, cls: str = "") -> Markup:
    """An escaped <a> (for the Markdown renderer's unit links, which take HTML)."""
    return Markup(env().from_string('<a{% if cls %} class="{{ cls }}"{% endif %} href="{{ href }}">{{ text }}</a>')
                  .render(href=href, text=text, cls=cls))
