"""The viewer's SAE-latent pages over HTTP: a random TopK SAE on the tiny Llama's layer 1, mined
and explained (baseline, exact scores) through the real pipeline; /unit/<model>/L1/F<i>@<sae>
shows records, scores with control and margin, density and the SAE's info; search links there."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tinykit import word_corpus
from test_serve_http import get

D_SAE, DEAD, CTX = 8, 6, 32


@pytest.fixture(scope="module")
def sae_server(tiny_llama, tmp_path_factory):
    import torch

    from autointerp.mine import load_exemplars, mine
    from autointerp.models.sae import SAE
    from autointerp.pipeline import ExplainSettings, explain_exemplars
    from autointerp.serve import make_server
    from autointerp.store import Store

    d = tmp_path_factory.mktemp("serve-sae")
    corpus = Path(word_corpus(d / "c.txt", 120))
    g = torch.Generator().manual_seed(0)
    b_enc = torch.zeros(D_SAE)
    b_enc[DEAD] = -1e4                                 # never fires
    sae = SAE(architecture="topk", k=2, W_enc=torch.randn(64, D_SAE, generator=g), b_enc=b_enc,
              W_dec=torch.randn(D_SAE, 64, generator=g) / 4, b_dec=torch.zeros(64), hook="blocks.1.resid_post",
              name="res1")
    sae.path = str(sae.save(d / "res1"))
    p = d / "s.db"
    store = Store(p)
    try:
        rid = mine(tiny_llama, store, corpus=str(corpus), n_tokens=CTX * 64, context_len=CTX, top_k=8, n_quantiles=3,
                   per_quantile=2, n_random=6, units="latents", saes=[sae], progress=False)
    finally:
        tiny_llama.detach_sae(sae)
    es = ExplainSettings(explainer="baseline", n_boot=50)
    explained = []
    for i in range(D_SAE):
        if i == DEAD:
            continue
        ex = load_exemplars(store, rid, f"L1/F{i}@res1")
        if ex.top:
            explain_exemplars(store, ex, None, model_id=tiny_llama.spec, settings=es)
            explained.append(i)
    sid = store.get_sae("res1")["id"]
    store.close()
    srv = make_server(p, "127.0.0.1", 0, quiet=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", explained, sid
    srv.shutdown()
    srv.server_close()


def test_latent_page(sae_server):
    base, explained, sid = sae_server
    i = explained[0]
    status, body, _ = get(base + f"/unit/tiny-llama/L1/F{i}@res1")
    assert status == 200, body
    assert f"L1/F{i}@res1" in body and f"latent {i} of SAE res1" in body
    # the SAE's info: its content id, architecture, hook and sizes
    assert sid in body and "topk" in body and "blocks.1.resid_post" in body and f"64 / {D_SAE}" in body
    # density: a percentage of tokens, and records
    m = re.search(r"<span id='density'>([0-9.]+)%</span>", body)
    assert m and 0 < float(m.group(1)) <= 100
    assert len(re.findall(r'<div class="rec" data-record=', body)) > 0
    # the baseline and its exact score with control and margin columns
    assert "<th>control</th><th>margin [ci]</th>" in body and "data-kind='simulation_exact'" in body
    row = re.search(r"data-kind='simulation_exact'[^>]*>exact sim. r</td><td class='num'>([^<]*)", body)
    assert row and (row.group(1).startswith(("+", "-")) or "null" in row.group(1))


def test_dead_latent_page_says_dead(sae_server):
    base, _, _ = sae_server
    status, body, _ = get(base + f"/unit/tiny-llama/L1/F{DEAD}@res1")
    assert status == 200 and "<span id='density'>0</span>" in body and "dead" in body


def test_search_links_to_latent_pages(sae_server):
    base, explained, _ = sae_server
    status, body, _ = get(base + "/search?layer=1")
    assert status == 200
    links = sorted(set(re.findall(r'href="(/unit/tiny-llama/L1/F\d+@res1)"', body)))
    assert links == sorted(f"/unit/tiny-llama/L1/F{i}@res1" for i in explained)
    for link in links:
        assert get(base + link)[0] == 200, link


@pytest.mark.parametrize("path,status,msg", [
    ("/unit/tiny-llama/L1/F3", 400, "name its SAE"),
    (f"/unit/tiny-llama/L1/F{D_SAE}@res1", 400, "out of range"),
    ("/unit/tiny-llama/L0/F3@res1", 400, "reads layer 1"),
    ("/unit/tiny-llama/L1/F3@nope", 404, "no SAE named"),
    ("/unit/other-model/L1/F3@res1", 404, "no SAE named"),
])
def test_bad_latent_urls(sae_server, path, status, msg):
    base, _, _ = sae_server
    got, body, _ = get(base + path)
    assert got == status and msg in body, body
