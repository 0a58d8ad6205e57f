"""The investigation's steps: each calls a stage's API and returns a small JSON-able result
(with the ids of the store rows it wrote, so every figure can name its sources)."""

from __future__ import annotations

from typing import Any

from ..core.hooks import parse_hook
from ..core.keys import content_hash
from ..core.units import Unit
from ..errors import AutointerpError, BudgetExceeded, DatasetError


def _sel(rows: list[dict], n: int) -> list[dict]:
    return sorted(rows, key=lambda r: (-abs(r["effect"]), r["component"]))[:n]


def _mlp_layer(component: str) -> int:
    return parse_hook(component)[0]


# ----------------------------------------------------------------------------- 1. dataset


def dataset_step(steps, store, hm, task, dataset, s, llm_h):
    from ..tasks import builtin_name, dataset_hash, get_dataset, make_dataset, resolve_dataset
    from ..tasks.api import slugify

    def info(ds) -> dict:
        return {"name": ds.name, "hash": dataset_hash(ds.items), "n_items": ds.n_items, "source": ds.source,
                "task": ds.task, "stats": ds.stats}

    def exists(r: dict) -> bool:
        d = store.get_dataset(r["name"])
        return d is not None and d.get("hash") in (None, r["hash"])

    if dataset:
        ds = resolve_dataset(store, hm, dataset)
        r = steps.run("dataset", {"dataset": ds.name, "hash": dataset_hash(ds.items), "model": hm.spec},
                      lambda: info(ds))
        return ds, r
    bname = builtin_name(task)
    inputs = {"task": task, "model": hm.spec, "n": s.n, "seed": s.seed, "margin": s.margin,
              "llm": None if bname else llm_h.name}
    name = f"inv-{slugify(bname or task, 24)}-{content_hash(inputs)[:8]}"

    def make() -> dict:
        if store.get_dataset(name) is not None:
            return info(get_dataset(store, name))
        ds = make_dataset(store, hm, task, s.n, name=name, seed=s.seed, margin=s.margin,
                          llm=None if bname else llm_h.get(), batch_size=s.batch_size)
        return info(ds)

    r = steps.run("dataset", inputs, make, valid=exists)
    ds = get_dataset(store, r["name"])
    if ds.n_items < 2:
        raise DatasetError(f"only {ds.n_items} item of {task!r} passed validation on {hm.spec}; "
                           "try a lower --margin or another task")
    return ds, r


# ----------------------------------------------------------------------------- 2. localise


def _split(res, names: set[str]):
    """A copy of a PatchResult with only the rows of `names`."""
    return res.model_copy(update={"results": [r for r in res.results if r["component"] in names],
                                  "settings": dict(res.settings)})


def localise_step(steps, store, hm, ds, dsi, s):
    from ..patching import attribution_patching, components_for
    from ..patching.api import result_from_row, run_key

    params = dict(direction="denoising", layer=None, per_position=None, layers=None)
    keys = {w: run_key(hm, ds, w, "attribution", **params) for w in ("heads", "mlp")}

    def run() -> dict:
        # one pass for heads and MLP layers together, stored as the two runs `autointerp patch
        # --method attribution --what heads|mlp` would store (so either reuses the other)
        rows = {w: store.get_patch_run(k) for w, k in keys.items()}
        if all(rows.values()):
            got = {w: result_from_row(r) for w, r in rows.items()}
        else:
            comps = (components_for(hm, "heads", 0, per_position=False)
                     + components_for(hm, "mlp", 0, per_position=False))
            res = attribution_patching(hm, ds.items, "heads", components=comps, batch_size=s.batch_size)
            got = {}
            for w in ("heads", "mlp"):
                part = _split(res, {c.name for c in comps if (c.head is not None) == (w == "heads")})
                part.what = w
                part.settings["n_components"] = len(part.results)
                part.run_id = _store_run(store, hm, ds, keys[w], part, {})
                got[w] = part
        ah, am = got["heads"], got["mlp"]
        n_cand = s.n_candidates or max(2 * s.top, s.top + 4)
        return {"attr_heads_run": ah.run_id, "attr_mlp_run": am.run_id,
                "clean_logit_diff": ah.clean_logit_diff, "corrupt_logit_diff": ah.corrupt_logit_diff,
                "candidates_heads": [r["component"] for r in _sel(ah.results, n_cand)],
                "candidates_mlp": [r["component"] for r in _sel(am.results, s.n_mlp_candidates)],
                "attribution": {r["component"]: r["effect"] for r in ah.results + am.results}}

    return steps.run("localise", {"dataset": dsi["hash"], "model": hm.spec, "top": s.top,
                                  "n_candidates": s.n_candidates, "n_mlp_candidates": s.n_mlp_candidates}, run,
                     valid=lambda r: store.get_patch_run(run_id=r["attr_heads_run"], with_results=False) is not None)


