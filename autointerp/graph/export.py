"""A stored graph as circuit-tracer's / Neuronpedia's graph JSON (circuit_tracer/frontend/
graph_models.py: {metadata, qParams, nodes, links}; the file `create_graph_files` writes).

Node ids follow circuit-tracer: latent `{layer}_{latent}_{pos}`, error `{layer}_-1_{pos}`,
embedding `E_{token id}_{pos}`, logit `{n_layers + 1}_{token id}_{pos}`; `influence` is the
node's cumulative influence share (as prune_graph's cumulative_scores), `clerp` the stored
explanation. Differences: feature_type of a latent is "cross layer transcoder" as circuit-tracer
writes for any transcoder; `scan` is the transcoder set's name, which Neuronpedia does not know
(so the file opens in circuit-tracer's local server, not as an upload); `feature` of a latent
uses circuit-tracer's Cantor pairing of (layer, latent)."""

from __future__ import annotations


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def neuronpedia_json(g: dict, slug: str | None = None) -> dict:
    """g: Store.get_graph's row (nodes with explanations if Store.with_explanations ran)."""
    d = g["data"]
    L = int(d["n_layers"])
    ids = d["token_ids"]
    nodes = [n for n in g["nodes"] if n["kept"]]
    inf = sorted(((n.get("influence") or 0.0), n["idx"]) for n in g["nodes"])
    inf.reverse()
    total = sum(v for v, _ in inf) or 1.0
    cum, acc = {}, 0.0
    for v, j in inf:
        acc += v
        cum[j] = acc / total
    logit_ids = {r["token"]: r["token_id"] for r in d["logits"]}
    out, id_of = [], {}
    for n in nodes:
        k, p = n["kind"], n["pos"]
        base = {"ctx_idx": p, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0,
                "clerp": n.get("explanation") or "", "influence": cum.get(n["idx"]), "activation": n.get("activation")}
        if k == "latent":
            nid = f"{n['layer']}_{n['latent']}_{p}"
            rec = {"node_id": nid, "feature": _cantor(n["layer"], n["latent"]), "layer": str(n["layer"]),
                   "feature_type": "cross layer transcoder", "jsNodeId": f"{n['layer']}_{n['latent']}-0"}
        elif k == "error":
            nid = f"{n['layer']}_-1_{p}"
            rec = {"node_id": nid, "feature": -1, "layer": str(n["layer"]), "feature_type": "mlp reconstruction error",
                   "jsNodeId": f"{n['layer']}_-1-{p}", "activation": None}
        elif k == "embedding":
            nid = f"E_{ids[p]}_{p}"
            rec = {"node_id": nid, "feature": p, "layer": "E", "feature_type": "embedding",
                   "jsNodeId": f"E_{ids[p]}-{p}", "activation": None}
        else:
            t = logit_ids.get(n["token"])
            prob = next((r["prob"] for r in d["logits"] if r["token_id"] == t), 0.0)
            nid = f"{L + 1}_{t}_{p}"
            rec = {"node_id": nid, "feature": t, "layer": str(L + 1), "feature_type": "logit", "token_prob": prob,
                   "is_target_logit": t == d["logits"][0]["token_id"], "jsNodeId": f"L_{t}-{p}",
                   "clerp": f'Output "{n["token"]}" (p={prob:.3f})', "influence": None, "activation": None}
        id_of[n["idx"]] = nid
        out.append({**base, **rec})
    links = [{"source": id_of[e["source"]], "target": id_of[e["target"]], "weight": e["weight"]}
             for e in g["edges"] if e["source"] in id_of and e["target"] in id_of]
    meta = {"slug": slug or f"autointerp-graph-{g['id']}", "scan": g["transcoder_set"], "transcoder_list": [],
            "prompt_tokens": d["tokens"], "prompt": g["prompt"], "node_threshold": g["node_share"], "schema_version": 1,
            "info": {"generator": "autointerp graph", "model": g["model"], "replacement_score": g["replacement_score"],
                     "completeness_score": g["completeness_score"]}}
    return {"metadata": meta, "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                                          "sg_pos": ""}, "nodes": out, "links": links}
