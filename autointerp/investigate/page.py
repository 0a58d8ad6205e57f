"""The viewer's investigation page: the stored Markdown report rendered to HTML (a small renderer
for the subset report.py writes: headings, paragraphs, lists, tables, block quotes, images,
`code`, *emphasis*), with the figures inlined from the store as data: URIs. Everything from the
store is escaped."""

from __future__ import annotations

import base64
import html
import re
from typing import Callable

IMG_RE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _inline(text: str, unit_link: Callable[[str], str] | None = None) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for p in parts:
        if len(p) > 1 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{_esc(p[1:-1])}</code>")
            continue
        e = _esc(p)
        if unit_link is not None:
            e = re.sub(r"\bL\d+/[HN]\d+\b", lambda m: unit_link(m.group()), e)
        out.append(e)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", "".join(out))


def _cells(line: str) -> list[str]:
    line = line.strip().strip("|")
    cells = re.split(r"(?<!\\)\|", line)
    return [c.strip().replace("\\|", "|") for c in cells]


def render_markdown(md: str, images: dict[str, str], unit_link: Callable[[str], str] | None = None) -> str:
    """HTML of the report's Markdown; images maps a file name to a data: URI."""
    lines = md.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        s = ln.strip()
        if not s:
            i += 1
            continue
        m = re.match(r"^(#{1,4})\s+(.*)$", s)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2), unit_link)}</h{n}>")
            i += 1
            continue
        m = IMG_RE.match(s)
        if m:
            src = images.get(m.group(2))
            if src:
                out.append(f'<p><img src="{_esc(src)}" alt="{_esc(m.group(1))}" style="max-width:100%"></p>')
            else:
                out.append(f'<p class="muted">[figure {_esc(m.group(2))} not in the store]</p>')
            i += 1
            continue
        if s.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            head = _cells(rows[0])
            body = [_cells(r) for r in rows[2:]] if len(rows) > 1 and re.match(r"^\|?\s*-", rows[1].strip().lstrip("|")) \
                else [_cells(r) for r in rows[1:]]
            out.append("<table><tr>" + "".join(f"<th>{_inline(h, unit_link)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c, unit_link)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            continue
        if s.startswith(">"):
            paras, cur = [], []
            while i < len(lines) and lines[i].strip().startswith(">"):
                t = lines[i].strip()[1:].strip()
                if t:
                    cur.append(t)
                elif cur:
                    paras.append(" ".join(cur))
                    cur = []
                i += 1
            if cur:
                paras.append(" ".join(cur))
            out.append("<blockquote>" + "".join(f"<p>{_inline(p, unit_link)}</p>" for p in paras) + "</blockquote>")
            continue
        if s.startswith("- "):
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(lines[i].strip()[2:])
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(x, unit_link)}</li>" for x in items) + "</ul>")
            continue
        buf = []
        while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||>|- |!\[)", lines[i].strip()):
            buf.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline(' '.join(buf), unit_link)}</p>")
    return "\n".join(out)


def investigation_html(inv: dict, figures: dict[str, bytes], unit_link: Callable[[str], str] | None = None) -> str:
    """The page body for a stored investigation (store.get_investigation) and its PNGs."""
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode() for name, png in figures.items()}
    status = inv.get("status")
    head = (f'<p class="muted">investigation {_esc(inv["id"])} · status {_esc(status)} · updated '
            f'{_esc(inv.get("updated_at"))}</p>')
    if status == "failed":
        head += f'<p><b>failed:</b> {_esc(inv.get("error"))}</p>'
    if not inv.get("report_md"):
        steps = "".join(f"<li>{_esc(s['step'])}: {s['seconds'] or 0:.1f} s</li>" for s in inv.get("steps", []))
        return head + f"<h1>{_esc(inv['task'])}</h1><p>No report yet. Steps done:</p><ul>{steps}</ul>"
    return head + render_markdown(inv["report_md"], images, unit_link)