# ----------------------------------------------------------------------------- 3. confirm


def _store_run(store, hm, ds, key: str, res, extra: dict) -> int:
    res.settings.update({"dataset": ds.name, "n_items": res.n_items, "normalised": res.normalised, **extra})
    return store.put_patch_run(key, dataset=ds.name, model_id=hm.spec, what=res.what, method=res.method,
                               direction=res.direction, clean_logit_diff=res.clean_logit_diff,
                               corrupt_logit_diff=res.corrupt_logit_diff, settings=res.settings, results=res.results)


def _components(hm, names: list[str]):
    from ..patching.core import components_named

    return components_named(names)


def confirm_step(steps, store, hm, ds, dsi, loc, s, inv_id):
    from ..patching import activation_patching, rank_correlation
    from ..patching.core import PatchResult

    def run() -> dict:
        out: dict[str, Any] = {}
        names = loc["candidates_heads"] + loc["candidates_mlp"]
        # one pass (the clean and corrupt runs are shared), stored as a heads run and an MLP run
        res = activation_patching(hm, ds.items, "heads", components=_components(hm, names), batch_size=s.batch_size,
                                  max_batch=s.max_batch)
        effects: dict[str, float] = {r["component"]: r["effect"] for r in res.results}
        for kind, part_names in (("heads", loc["candidates_heads"]), ("mlp", loc["candidates_mlp"])):
            if not part_names:
                out[f"act_{kind}_run"] = None
                continue
            part = _split(res, set(part_names))
            part.what = kind
            part.settings["n_components"] = len(part.results)
            key = content_hash("investigate-confirm", dsi["hash"], hm.spec, kind, part_names)
            out[f"act_{kind}_run"] = _store_run(store, hm, ds, key, part, {"components": "candidates",
                                                                           "investigation": inv_id})
        heads = [c for c in loc["candidates_heads"] if abs(effects.get(c, 0.0)) >= s.min_effect]
        heads = sorted(heads, key=lambda c: -abs(effects[c]))[:s.top]
        if not heads:   # nothing passes the threshold: keep the strongest head so the later steps have a subject
            heads = sorted(loc["candidates_heads"], key=lambda c: -abs(effects.get(c, 0.0)))[:1]
        mlps = [c for c in loc["candidates_mlp"] if abs(effects.get(c, 0.0)) >= s.min_effect]
        mlps = sorted(mlps, key=lambda c: -abs(effects[c]))[:s.n_mlp]
        att = loc["attribution"]
        cand = loc["candidates_heads"] + loc["candidates_mlp"]
        a = PatchResult(what="x", method="attribution", clean_logit_diff=0, corrupt_logit_diff=0, n_items=1,
                        results=[{"component": c, "position": None, "effect": att[c]} for c in cand])
        b = PatchResult(what="x", method="activation", clean_logit_diff=0, corrupt_logit_diff=0, n_items=1,
                        results=[{"component": c, "position": None, "effect": effects[c]} for c in cand if c in effects])
        out.update({"effects": effects, "circuit_heads": sorted(heads, key=_unit_order),
                    "circuit_mlps": sorted(mlps, key=_mlp_layer), "rank_correlation": rank_correlation(a, b)})
        return out

    return steps.run("confirm", {"localise": steps.keys["localise"], "top": s.top, "n_mlp": s.n_mlp,
                                 "min_effect": s.min_effect}, run)


def _unit_order(u: str):
    x = Unit.parse(u)
    return (x.layer, x.index)


# ----------------------------------------------------------------------------- 4. paths


