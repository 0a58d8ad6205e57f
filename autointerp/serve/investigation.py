"""The viewer's investigation page: a stored `autointerp investigate` report (Markdown, rendered by
the total renderer in autointerp.core.markdown) with its figures inlined from the store as data: URIs.
Everything from the store is escaped."""

from __future__ import annotations

import base64
from typing import Callable

from ..core.markdown import esc, render_markdown


def investigation_html(inv: dict, figures: dict[str, bytes], unit_link: Callable[[str], str] | None = None) -> str:
    """The page body for a stored investigation (store.get_investigation) and its PNGs."""
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode() for name, png in figures.items()}
    status = inv.get("status")
    head = (f'<p class="muted">investigation {esc(inv["id"])} · status {esc(status)} · updated '
            f'{esc(inv.get("updated_at"))}</p>')
    ec = (inv.get("summary") or {}).get("edge_circuit")
    if ec and ec.get("circuit_id") is not None:
        head += f'<p>edge circuit: <a href="/circuit/{esc(ec["circuit_id"])}">circuit {esc(ec["circuit_id"])}</a></p>'
    if status == "failed":
        head += f'<p><b>failed:</b> {esc(inv.get("error"))}</p>'
    if not inv.get("report_md"):
        steps = "".join(f"<li>{esc(s['step'])}: {s['seconds'] or 0:.1f} s</li>" for s in inv.get("steps", []))
        return head + f"<h1>{esc(inv['task'])}</h1><p>No report yet. Steps done:</p><ul>{steps}</ul>"
    return head + render_markdown(inv["report_md"], images, unit_link)
