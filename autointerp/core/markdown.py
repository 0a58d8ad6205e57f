"""A small, total Markdown → HTML renderer for the subset `autointerp investigate` writes:
headings (#..####), paragraphs, `- ` lists, pipe tables, `>` block quotes, image lines
`![alt](name)`, `code` and *emphasis*.

Pure (no I/O; imports only core.units), so any face may use it. It is total: every
block rule consumes at least one line, so it terminates on any input, in time linear in the
input apart from the inline regexes (each bounded by the line length). Everything taken from
the input is HTML-escaped; the only tags in the output are the ones written here (and whatever
the caller's `unit_link` returns for a unit id such as L3/N42).
"""

from __future__ import annotations

import html
import re
from typing import Callable

from .units import UNIT_IN_TEXT_RE

IMG_RE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
HEADING_RE = re.compile(r"^(#{1,4})\s+(.*)$")
EM_RE = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")
CODE_SPLIT_RE = re.compile(r"(`[^`]+`)")
TABLE_RULE_RE = re.compile(r"^\|?\s*:?-")

UnitLink = Callable[[str], str]


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def inline(text: str, unit_link: UnitLink | None = None) -> str:
    """One line of inline Markdown: `code` spans verbatim (escaped), *emphasis*, unit ids linked.
    Emphasis and links apply within the text between code spans, never across them."""
    out = []
    for part in CODE_SPLIT_RE.split(text):
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{esc(part[1:-1])}</code>")
            continue
        # escaping keeps '*' and unit ids as they are, so the emphasis and link rules see the text
        e = EM_RE.sub(r"<em>\1</em>", esc(part))
        if unit_link is not None:
            e = UNIT_IN_TEXT_RE.sub(lambda m: unit_link(m.group()), e)
        out.append(e)
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _block_start(s: str) -> bool:
    """Does the stripped line begin a block other than a paragraph?"""
    return bool(HEADING_RE.match(s) or IMG_RE.match(s)) or s.startswith(("|", ">", "- "))


def render_markdown(md: str, images: dict[str, str] | None = None, unit_link: UnitLink | None = None) -> str:
    """HTML of Markdown `md`; `images` maps an image name to the URI to show (a data: URI), a name
    not in it is shown as a note. Terminates on any input: each step below consumes ≥ 1 line."""
    images = images or {}
    lines = str(md).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        s = lines[i].strip()
        if not s:
            i += 1
            continue
        m = HEADING_RE.match(s)
        if m:
            k = len(m.group(1))
            out.append(f"<h{k}>{inline(m.group(2), unit_link)}</h{k}>")
            i += 1
            continue
        m = IMG_RE.match(s)
        if m:
            src = images.get(m.group(2))
            if src:
                out.append(f'<p><img src="{esc(src)}" alt="{esc(m.group(1))}" style="max-width:100%"></p>')
            else:
                out.append(f'<p class="muted">[figure {esc(m.group(2))} not in the store]</p>')
            i += 1
            continue
        if s.startswith("|"):
            rows = []
            while i < n and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            head = _cells(rows[0])
            has_rule = len(rows) > 1 and TABLE_RULE_RE.match(rows[1].strip().lstrip("|").lstrip())
            body = [_cells(r) for r in rows[2 if has_rule else 1:]]
            out.append("<table><tr>" + "".join(f"<th>{inline(h, unit_link)}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c, unit_link)}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            continue
        if s.startswith(">"):
            paras, cur = [], []
            while i < n and lines[i].strip().startswith(">"):
                t = lines[i].strip()[1:].strip()
                if t:
                    cur.append(t)
                elif cur:
                    paras.append(" ".join(cur))
                    cur = []
                i += 1
            if cur:
                paras.append(" ".join(cur))
            out.append("<blockquote>" + "".join(f"<p>{inline(p, unit_link)}</p>" for p in paras) + "</blockquote>")
            continue
        if s.startswith("- "):
            items = []
            while i < n and lines[i].strip().startswith("- "):
                items.append(lines[i].strip()[2:])
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(x, unit_link)}</li>" for x in items) + "</ul>")
            continue
        # a paragraph: this line (whatever it looks like: `![x]`, `#tag`, `-x` ...) and the
        # following lines up to a blank line or the start of another block
        buf = [s]
        i += 1
        while i < n and lines[i].strip() and not _block_start(lines[i].strip()):
            buf.append(lines[i].strip())
            i += 1
        out.append(f"<p>{inline(' '.join(buf), unit_link)}</p>")
    return "\n".join(out)