def paths_step(steps, store, hm, ds, dsi, conf, s, inv_id):
    from ..patching import path_patching

    heads = conf["circuit_heads"]

    def run() -> dict:
        res = path_patching(hm, ds.items, "logits", senders=heads, batch_size=s.batch_size, max_batch=s.max_batch)
        key = content_hash("investigate-path", dsi["hash"], hm.spec, "logits", heads)
        logits_run = _store_run(store, hm, ds, key, res, {"investigation": inv_id})
        direct = {r["component"]: r["effect"] for r in res.results}
        edges, runs = [], [logits_run]
        for h, e in direct.items():
            edges.append({"sender": h, "receiver": "logits", "channel": "direct", "effect": e, "run_id": logits_run})
        for recv in heads:
            L = Unit.parse(recv).layer
            senders = [h for h in heads if Unit.parse(h).layer < L]
            if not senders:
                continue
            # through q, k and v together first; split into channels only for senders that matter
            r = path_patching(hm, ds.items, [f"{recv}:{ch}" for ch in "qkv"], senders=senders,
                              batch_size=s.batch_size, max_batch=s.max_batch)
            key = content_hash("investigate-path", dsi["hash"], hm.spec, f"{recv}:qkv", senders)
            rid = _store_run(store, hm, ds, key, r, {"investigation": inv_id})
            runs.append(rid)
            joint = {row["component"]: row["effect"] for row in r.results}
            strong = [h for h in senders if abs(joint.get(h, 0.0)) >= s.min_edge]
            for h in senders:
                if h not in strong:
                    edges.append({"sender": h, "receiver": recv, "channel": "qkv", "effect": joint.get(h, 0.0),
                                  "run_id": rid})
            if not strong:
                continue
            for ch in ("q", "k", "v"):
                r = path_patching(hm, ds.items, [f"{recv}:{ch}"], senders=strong, batch_size=s.batch_size,
                                  max_batch=s.max_batch)
                key = content_hash("investigate-path", dsi["hash"], hm.spec, f"{recv}:{ch}", strong)
                rid = _store_run(store, hm, ds, key, r, {"investigation": inv_id})
                runs.append(rid)
                for row in r.results:
                    edges.append({"sender": row["component"], "receiver": recv, "channel": ch, "effect": row["effect"],
                                  "run_id": rid})
        edges.sort(key=lambda e: -abs(e["effect"]))
        return {"logits_run": logits_run, "direct": direct, "edges": edges, "runs": runs}

    return steps.run("paths", {"confirm": steps.keys["confirm"]}, run)


# ----------------------------------------------------------------------------- 5. heads


