"""The report: a summary of the measured numbers (build_summary), each component's role written
by code from its evidence, the figures (stored with the SQL of the rows they were drawn from),
the LLM's short prose (checked, see prose_check.py) and the Markdown page (README.md in the out folder
and investigations.report_md in the store, which the viewer renders)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..core.keys import content_hash
from ..core.units import Unit, layer_of
from ..errors import AutointerpError, BudgetExceeded
from .prose_check import check_prose
from ..store.query import investigation_step_source_sql, patch_run_source_sql


def f2(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def sf2(x) -> str:
    return "-" if x is None else f"{x:+.2f}"


def pct(x) -> str:
    return "-" if x is None else f"{round(100 * x)}%"


def _is_mlp(c: str) -> bool:
    return c.startswith("blocks.")


def mlp_name(c: str) -> str:
    return f"MLP {layer_of(c)}" if _is_mlp(c) else c


# ----------------------------------------------------------------------------- roles


def head_role(h: str, direct: float | None, edges: list[dict], det_role: str, att: dict, thr: float) -> tuple[str, str]:
    """(role sentence, short label) of a circuit head, written from its measurements."""
    parts, short = [], []
    if direct is not None and direct >= thr:
        if att and att.get("answer", 0) >= 0.3:
            parts.append(f"writes the answer to the logits directly (direct effect {sf2(direct)}) and attends from the "
                         f"final token to the answer's earlier occurrence ({f2(att['answer'])}): a mover / copying head")
        else:
            parts.append(f"writes the answer to the logits directly (direct effect {sf2(direct)})")
        short.append("mover" if att and att.get("answer", 0) >= 0.3 else "direct +")
    elif direct is not None and direct <= -thr:
        parts.append(f"writes against the answer (direct effect {sf2(direct)}): a negative mover")
        short.append("negative")
    outs = [e for e in edges if e["sender"] == h and e["receiver"] != "logits" and abs(e["effect"]) >= thr]
    if outs:
        desc = ", ".join(f"{e['receiver']}:{e['channel']} ({sf2(e['effect'])})" for e in outs[:4])
        chans = {e["channel"] for e in outs}
        kind = ("feeds later heads' queries (S-inhibition-like)" if chans == {"q"} else
                "feeds later heads' keys (composition as in induction)" if chans == {"k"} else
                "feeds later heads' values" if chans == {"v"} else "feeds later heads")
        parts.append(f"{kind}: {desc}")
        short.append("->" + "/".join(sorted(chans)))
    if det_role:
        parts.append(f"head wiki: {det_role.replace('_', '-')} head")
        short.append(det_role.replace("_token", "").replace("_", "-"))
    if not parts:
        parts.append("changes the metric when patched, through paths these tests do not resolve")
    return "; ".join(parts), " ".join(short)


# ----------------------------------------------------------------------------- summary


def build_summary(inv_id, task, hm, ds, dsi, loc, conf, paths, heads, neurons, hyp, backup, step_keys, notes) -> dict:
    thr = 0.05
    comps = []
    edges = paths["edges"]
    for h in conf["circuit_heads"]:
        att = heads["attention"].get(h, {})
        role, short = head_role(h, paths["direct"].get(h), edges, heads["detector_role"].get(h, ""), att, thr)
        comps.append({"component": h, "kind": "head", "layer": Unit.parse(h).layer,
                      "activation_effect": conf["effects"].get(h), "attribution": loc["attribution"].get(h),
                      "direct_effect": paths["direct"].get(h), "detectors": heads["wiki"].get(h, {}),
                      "detector_role": heads["detector_role"].get(h, ""), "attention": att, "role": role, "short": short})
    for m in conf["circuit_mlps"]:
        e = conf["effects"].get(m)
        top = [n["unit"] for n in neurons.get("neurons", [])[:3]]
        role = (f"MLP layer whose output carries {sf2(e)} of the normalised logit difference when patched"
                + (f"; its top neurons by patching: {', '.join(top)}" if top else ""))
        comps.append({"component": m, "kind": "mlp", "layer": int(m.split(".")[1]), "activation_effect": e,
                      "attribution": loc["attribution"].get(m), "direct_effect": None, "role": role, "short": "MLP"})
    ex = ds.items[0]
    return {
        "id": inv_id, "task": task, "model": hm.spec,
        "dataset": {"name": ds.name, "n_items": ds.n_items, "source": ds.source, "stats": dsi.get("stats") or {},
                    "example": {"clean": ex.clean, "corrupt": ex.corrupt, "answer": ex.answer, "wrong": ex.wrong}},
        "clean_logit_diff": loc["clean_logit_diff"], "corrupt_logit_diff": loc["corrupt_logit_diff"],
        "candidates": {"heads": loc["candidates_heads"], "mlp": loc["candidates_mlp"]},
        "circuit": conf["circuit_heads"] + conf["circuit_mlps"], "components": comps, "edges": edges,
        "rank_correlation": conf.get("rank_correlation"), "hypothesis": hyp, "backup": backup, "neurons": neurons,
        "runs": {"attr_heads": loc["attr_heads_run"], "attr_mlp": loc["attr_mlp_run"],
                 "act_heads": conf.get("act_heads_run"), "act_mlp": conf.get("act_mlp_run"),
                 "path_logits": paths["logits_run"], "paths": paths["runs"],
                 "attr_neurons": neurons.get("attr_run"), "act_neurons": neurons.get("act_run")},
        "steps": step_keys, "notes": notes,
    }


# ----------------------------------------------------------------------------- facts and prose


def facts_text(sm: dict) -> str:
    """The measured numbers as the report prints them: what the LLM writes from and what its
    numbers are checked against."""
    d = sm["dataset"]
    lines = [f"Task: {sm['task']}. Model: {sm['model']}. Dataset: {d['n_items']} prompt pairs.",
             f"Mean logit difference (answer minus wrong): clean {f2(sm['clean_logit_diff'])}, corrupt "
             f"{f2(sm['corrupt_logit_diff'])}."]
    for c in sm["components"]:
        if c["kind"] == "head":
            lines.append(f"Head {c['component']}: patching effect {sf2(c['activation_effect'])}, direct effect "
                         f"{sf2(c['direct_effect'])}. Role: {c['role']}.")
        else:
            lines.append(f"{mlp_name(c['component'])}: patching effect {sf2(c['activation_effect'])}.")
    h = sm["hypothesis"]
    lines.append(f"Faithfulness: with every other head mean-ablated the circuit recovers {f2(h['faithfulness'])} "
                 f"({pct(h['faithfulness'])}) of the logit difference. With the circuit ablated the model keeps "
                 f"{f2(h['model_minus_circuit'])} ({pct(h['model_minus_circuit'])}).")
    b = sm["backup"]
    if b["backup_heads"]:
        lines.append(f"Backup: when {b['ablated']} is ablated, {', '.join(b['backup_heads'])} raise their direct "
                     f"effect by {f2(b['compensation'])} in total.")
    else:
        lines.append(f"Backup: when {b['ablated']} is ablated, no other head takes over its direct effect.")
    lines += edge_lines(sm.get("edge_circuit"))
    for n in sm["neurons"].get("neurons", []):
        if n.get("explanation"):
            lines.append(f"Neuron {n['unit']}: patching effect {sf2(n['effect'])}; explanation: {n['explanation']}")
    return "\n".join(lines)


def f3(x) -> str:
    return "-" if x is None else f"{x:+.3f}"


def edge_lines(ec: dict | None) -> list[str]:
    """The edge circuit's measured numbers as sentences (facts for the prose check, and the report's section)."""
    if not ec:
        return []
    reached = "reaching" if ec["reached_target"] else "short of"
    out = [f"Edge circuit ({ec['method']}, stored circuit {ec['circuit_id']}): {ec['n_edges']} of {ec['n_edges_total']} "
           f"edges kept; running it (every other edge patched to its corrupt value) recovers {f2(ec['faithfulness'])} "
           f"({pct(ec['faithfulness'])}) of the logit difference, {reached} the target {f2(ec['target'])}."]
    loc = [mlp_name(c) for c in ec["localised_in"]]
    miss = [mlp_name(c) for c in ec["localised_missing"]]
    out.append("Node-level circuit components in the edge circuit: " + (", ".join(loc) or "none") + "; not in it: "
               + (", ".join(miss) or "none") + ".")
    return out


def template_prose(sm: dict) -> list[str]:
    h = sm["hypothesis"]
    heads = [c["component"] for c in sm["components"] if c["kind"] == "head"]
    out = [f"On {sm['dataset']['n_items']} prompt pairs of the task, {sm['model']} prefers the answer by "
           f"{f2(sm['clean_logit_diff'])} logits on the clean prompts and by {f2(sm['corrupt_logit_diff'])} on the "
           f"corrupt ones."]
    if h.get("faithfulness") is not None:
        out.append(f"The {len(heads)} heads found ({', '.join(heads)}) recover {pct(h['faithfulness'])} of the logit "
                   f"difference when every other head is mean-ablated.")
    return out


def prose_step(steps, sm: dict, llm_h, s) -> dict:
    facts = facts_text(sm)
    protected = [sm["model"], sm["task"], sm["dataset"]["name"]]
    if not s.prose:
        return {"text": " ".join(template_prose(sm)), "source": "template", "dropped": [], "raw": None}

    def run() -> dict:
        from ..explain.explainer import choose_style
        from ..llm import load_prompt

        try:
            llm = llm_h.get()
            style = choose_style(llm, "auto")
            p = load_prompt(f"report_{style}")
            if style == "chat":
                raw = llm.chat(p.render(facts=facts), max_tokens=160, template=p)[0]
            else:
                raw = llm.complete(p.render(facts=facts), max_tokens=120, stop=["\n\n", "\nFacts"], template=p)[0]
        except BudgetExceeded as e:
            return {"text": " ".join(template_prose(sm)), "source": "template", "dropped": [], "raw": None,
                    "note": f"LLM budget reached: {e}"}
        except AutointerpError as e:
            return {"text": " ".join(template_prose(sm)), "source": "template", "dropped": [], "raw": None,
                    "note": f"the LLM wrote no prose: {str(e).splitlines()[0]}"}
        chk = check_prose(raw, facts, protected)
        if not chk["kept"]:
            return {"text": " ".join(template_prose(sm)), "source": "template", "dropped": chk["dropped"], "raw": raw}
        return {"text": " ".join(chk["kept"]), "source": llm_h.name, "dropped": chk["dropped"], "raw": raw}

    return steps.run("prose", {"facts": content_hash(facts), "llm": llm_h.name}, run)


# ----------------------------------------------------------------------------- figures


def make_figures(store, hm, inv_id: str, sm: dict, s) -> list[dict]:
    """[{name, caption, source, png}] for the report."""
    from ..patching.api import result_from_row
    from . import figures as F

    out = []
    runs = sm["runs"]

    def run_fig(name, run_id, caption, title):
        if run_id is None:
            return
        row = store.get_patch_run(run_id=run_id)
        if row is None or not row["results"]:
            return
        png = F.heatmap_png(result_from_row(row), hm.n_layers, hm.n_heads, title)
        out.append({"name": name, "caption": caption, "png": png,
                    "source": {"table": "patch_results", "run_ids": [run_id], "sql": patch_run_source_sql(run_id)}})

    comps = sm["components"]
    roles = {c["component"]: c["short"] for c in comps}
    effects = {c["component"]: c["activation_effect"] for c in comps if c["activation_effect"] is not None}
    heads = [c["component"] for c in comps if c["kind"] == "head"]
    mlps = [c["component"] for c in comps if c["kind"] == "mlp"]
    png = F.circuit_png(heads, mlps, sm["edges"], roles, effects, hm.n_layers, min_edge=s.min_edge,
                        title=f"{sm['task'][:60]} on {sm['model']}: node = patching effect, arrow = path-patching effect")
    src_runs = [runs["act_heads"], runs["act_mlp"], *runs["paths"]]
    out.append({"name": "circuit.png", "caption": "The circuit: nodes at their layer with their activation-patching effect "
                "and role; arrows = path-patching effects (sender -> receiver's q/k/v, or -> logits directly), "
                f"|effect| >= {s.min_edge}.",
                "png": png, "source": {"table": "patch_results", "run_ids": [r for r in src_runs if r is not None],
                                       "sql": patch_run_source_sql([r for r in src_runs if r is not None])}})
    run_fig("attribution_heads.png", runs["attr_heads"], "Attribution patching of every head (denoising, normalised "
            "logit difference): the ranking the candidates come from.", "attribution patching, heads")
    run_fig("activation_heads.png", runs["act_heads"], "Activation patching of the candidate heads (blank: not a "
            "candidate).", "activation patching, candidate heads")
    run_fig("attribution_mlp.png", runs["attr_mlp"], "Attribution patching of every MLP layer's output.",
            "attribution patching, MLP layers")
    run_fig("path_logits.png", runs["path_logits"], "Path patching: each circuit head's direct effect on the logits "
            "(every other head and MLP frozen).", "path patching to the logits")
    h = sm["hypothesis"]
    labels = ["full model", "circuit only", "model - circuit", "no heads"]
    vals = [h["F_model"], h["F_circuit"], h["F_model_minus_circuit"], h["F_empty"]]
    out.append({"name": "hypothesis.png", "caption": "Mean clean logit difference with the heads outside each set "
                "mean-ablated (MLPs kept): faithfulness = (circuit only - no heads) / (full model - no heads).",
                "png": F.bars_png(labels, {"logit diff": vals}, f"faithfulness {f2(h['faithfulness'])}, "
                                  f"model - circuit {f2(h['model_minus_circuit'])}", "mean logit diff"),
                "source": {"table": "investigation_steps", "sql": investigation_step_source_sql(inv_id, "hypothesis")}})
    b = sm["backup"]
    rows = b["rows"][:8]
    if rows:
        out.append({"name": "backup.png", "caption": f"Direct logit attribution of the other heads before and after "
                    f"mean-ablating {b['ablated']} (the heads whose DLA changes most).",
                    "png": F.bars_png([r["head"] for r in rows], {"before": [r["dla_before"] for r in rows],
                                                                    f"{b['ablated']} ablated": [r["dla_after"] for r in rows]},
                                      f"backup test: ablate {b['ablated']}", "DLA (logits)"),
                    "source": {"table": "investigation_steps", "sql": investigation_step_source_sql(inv_id, "backup")}})
    nr = sm["neurons"].get("neurons", [])
    if nr:
        rid = runs["act_neurons"]
        top = nr[:12]
        out.append({"name": "neurons.png", "caption": f"Activation patching of the candidate neurons of MLP "
                    f"{sm['neurons']['layer']} (chosen by attribution patching).",
                    "png": F.bars_png([n["unit"] for n in top], {"activation": [n["effect"] for n in top],
                                                                  "attribution": [n["attribution"] or 0.0 for n in top]},
                                      f"neurons of MLP {sm['neurons']['layer']}", "normalised effect"),
                    "source": {"table": "patch_results", "run_ids": [rid], "sql": patch_run_source_sql(rid)}})
    return out


# ----------------------------------------------------------------------------- markdown


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows])


def findings(sm: dict) -> list[str]:
    """The code-written factual section (always present)."""
    h, b = sm["hypothesis"], sm["backup"]
    heads = [c for c in sm["components"] if c["kind"] == "head"]
    mlps = [c for c in sm["components"] if c["kind"] == "mlp"]
    out = [f"Mean logit difference (answer - wrong) over {sm['dataset']['n_items']} pairs: clean "
           f"{f2(sm['clean_logit_diff'])}, corrupt {f2(sm['corrupt_logit_diff'])}."]
    out.append("Circuit heads (by activation-patching effect, denoising, 1 = the whole clean-corrupt gap): "
               + ", ".join(f"{c['component']} ({sf2(c['activation_effect'])})" for c in heads) + ".")
    if mlps:
        out.append("MLP layers: " + ", ".join(f"{mlp_name(c['component'])} ({sf2(c['activation_effect'])})" for c in mlps) + ".")
    if sm.get("rank_correlation") is not None:
        out.append(f"Attribution patching ranks the candidates like activation patching with Spearman "
                   f"{f2(sm['rank_correlation'])}.")
    strong = [e for e in sm["edges"] if e["receiver"] != "logits" and abs(e["effect"]) >= 0.05][:4]
    if strong:
        out.append("Strongest head-to-head paths: " + ", ".join(
            f"{e['sender']} -> {e['receiver']}:{e['channel']} ({sf2(e['effect'])})" for e in strong) + ".")
    out.append(f"Faithfulness: keeping only the circuit's heads (every other head mean-ablated) recovers "
               f"{f2(h['faithfulness'])} ({pct(h['faithfulness'])}) of the logit difference above the all-ablated "
               f"baseline (F(C)/F(M) = {f2(h['ratio'])}).")
    out.append(f"Completeness: with the circuit ablated, the rest of the model keeps {f2(h['model_minus_circuit'])} "
               f"of it; largest incompleteness |F(C\\K) - F(M\\K)| / F(M) = {f2(h['max_incompleteness'])}.")
    if b["backup_heads"]:
        out.append(f"Backup: mean-ablating {b['ablated']} (DLA {f2(b['ablated_dla'])}) makes "
                   f"{', '.join(b['backup_heads'])} raise their direct effect by {f2(b['compensation'])} in total; "
                   f"the logit difference goes from {f2(b['logit_diff_before'])} to {f2(b['logit_diff_after'])}.")
    else:
        out.append(f"Backup: mean-ablating {b['ablated']} (DLA {f2(b['ablated_dla'])}) leaves no head raising its "
                   f"direct effect by more than {f2(b['threshold'])}; the logit difference goes from "
                   f"{f2(b['logit_diff_before'])} to {f2(b['logit_diff_after'])}.")
    return out


def markdown(sm: dict, prose: dict, figs: list[dict], timings: dict, s, llm_name: str) -> str:
    d, h, b = sm["dataset"], sm["hypothesis"], sm["backup"]
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig = {f["name"]: f for f in figs}
    L = [f"# Investigation: {sm['task']} on {sm['model']}", "",
         f"*investigation `{sm['id']}` · dataset `{d['name']}` ({d['n_items']} pairs, {d['source']}) · {date}*", "",
         "## Summary", ""]
    src = ("template written by code from the measurements" if prose["source"] == "template" else
           f"written by {prose['source']}; every number checked against the measurements"
           + (f", {len(prose['dropped'])} sentence(s) dropped" if prose["dropped"] else ""))
    L += [f"> {prose['text']}", ">", f"> *({src})*", "", "## Findings", "",
          "*(written by code from the measured values)*", ""]
    L += [f"- {x}" for x in findings(sm)] + [""]

    def img(name):
        if name in fig:
            L.extend([f"![{name}]({name})", "", f"*{fig[name]['caption']}*", ""])

    L += ["## The circuit", ""]
    img("circuit.png")
    rows = []
    for c in sm["components"]:
        det = c.get("detectors") or {}
        dets = ", ".join(f"{k} {v:.2f}" for k, v in sorted(det.items(), key=lambda x: -x[1])[:2]) if det else "-"
        att = c.get("attention") or {}
        atts = (f"answer {f2(att.get('answer'))}, wrong {f2(att.get('wrong'))}, edited {f2(att.get('edited'))}"
                if att else "-")
        rows.append([mlp_name(c["component"]), sf2(c["activation_effect"]), sf2(c["attribution"]),
                     sf2(c["direct_effect"]), dets, atts, c["role"]])
    L += [_table(["component", "patching", "attribution", "direct (path)", "head wiki", "attention from final token",
                  "role (from the evidence)"], rows), ""]
    L += ["## Who talks to whom (path patching)", "",
          "Effect of each circuit head through one input of a later circuit head (q, k or v) or directly on the "
          "logits, everything else frozen (normalised: 1 = the whole clean-corrupt gap).", ""]
    er = [[e["sender"], e["receiver"] + ("" if e["receiver"] == "logits" else f":{e['channel']}"), sf2(e["effect"]),
           e["run_id"]] for e in sm["edges"] if abs(e["effect"]) >= s.min_edge]
    L += [_table(["sender", "receiver", "effect", "patch run"], er) if er else "*(no edge above the threshold)*", ""]
    ec = sm.get("edge_circuit")
    if ec:
        L += [f"## Edge circuit ({ec['method']})", "",
              "*(written by code from the measured values; the whole circuit in the viewer at "
              f"`/circuit/{ec['circuit_id']}`, or `autointerp circuit --show {ec['circuit_id']}`)*", ""]
        L += [f"- {x}" for x in edge_lines(ec)] + [""]
        L += [f"Top {len(ec['top_edges'])} edges of the circuit by score (the normalised change of the logit "
              "difference when that edge alone is patched):", ""]
        L += [_table(["rank", "edge", "score"], [[i + 1, e["edge"], f3(e["score"])]
                                                 for i, e in enumerate(ec["top_edges"])]), ""]
        if len(ec["curve"]) > 1:
            L += ["Faithfulness against the number of edges kept (each point measured): "
                  + ", ".join(f"{k}: {f2(f)}" for k, f in ec["curve"]) + ".", ""]
    L += ["## Localisation", "",
          f"Attribution patching ranked every head and MLP layer; the top {len(sm['candidates']['heads'])} heads and "
          f"{len(sm['candidates']['mlp'])} MLP layers were confirmed by activation patching.", ""]
    for n in ("attribution_heads.png", "activation_heads.png", "attribution_mlp.png", "path_logits.png"):
        img(n)
    nr = sm["neurons"]
    L += ["## Neurons", ""]
    if nr.get("neurons"):
        L += [f"Neuron-level patching of MLP {nr['layer']}: attribution over all its neurons, activation patching of "
              "the top candidates; the top ones explained and scored by the neuron pipeline.", ""]
        img("neurons.png")
        rows = []
        for n in nr["neurons"][:max(5, s.n_explain)]:
            rows.append([n["unit"], sf2(n["effect"]), sf2(n.get("attribution")), n.get("explanation", "-"),
                         f2(n.get("simulation")), n.get("baseline", "-"), f2(n.get("probe_auc")),
                         f2(n.get("intervention"))])
        L += [_table(["neuron", "patching", "attribution", "explanation", "simulation", "baseline explanation",
                      "probe AUC", "intervention"], rows), ""]
    else:
        L += [f"*{nr.get('note', 'no neuron was examined')}*", ""]
    L += ["## Hypothesis tests", "", f"Ablation: {h['ablation']}.", ""]
    img("hypothesis.png")
    L += [_table(["set of heads kept", "mean logit diff"], [
        ["all (full model)", f2(h["F_model"])], ["circuit only", f2(h["F_circuit"])],
        ["all but the circuit", f2(h["F_model_minus_circuit"])], ["none", f2(h["F_empty"])]]), ""]
    L += [_table(["removed K", "F(C \\ K)", "F(M \\ K)", "incompleteness"],
                 [[k["removed"], f2(k["F_circuit_minus"]), f2(k["F_model_minus"]), f2(k["incompleteness"])]
                  for k in h["incompleteness"]]), ""]
    L += ["### Backup behaviour", ""]
    img("backup.png")
    L += [_table(["head", "DLA before", f"DLA with {b['ablated']} ablated", "rise"],
                 [[r["head"], f2(r["dla_before"]), f2(r["dla_after"]), sf2(r["rise"])] for r in b["rows"]]), ""]
    L += ["## Dataset", "", f"`{d['name']}`: {d['n_items']} pairs ({d['source']}). Example:", "",
          _table(["clean", "corrupt", "answer", "wrong"],
                 [[repr(d["example"]["clean"]), repr(d["example"]["corrupt"]), repr(d["example"]["answer"]),
                   repr(d["example"]["wrong"])]]), ""]
    st = d.get("stats") or {}
    if st.get("rejected"):
        L += ["Validation: " + ", ".join(f"{k} {v}" for k, v in st["rejected"].items() if v)
              + f" rejected of {st.get('candidates', '?')} candidates.", ""]
    L += ["## Sources", "", "Every figure's rows in the store (`sqlite3 STORE \"SQL\"`):", ""]
    L += [_table(["figure", "rows", "SQL"], [[f["name"], f["source"].get("table", ""), f"`{f['source']['sql']}`"]
                                             for f in figs]), ""]
    srows = []
    for k, v in timings.items():
        reused = f"yes (computed in {v.get('computed_seconds') or 0:.1f} s)" if v.get("reused") else "no"
        cpu = "-" if v.get("cpu_seconds") is None else f"{v['cpu_seconds']:.1f}"
        srows.append([k, f"{v['seconds']:.1f}", cpu, reused, f"`{sm['steps'].get(k, '')[:12]}`"])
    L += ["## Steps", "", _table(["step", "wall s", "cpu s", "reused", "key"], srows), ""]
    notes = list(sm.get("notes") or [])
    if prose.get("note"):
        notes.append(prose["note"])
    if prose.get("dropped"):
        notes += [f"prose sentence dropped ({x['reason']}): {x['sentence']!r}" for x in prose["dropped"]]
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    how = (f"--dataset {sm['dataset_arg']!r}" if sm.get("dataset_arg") else f"--task {sm['task']!r}")
    if s.edges:
        how += f" --edges {s.edges}" + ("" if s.edge_target == 0.8 else f" --edge-target {s.edge_target:g}")
    L += [f"*LLM: {llm_name}. Reproduce: `autointerp investigate {how} --model {sm['model']} --n {s.n} --top {s.top}` "
          f"(stored steps are reused).*", ""]
    return "\n".join(L)


def figures_step(steps, store, hm, inv_id: str, sm: dict, s) -> list[dict]:
    """The figures, stored per investigation; redrawn only when what they show changed."""
    keyed = {k: v for k, v in sm.items() if k not in ("steps", "notes", "prose")}

    def draw() -> dict:
        figs = make_figures(store, hm, inv_id, sm, s)
        for f in figs:
            store.put_investigation_figure(inv_id, f["name"], f["png"], caption=f["caption"], source=f["source"])
        return {"investigation": inv_id, "figures": [{k: f[k] for k in ("name", "caption", "source")} for f in figs]}

    def present(r: dict) -> bool:
        return all(store.get_investigation_figure(r["investigation"], f["name"]) is not None for f in r["figures"])

    r = steps.run("figures", {"summary": content_hash(_jsonable(keyed)), "min_edge": s.min_edge}, draw, valid=present)
    out = []
    for f in r["figures"]:
        png = store.get_investigation_figure(r["investigation"], f["name"])
        if r["investigation"] != inv_id:
            store.put_investigation_figure(inv_id, f["name"], png, caption=f["caption"], source=f["source"])
        out.append({**f, "png": png})
    return out


def write_report(steps, store, hm, inv_id: str, sm: dict, s, llm_h, out) -> dict:
    prose = prose_step(steps, sm, llm_h, s)
    sm["prose"] = prose
    figs = figures_step(steps, store, hm, inv_id, sm, s)
    md = markdown(sm, prose, figs, steps.timings, s, llm_h.name if (s.prose or s.n_explain) else "none")
    path = None
    if out is not None:
        od = Path(out)
        od.mkdir(parents=True, exist_ok=True)
        for f in figs:
            (od / f["name"]).write_bytes(f["png"])
        p = od / "README.md"
        p.write_text(md)
        path = str(p)
    store.update_investigation(inv_id, status="done", summary=_jsonable(sm), report_md=md,
                               out_dir=None if out is None else str(out))
    return {"markdown": md, "path": path, "figures": [f["name"] for f in figs]}


def _jsonable(x):
    import json

    return json.loads(json.dumps(x, default=str))

