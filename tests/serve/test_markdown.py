"""The report renderer (autointerp.core.markdown) is total and escapes: a seeded fuzz of Markdown-ish
strings must each render fast, to HTML whose only tags are the renderer's own."""

import random
import threading
import time
from html.parser import HTMLParser

from autointerp.core.markdown import render_markdown

ALLOWED_TAGS = {"h1", "h2", "h3", "h4", "p", "img", "table", "tr", "th", "td", "blockquote", "ul", "li", "code", "em",
                "a"}
ALLOWED_ATTRS = {"img": {"src", "alt", "style"}, "p": {"class"}, "a": {"href"}}
PIECES = ["![", "]", "(", ")", "![x]", "![a](b)", "![a](b c)", "#", "# ", "## ", "#####", "|", "| a | b |", "|---|",
          ">", "> ", "- ", "-", "*", "**", "`", "``", "\\|", "L3/N42", "L1/H0", "<script>", "</script>", "<img src=x>",
          "\"", "'", "&", "&amp;", "\n", "\n\n", "\r\n", "\r", " ", "\t", "word", "é", "\u2028", "\x00", "javascript:"]


def fuzz_inputs(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = ["![x]", "![", "#", "![x]\n![x]", "|", ">", "- ", "`", "*", "", "\n" * 50]
    while len(out) < n:
        k = rng.randint(1, 60)
        out.append("".join(rng.choice(PIECES) if rng.random() < 0.8 else chr(rng.randint(32, 0x2FF)) for _ in range(k)))
    return out


class TagCheck(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.bad.append(f"tag <{tag}>")
        for name, _ in attrs:
            if name not in ALLOWED_ATTRS.get(tag, set()):
                self.bad.append(f"attribute {name} on <{tag}>")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)


def link(u: str) -> str:
    return f'<a href="/unit/m/{u}">{u}</a>'


def test_fuzz_terminates_fast_and_escapes():
    inputs = fuzz_inputs(4000)
    slowest: list = [0.0, None]
    results: list[str] = []
    state = {"at": 0}

    def work():
        for j, md in enumerate(inputs):
            state["at"] = j
            t0 = time.perf_counter()
            html = render_markdown(md, {"b": "data:image/png;base64,AAAA"}, link)
            dt = time.perf_counter() - t0
            if dt > slowest[0]:
                slowest[:] = [dt, md]
            results.append(html)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"render_markdown did not finish on input {inputs[state['at']]!r}"
    assert len(results) == len(inputs)
    assert slowest[0] < 2.0, f"slowest input took {slowest[0]:.3f} s: {slowest[1]!r}"
    for md, html in zip(inputs, results):
        assert "<script" not in html.lower() and "<img src=x" not in html.lower(), md
        p = TagCheck()
        p.feed(html)
        p.close()
        assert not p.bad, (md, html, p.bad)


def test_long_inputs_are_linear():
    for md in ("![x]" * 20000, "![x]\n" * 20000, "*a" * 20000, "`" * 40001, "| a " * 20000, "#\n" * 20000):
        t0 = time.perf_counter()
        render_markdown(md, {}, link)
        assert time.perf_counter() - t0 < 2.0, md[:20]


def test_subset_still_renders():
    md = ("# Title\n\nSome *emphasis* and `code <b>` by L2/H1.\n\n![circuit](fig.png)\n\n![gone](missing.png)\n\n"
          "| head | effect |\n|---|---|\n| L2/H1 | 0.5 |\n\n> quoted\n> more\n\n- one\n- two\n\n![x] is text")
    html = render_markdown(md, {"fig.png": "data:image/png;base64,AAAA"}, link)
    assert "<h1>Title</h1>" in html
    assert "<em>emphasis</em>" in html and "<code>code &lt;b&gt;</code>" in html
    assert '<a href="/unit/m/L2/H1">L2/H1</a>' in html
    assert '<img src="data:image/png;base64,AAAA" alt="circuit"' in html
    assert "[figure missing.png not in the store]" in html
    assert "<table><tr><th>head</th><th>effect</th></tr><tr><td>" in html and "<td>0.5</td>" in html
    assert "<blockquote><p>quoted more</p></blockquote>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert "<p>![x] is text</p>" in html