def heads_step(steps, store, hm, ds, dsi, conf):
    from ..patching import head_wiki, role
    from ..patching.circuit import final_attention

    heads = conf["circuit_heads"]

    def run() -> dict:
        n_pos = hm.max_context or 4096
        wiki = head_wiki(store, hm, seq_len=max(4, min(24, (n_pos - 1) // 2)))
        return {"wiki": {h: wiki.get(h, {}) for h in heads}, "detector_role": {h: role(wiki.get(h, {})) for h in heads},
                "attention": final_attention(hm, ds.items, heads)}

    return steps.run("heads", {"confirm": steps.keys["confirm"]}, run)


# ----------------------------------------------------------------------------- 6. neurons


def neurons_step(steps, store, hm, ds, dsi, conf, s, llm_h, inv_id, notes):
    from ..patching import activation_patching, patch

    mlps = conf["circuit_mlps"]
    if not mlps:
        notes.append("no MLP layer passed the effect threshold, so no neuron was patched or explained")
        return {"layer": None, "neurons": [], "note": "no MLP layer in the circuit"}
    layer = _mlp_layer(mlps[0])

    def run() -> dict:
        att = patch(store, hm, ds, "neurons", "attribution", layer=layer, batch_size=s.batch_size)
        cands = [r["component"] for r in _sel(att.results, s.n_neuron_candidates)]
        res = activation_patching(hm, ds.items, "neurons", components=_components(hm, cands), batch_size=s.batch_size,
                                  max_batch=s.max_batch)
        key = content_hash("investigate-neurons", dsi["hash"], hm.spec, layer, cands)
        act_run = _store_run(store, hm, ds, key, res, {"components": "candidates", "investigation": inv_id, "layer": layer})
        attr = {r["component"]: r["effect"] for r in att.results}
        rows = [{"unit": r["component"], "effect": r["effect"], "attribution": attr.get(r["component"])}
                for r in _sel(res.results, len(res.results))]
        return {"layer": layer, "attr_run": att.run_id, "act_run": act_run, "neurons": rows}

    r = steps.run("neurons", {"confirm": steps.keys["confirm"], "n": s.n_neuron_candidates}, run)
    r = dict(r)
    r["neurons"] = [dict(x) for x in r["neurons"]]
    if s.n_explain > 0:
        ex = steps.run("explain", {"neurons": steps.keys["neurons"], "n_explain": s.n_explain,
                                   "mine_tokens": s.mine_tokens, "validate": s.validate_explanations, "llm": llm_h.name},
                       lambda: _explain(store, hm, [x["unit"] for x in r["neurons"][:s.n_explain]], s, llm_h))
        for x in r["neurons"]:
            if x["unit"] in ex["units"]:
                x.update(ex["units"][x["unit"]])
        notes.extend(ex.get("notes", []))
    return r


def _explain(store, hm, units: list[str], s, llm_h) -> dict:
    from ..pipeline import ExplainSettings, explain_unit
    from ..score.splits import SplitSizes

    out: dict[str, dict] = {}
    notes: list[str] = []
    es = ExplainSettings(k=1, scorers=("simulation",), sizes=SplitSizes(n_train=6, n_calib=1, n_test=3), n_boot=200)
    for u in units:
        try:
            res = explain_unit(store, u, model_spec=hm.spec, llm=llm_h.get(), hm=hm, settings=es, n_tokens=s.mine_tokens)
        except BudgetExceeded as e:
            notes.append(f"LLM budget reached before explaining {u}: {e}")
            break
        except AutointerpError as e:
            notes.append(f"{u} was not explained: {str(e).splitlines()[0]}")
            continue
        sim = res.explanation.scores.get("simulation")
        bsim = res.baseline.scores.get("simulation")
        row = {"explanation": res.explanation.text, "explanation_id": res.explanation.id,
               "simulation": None if sim is None else sim.value, "baseline": res.baseline.text,
               "baseline_id": res.baseline.id, "baseline_simulation": None if bsim is None else bsim.value,
               "mining_run": res.run_id}
        if s.validate_explanations:
            row.update(_validate(store, hm, u, llm_h, notes))
        out[u] = row
    return {"units": out, "notes": notes}


def _validate(store, hm, unit: str, llm_h, notes: list[str]) -> dict:
    try:
        from ..validate import ValidateSettings, validate_explanation
    except ImportError:
        notes.append("causal validation (autointerp.validate) is not installed; explanations are not validated")
        return {}
    try:
        v = validate_explanation(store, hm, None, hm.spec, unit,
                                 settings=ValidateSettings(use_llm=False, n_top=4, n_boot=100), baseline=False)
    except AutointerpError as e:
        notes.append(f"{unit}: causal validation failed: {str(e).splitlines()[0]}")
        return {}
    sc = v.explanation.scores
    return {"probe_auc": sc["probe_auc"].value if "probe_auc" in sc else None,
            "intervention": sc["intervention"].value if "intervention" in sc else None}


# ----------------------------------------------------------------------------- 7-8. hypothesis, backup


def hypothesis_step(steps, hm, ds, dsi, conf, s):
    from ..patching.circuit import evaluate_circuit

    return steps.run("hypothesis", {"confirm": steps.keys["confirm"]},
                     lambda: evaluate_circuit(hm, ds.items, conf["circuit_heads"], batch_size=s.batch_size,
                                              max_batch=s.max_batch))


def top_head(conf: dict, paths: dict) -> str:
    """The head with the largest positive direct effect (path to the logits); else the largest |effect|."""
    direct = paths.get("direct", {})
    pos = [h for h in conf["circuit_heads"] if direct.get(h, 0.0) > 0]
    if pos:
        return max(pos, key=lambda h: direct[h])
    return max(conf["circuit_heads"], key=lambda h: abs(conf["effects"].get(h, 0.0)))


def backup_step(steps, hm, ds, dsi, conf, paths, s):
    from ..patching.circuit import backup_heads

    h = top_head(conf, paths)
    return steps.run("backup", {"paths": steps.keys["paths"], "head": h, "min_rise": s.backup_min_rise},
                     lambda: backup_heads(hm, ds.items, h, batch_size=s.batch_size, min_rise=s.backup_min_rise))


# ----------------------------------------------------------------------------- 9. edges (--edges)


def edges_step(steps, store, hm, ds, dsi, conf, s, n_top: int = 10):
    """The edge-level circuit beside the node-level one: patching's find_circuit (edges scored by
    EAP or EAP-IG, pruned to s.edge_target faithfulness, each curve point measured by running the
    circuit), stored as `autointerp circuit` stores it; which localised components it contains."""
    from ..patching.edge_search import find_circuit

    def run() -> dict:
        circ = find_circuit(store, hm, ds, s.edges, target=s.edge_target, points=s.edge_points,
                            batch_size=s.batch_size, reuse=not steps.rerun)
        nodes = circ.nodes()
        sc = circ.scores.scores if circ.scores is not None else None
        top = [{"edge": circ.graph.edge_name(e), "score": None if sc is None else round(float(sc[e]), 6)}
               for e in circ.edges[:n_top]]
        localised = conf["circuit_heads"] + conf["circuit_mlps"]
        return {"circuit_id": circ.circuit_id, "method": circ.method, "target": circ.target,
                "faithfulness": circ.faithfulness, "reached_target": bool(circ.settings.get("reached_target", True)),
                "n_edges": len(circ.edges), "n_edges_total": circ.graph.n_edges,
                "clean_logit_diff": circ.clean_logit_diff, "corrupt_logit_diff": circ.corrupt_logit_diff,
                "curve": [list(p) for p in circ.curve], "top_edges": top, "nodes": nodes,
                "localised_in": [c for c in localised if c in nodes],
                "localised_missing": [c for c in localised if c not in nodes]}

    return steps.run("edges", {"dataset": dsi["hash"], "model": hm.spec, "confirm": steps.keys["confirm"],
                               "method": s.edges, "target": s.edge_target, "points": s.edge_points,
                               "batch_size": s.batch_size}, run,
                     valid=lambda r: store.get_circuit(r["circuit_id"], in_circuit_only=True) is not None)
