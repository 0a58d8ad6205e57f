"""/graph/<id>: a stored attribution graph drawn server-side (SVG), over HTTP and in headless
Chromium; latent nodes link to their unit pages and show their stored explanation and score."""

from __future__ import annotations

import re
import threading

import pytest
import torch

from test_serve_browser import CHROMIUM, dom
from test_serve_http import get


@pytest.fixture(scope="module")
def graph_server(tiny_llama, tmp_path_factory):
    from autointerp.graph import build_graph
    from autointerp.graph.validate import validate_graph
    from autointerp.models.sae import SAE
    from autointerp.models.transcoders import TranscoderSet
    from autointerp.serve import make_server
    from autointerp.store import Store

    g_ = torch.Generator().manual_seed(0)
    d = tiny_llama.d_model
    by_layer = {L: SAE(architecture="transcoder", W_enc=torch.randn(d, 16, generator=g_) / 2, b_enc=torch.zeros(16),
                       W_dec=torch.randn(16, d, generator=g_), b_dec=torch.zeros(d), hook=f"blocks.{L}.mlp.in",
                       hook_out=f"blocks.{L}.mlp.out", name="vt") for L in (0, 1, 2)}
    ts = TranscoderSet(name="vt", model=tiny_llama.spec, by_layer=by_layer)
    g = build_graph(tiny_llama, ts, "the cat sat on the mat", max_logits=2, node_share=0.9)
    p = tmp_path_factory.mktemp("serve-graph") / "s.db"
    s = Store(p)
    key, row, nodes, edges, data = g.store_records()
    gid = s.put_graph(key, {**row, "validation": validate_graph(tiny_llama, ts, g, 3)}, nodes, edges, data)
    s.put_model(g.model, tiny_llama.info())
    top = g.top_latents(1)[0]
    unit = g.unit(top["layer"], top["latent"])
    eid = s.put_explanation(key="e1", model_id=g.model, unit=unit, layer=top["layer"], explainer="baseline",
                            method="exact", text="the <token> 'cat' & friends")
    s.put_score(key="s1", explanation_id=eid, kind="simulation_exact", value=0.61, control=0.05, margin=0.56, n=40)
    s.close()
    srv = make_server(p, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", gid, g, unit
    srv.shutdown()


def test_graph_page_over_http(graph_server):
    base, gid, g, unit = graph_server
    status, body, _ = get(f"{base}/graph/{gid}")
    assert status == 200
    kept = [n for n in g.node_records() if n["kept"]]
    assert body.count('class="node ') == len(kept)                       # every kept node drawn once
    assert len(re.findall(r'<line class="edge"', body)) == min(300, len(g.edge_records()))
    assert f'href="/unit/{g.model}/{unit}"' in body
    assert re.search(r"the &lt;token&gt; &#(x27|39);cat&#(x27|39); &amp; friends", body) and "<token>" not in body
    assert "+0.610" in body and "+0.050" in body and "+0.560" in body                    # score, control, margin
    assert "completeness identity" in body and "intervention check" in body
    assert get(f"{base}/graph/999")[0] == 404 and get(f"{base}/graph/x")[0] == 400


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here")
def test_graph_page_in_browser(graph_server, tmp_path):
    base, gid, g, unit = graph_server
    page = dom(f"{base}/graph/{gid}", tmp_path)
    assert '<svg class="attribution-graph"' in page
    latents = re.findall(r'<a class="node latent" data-node="\d+" data-unit="([^"]+)" href="([^"]+)"', page)
    assert latents and all(h.endswith(u) for u, h in latents)
    weights = [float(w) for w in re.findall(r'data-weight="([^"]+)"', page)]
    assert any(w > 0 for w in weights) and any(w < 0 for w in weights)
    assert 'stroke="#c62828"' in page and 'stroke="#1565c0"' in page     # sign by colour
