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
