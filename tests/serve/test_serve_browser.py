"""The viewer in a real headless browser (Debian's chromium, `--dump-dom`: the DOM after the
page's scripts ran). Skipped where /usr/bin/chromium is absent (`apt-get install chromium`)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (CI installs it: apt-get install -y chromium)")


def dom(url: str, tmp_path: Path) -> str:
    profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
                        "--virtual-time-budget=2000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def token_colours(page: str) -> list[tuple[int, int, int]]:
    """The rgb of every token span's inline background, however the browser serialised it."""
    return [tuple(map(int, m)) for m in re.findall(
        r'<span class="tok[^"]*"[^>]*style="background:\s*rgba\((\d+),\s*(\d+),\s*(\d+)', page)]


def test_unit_page_in_browser(server, tmp_path):
    base, _ = server
    page = dom(base + "/unit/tiny-llama/L0/N3", tmp_path)
    assert "days of the week, especially Monday and Friday" in page
    assert 'data-view="true"' in page
    assert (255, 140, 0) in token_colours(page)  # coloured by true activation
    assert "show simulated activations" in page


def test_toggle_to_simulated(server, tmp_path):
    base, _ = server
    page = dom(base + "/unit/tiny-llama/L0/N3#sim", tmp_path)  # the script runs setView('sim') on #sim
    assert 'data-view="sim"' in page
    colours = set(token_colours(page))
    assert (46, 160, 67) in colours and (255, 140, 0) not in colours
    assert "show true activations" in page


def test_search_box_and_results(server, tmp_path):
    base, _ = server
    page = dom(base + "/", tmp_path)
    assert re.search(r'<form action="/search" method="get"[^>]*>\s*<input type="search" name="q"', page)
    page = dom(base + "/search?q=capital+cities", tmp_path)  # what submitting the box loads
    assert "capital cities such as Paris" in page and 'href="/unit/tiny-llama/L1/N2"' in page


def test_dataset_page_link_to_unit(server, tmp_path):
    base, _ = server
    page = dom(base + "/dataset/ioi-small", tmp_path)
    assert "<table class=\"hm\"" in page
    link = re.search(r'<a class="unit-link" href="(/unit/[^"]+/L2/H1)">', page).group(1)
    unit = dom(base + link, tmp_path)
    assert "induction head: attends to the token after an earlier copy of the current token" in unit
    assert "head detectors" in unit


class Page:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
    ending in NUL, commands on fd 3, replies on fd 4), for what --dump-dom cannot tell: layout at a
    given viewport width and computed styles."""

    def __init__(self, tmp_path: Path, width: int = 1000, height: int = 800):
        import os

        self.r_cmd, self.w_cmd = os.pipe()     # we write commands, chromium reads fd 3
        self.r_out, self.w_out = os.pipe()     # chromium writes fd 4, we read
        profile = tmp_path / f"cdp{len(list(tmp_path.iterdir()))}"
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             "--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: (os.dup2(self.r_cmd, 3), os.dup2(self.w_out, 4)))
        os.close(self.r_cmd)
        os.close(self.w_out)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _read(self, deadline: float) -> dict:
        import json
        import os
        import select
        import time

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "chromium did not answer in time"
            if select.select([self.r_out], [], [], left)[0]:
                chunk = os.read(self.r_out, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params):
        import json
        import os
        import time

        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.w_cmd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                assert "error" not in m, m["error"]
                return m["result"]
            self.events.append(m)

    def goto(self, url: str, timeout: float = 60) -> None:
        import time

        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def close(self) -> None:
        import os

        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        os.close(self.w_cmd)
        os.close(self.r_out)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def page(tmp_path):
    p = Page(tmp_path, width=1000)
    yield p
    p.close()


OVERFLOW_JS = """(() => {
  const d = document.documentElement;
  const wide = [...document.querySelectorAll('.rec')].filter(e => e.getBoundingClientRect().right > d.clientWidth + 1);
  return {scrollWidth: d.scrollWidth, clientWidth: d.clientWidth, innerWidth: window.innerWidth,
          wideRecords: wide.length, records: document.querySelectorAll('.rec').length};
})()"""


def test_records_wrap_at_1000px(server, page, long_record):
    LONG_UNIT, _ = long_record
    base, _ = server
    for path in (f"/unit/tiny-llama/{LONG_UNIT}", "/unit/tiny-llama/L0/N3", "/unit/tiny-llama/L2/H1",
                 "/dataset/ioi-small", "/search?q=the"):
        page.goto(base + path)
        m = page.js(OVERFLOW_JS)
        assert m["innerWidth"] == 1000, m
        assert m["scrollWidth"] <= m["clientWidth"], (path, m)   # no horizontal overflow
        assert m["wideRecords"] == 0, (path, m)
    page.goto(base + f"/unit/tiny-llama/{LONG_UNIT}")
    lines = page.js("Math.round(document.querySelector('.rec').getBoundingClientRect().height / "
                    "parseFloat(getComputedStyle(document.querySelector('.rec')).lineHeight))")
    assert lines >= 10  # the 300-token record wraps onto many lines


def test_negative_activations_coloured_in_browser(server, page, long_record):
    LONG_UNIT, LONG_ACTS = long_record
    base, _ = server
    page.goto(base + f"/unit/tiny-llama/{LONG_UNIT}")
    colours = page.js("[...document.querySelectorAll('.rec span.tok')].map(s => getComputedStyle(s).backgroundColor)")
    assert len(colours) == len(LONG_ACTS)

    def rgb(c: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"[\d.]+", c)[:3])

    neg = {rgb(c) for c, a in zip(colours, LONG_ACTS) if a < 0}
    pos = {rgb(c) for c, a in zip(colours, LONG_ACTS) if a > 0}
    assert neg == {(30, 136, 229)} and pos == {(255, 140, 0)}
    # the toggle script (served from /static, allowed by the CSP) still runs: simulated view
    page.goto(base + "/unit/tiny-llama/L0/N3#sim")
    assert page.js("document.body.getAttribute('data-view')") == "sim"
