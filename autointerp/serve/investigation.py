"""The viewer's investigation page: a stored `autointerp investigate` report (Markdown, rendered by
the total renderer in autointerp.core.markdown) with its figures inlined from the store as data: URIs.
The page around it is templates/investigation.html (autoescaped)."""

from __future__ import annotations

import base64
from typing import Callable

from markupsafe import Markup

from ..core.markdown import render_markdown
from .render import link, render, unit_url


def investigation_page(inv: dict, figures: dict[str, bytes]) -> str:
    """The page for a stored investigation (store.get_investigation) and its PNGs; unit ids in the
    report link to their unit pages."""
    return render("investigation.html", title=f"investigation: {inv['task']}",
                  **investigation_body(inv, figures, lambda u: str(link(unit_url(inv["model_id"], u), u))))


def investigation_body(inv: dict, figures: dict[str, bytes], unit_link: Callable[[str], str] | None = None) -> dict:
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode() for name, png in figures.items()}
    ec = (inv.get("summary") or {}).get("edge_circuit")
    report = render_markdown(inv["report_md"], images, unit_link) if inv.get("report_md") else None
    return {"inv": inv, "status": inv.get("status"), "circuit_id": ec.get("circuit_id") if ec else None,
            "report": Markup(report) if report is not None else None, "steps": inv.get("steps", [])}


def investigation_html(inv: dict, figures: dict[str, bytes], unit_link: Callable[[str], str] | None = None) -> str:
    """The page body alone (as investigation_page shows it)."""
    return render("investigation_body.html", **investigation_body(inv, figures, unit_link))
