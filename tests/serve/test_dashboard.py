"""The unit page as a dashboard (issue #27) over a store mined by the real pipeline from a tiny
Llama saved as a model folder: neuron, head and SAE-latent pages show the activation histogram
(log-scale for latents), records grouped by quantile interval with the interval, the logit-effect
bar chart and the unit's appearances; test-your-text (`serve --model`) runs the model on a typed
text and its per-token activations equal `autointerp trace --unit` (a separate process); bad
input gets 400 with one line, a full house 503; without a model the box says how to enable it.
The pages are also loaded in headless Chromium and screenshotted (AUTOINTERP_SCREENSHOTS=DIR
keeps the PNGs)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from test_serve_browser import CHROMIUM
from test_serve_http import get
from tinykit import save_model_dir, word_corpus

CTX, D_SAE = 16, 8
TEXT = "January February March"


@pytest.fixture(scope="module")
def dash(tiny_llama, tmp_path_factory):
    import torch

    from autointerp.mine import load_exemplars, mine
    from autointerp.models.hooked import HookedModel
    from autointerp.models.sae import SAE, load_sae
    from autointerp.pipeline import ExplainSettings, explain_exemplars
    from autointerp.serve import make_server
    from autointerp.serve.tryit import TextTester
    from autointerp.store import Store

    d = tmp_path_factory.mktemp("dash")
    mdir = save_model_dir(tiny_llama, d / "tiny")
    hm = HookedModel.load(str(mdir), device="cpu")
    corpus = Path(word_corpus(d / "c.txt", 80))
    g = torch.Generator().manual_seed(0)
    sae = SAE(architecture="topk", k=2, W_enc=torch.randn(64, D_SAE, generator=g), b_enc=torch.zeros(D_SAE),
              W_dec=torch.randn(D_SAE, 64, generator=g) / 4, b_dec=torch.zeros(64), hook="blocks.1.resid_post",
              name="res1")
    sae = load_sae(sae.save(d / "res1"), name="res1")       # as a user's SAE: from its folder, content-hashed
    p = d / "dash.db"
    store = Store(p)
    common = dict(corpus=str(corpus), n_tokens=CTX * 48, context_len=CTX, top_k=6, n_quantiles=3, per_quantile=2,
                  n_random=4, progress=False)
    rid = mine(hm, store, layers=[0, 1], units="both", **common)
    try:
        sid = mine(hm, store, units="latents", saes=[sae], **common)
    finally:
        hm.detach_sae(sae)
    es = ExplainSettings(explainer="baseline", n_boot=30)
    for unit, run in (("L0/N5", rid), ("L1/H2", rid), ("L1/F1@res1", sid)):
        explain_exemplars(store, load_exemplars(store, run, unit), None, model_id=hm.spec, settings=es)
    store.close()
    servers = []
    for tester in (TextTester(hm), None):
        srv = make_server(p, "127.0.0.1", 0, quiet=True, tester=tester)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    urls = [f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers]
    yield {"with_model": urls[0], "without": urls[1], "model": hm.spec, "mdir": mdir, "sae_dir": d / "res1",
           "tester": servers[0].RequestHandlerClass.tester}
    for s in servers:
        s.shutdown()
        s.server_close()


def page(dash, unit, base="with_model", text=None):
    url = f"{dash[base]}/unit/{urllib.parse.quote(dash['model'], safe='')}/{unit}"
    if text is not None:
        url += "?" + urllib.parse.urlencode({"text": text})
    return get(url)


UNITS = ["L0/N5", "L1/H2", "L1/F1@res1"]


@pytest.mark.parametrize("unit", UNITS)
def test_dashboard_parts(dash, unit):
    status, body, headers = page(dash, unit)
    assert status == 200, body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and "<script>" not in body
    # the density histogram: one bar per bin, counts summing to the sampled tokens; log scale for a latent
    hist = re.search(r'<svg class="chart hist" id="density-hist".*?</svg>', body, re.S).group(0)
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', hist)]
    assert len(counts) >= 10 and sum(counts) > 0
    cap = re.search(r"activation density: ([\d,]+) tokens", body)
    assert cap and int(cap.group(1).replace(",", "")) == sum(counts)
    assert ("log10(1 + count)" in body) == unit.startswith("L1/F")
    # records grouped by quantile interval, each group with the interval of its records' max activation
    groups = re.findall(r'<div class="qgroup" data-group="([^"]+)">([^<]*)<span class="muted interval">'
                        r'max act ([-0-9.]+) to ([-0-9.]+) · (\d+) record', body)
    keys = [g[0] for g in groups]
    assert keys[0] in ("top",) and any(k.startswith("quantile/") for k in keys), keys
    for key, _, lo, hi, n in groups:
        assert float(lo) <= float(hi) and int(n) >= 1
    # the group's interval holds each of its records' max (the label of every record in the group)
    chunks = re.split(r'<div class="qgroup"', body)[1:]
    for (key, _, lo, hi, _), chunk in zip(groups, chunks):
        for m in re.findall(r"· max ([-0-9.]+)</span>", chunk):
            assert float(lo) - 1e-3 <= float(m) <= float(hi) + 1e-3, (key, m, lo, hi)
    # the logit-effect chart for neurons and latents (heads write no single direction)
    if not unit.startswith("L1/H"):
        chart = re.search(r'<svg class="chart logit-bars".*?</svg>', body, re.S).group(0)
        pro = re.findall(r'class="bar promoted"[^>]*data-weight="([-0-9.e]+)"', chart)
        sup = re.findall(r'class="bar suppressed"[^>]*data-weight="([-0-9.e]+)"', chart)
        assert pro and sup and all(float(w) > 0 for w in pro) and all(float(w) < 0 for w in sup)
    assert "<h2>appearances</h2>" in body


def test_without_model_the_box_says_how(dash):
    status, body, _ = page(dash, "L0/N5", base="without")
    assert status == 200 and 'id="try-disabled"' in body and "autointerp serve --model" in body
    status, body, _ = page(dash, "L0/N5", base="without", text=TEXT)
    assert status == 400 and "--model" in html.unescape(re.search(r"<p id='error'>(.*?)</p>", body).group(1))


def _try_acts(body: str) -> tuple[list[str], list[float]]:
    rec = re.search(r'<div class="rec try-acts"[^>]*>(.*?)</div>', body, re.S).group(1)
    spans = re.findall(r'<span class="tok"[^>]*title="act ([-0-9.]+)"[^>]*>(.*?)</span>', rec, re.S)
    return [html.unescape(t) for _, t in spans], [float(a) for a, _ in spans]


def _trace_cli(dash, unit, text, *extra):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run([sys.executable, "-m", "autointerp", "trace", text, "--unit", unit, "--model", str(dash["mdir"]),
                        "--device", "cpu", "--json", *extra], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("unit,text,extra", [
    ("L0/N5", TEXT, ()), ("L1/H2", TEXT, ()),
    # a TopK latent fires on few tokens: words of the tiny vocabulary (TEXT is three <unk>s to it)
    ("L1/F1@res1", TEXT + " the cat sat on the mat and ran to the park", ("--sae", "SAE"))])
def test_your_text_equals_trace(dash, unit, text, extra):
    status, body, _ = page(dash, unit, text=text)
    assert status == 200, body
    toks, acts = _try_acts(body)
    cli = _trace_cli(dash, unit, text, *[str(dash["sae_dir"]) if x == "SAE" else x for x in extra])
    assert toks == cli["tokens"] and len(acts) == len(toks) >= 3
    assert acts == pytest.approx(cli["acts"], abs=1e-6)
    assert any(a != 0 for a in acts)
    # the exact simulation of the baseline is shown on the same tokens, and the LLM one says how to get it
    assert '<div class="rec try-exact"' in body and "--llm SPEC" in body


@pytest.mark.parametrize("text,msg", [("", "empty"), ("x" * 501, "too long"), (" \t ", "empty")])
def test_bad_text_is_400(dash, text, msg):
    status, body, _ = page(dash, "L0/N5", text=text)
    err = re.findall(r"<p id='error'>(.*?)</p>", body)
    assert status == 400 and len(err) == 1 and msg in err[0] and "\n" not in err[0]


def test_requests_in_flight_are_bounded(dash):
    from autointerp.serve.tryit import MAX_IN_FLIGHT

    slots = dash["tester"]._slots
    for _ in range(MAX_IN_FLIGHT):
        assert slots.acquire(blocking=False)
    try:
        status, body, _ = page(dash, "L0/N5", text=TEXT)
        assert status == 503 and "already being run" in body
    finally:
        for _ in range(MAX_IN_FLIGHT):
            slots.release()
    assert page(dash, "L0/N5", text=TEXT)[0] == 200


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (CI installs it: apt-get install -y chromium)")
@pytest.mark.parametrize("unit", UNITS)
def test_dashboard_in_browser(dash, unit, tmp_path):
    out = Path(os.environ.get("AUTOINTERP_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    png = out / (unit.replace("/", "_").replace("@", "_") + ".png")
    url = f"{dash['with_model']}/unit/{urllib.parse.quote(dash['model'], safe='')}/{unit}?" + \
        urllib.parse.urlencode({"text": "the cat sat on the mat"})
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000"]
    r = subprocess.run(args + ["--window-size=1200,2400", f"--screenshot={png}", url], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and png.stat().st_size > 10_000, r.stderr[-1000:]
    dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r'<svg class="chart hist"[^>]*>.*<rect class="bar"', dom, re.S)
    assert 'class="qgroup"' in dom and 'class="rec try-acts"' in dom
    assert unit.startswith("L1/H") or re.search(r'<svg class="chart logit-bars"[^>]*>.*<rect class="bar promoted"', dom, re.S)
