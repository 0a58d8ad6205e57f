"""investigate(): from a task in words to a validated, linked report. It composes the stages
(tasks -> patching -> head wiki / neuron pipeline -> circuit tests -> report) and holds no
science of its own (the circuit tests are patching/circuit.py); the report's LLM prose is checked
by prose_check.py, next to the report it guards.

    from autointerp.investigate import investigate, InvestigateSettings
    res = investigate(store, hm, "ioi", llm="embedded:smollm2-135m", out="report/")
    res.summary["hypothesis"]["faithfulness"], res.report_path

Steps (each stored in investigation_steps, keyed by a hash of its inputs, reused on a re-run):
    dataset     build and validate the task's counterfactual pairs (built-in or LLM-written), or take one
    localise    attribution patching of every head and every MLP layer: rank the candidates
    confirm     activation patching of the candidates: the circuit = the top heads (and MLP layers)
    paths       path patching from the circuit's heads to the logits and to later circuit heads' q/k/v
    heads       head-wiki detector scores and where each circuit head attends from the final token
    neurons     neuron-level patching of the top MLP layer; the top neurons explained, scored, validated
    hypothesis  faithfulness and completeness of the circuit (mean ablation)
    backup      ablate the top head, re-measure the other heads' direct effects
    edges       (--edges eap|eap-ig) the edge-level circuit (patching/edge_search.find_circuit: edges
                scored, pruned to a faithfulness target measured by running the circuit), stored as
                `autointerp circuit` stores it (viewer: /circuit/ID), checked against the node-level heads
    prose       the LLM's short summary, every number checked against the measurements
The LLM plans nothing: it writes pairs (free-text tasks), explains neurons and writes the prose.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from ..errors import UsageError
from ..core.keys import content_hash
from .steps import VERSION, Steps


class InvestigateSettings(BaseModel):
    n: int = 32                       # dataset items
    top: int = 5                      # heads in the circuit
    n_candidates: int | None = None   # heads confirmed by activation patching [default: max(2 top, top + 4)]
    n_mlp_candidates: int = 3         # MLP layers confirmed by activation patching
    n_mlp: int = 1                    # MLP layers kept in the circuit (neuron-level patching of the first)
    n_neuron_candidates: int = 16     # neurons of that layer confirmed by activation patching
    n_explain: int = 2                # top neurons explained and scored by the neuron pipeline (0: none)
    mine_tokens: int = 4096           # corpus tokens mined for the explained neurons' layer (a small slice)
    validate_explanations: bool = True             # causal validation of the neuron explanations (if autointerp.validate exists)
    min_effect: float = 0.02          # |normalised effect| a confirmed component needs
    min_edge: float = 0.02            # |normalised effect| an edge of the circuit graph needs
    backup_min_rise: float = 0.1      # a backup head's DLA rises by this x |DLA of the ablated head|
    prose: bool = True                # ask the LLM for a summary paragraph (checked; a template otherwise)
    seed: int = 0
    margin: float = 1.0               # pair validation margin (built-in and LLM-written tasks)
    batch_size: int = 32
    max_batch: int = 256
    edges: str | None = None          # also find the edge-level circuit: 'eap' or 'eap-ig' (None: node level only)
    edge_target: float = 0.8          # its faithfulness target (fraction of the logit difference recovered)
    edge_points: int = 8              # circuit sizes measured on its faithfulness-vs-edges curve

    def science(self) -> dict:
        """The settings that determine results. Without --edges the edge settings are left out, so an
        investigation's id is what it was before the edge step existed."""
        d = self.model_dump()
        if d["edges"] is None:
            for k in ("edges", "edge_target", "edge_points"):
                d.pop(k)
        return d


class InvestigationResult(BaseModel):
    id: str
    task: str
    model_id: str
    dataset: str
    summary: dict
    report_md: str
    report_path: str | None = None
    figures: list[str] = []
    timings: dict[str, dict] = {}
    total_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"id": self.id, "task": self.task, "model": self.model_id, "dataset": self.dataset,
                "report": self.report_path, "figures": self.figures, "timings": self.timings,
                "total_seconds": self.total_seconds, **{k: self.summary.get(k) for k in (
                    "clean_logit_diff", "corrupt_logit_diff", "circuit", "edges", "hypothesis", "backup", "neurons",
                    "components", "edge_circuit")}}


def investigation_id(task: str | None, dataset: str | None, model_id: str, s: InvestigateSettings) -> str:
    return content_hash(VERSION, task, dataset, model_id, s.science())


class _LLMHolder:
    """Creates the LLM on first use (a built-in task with no explanations and no prose needs none)."""

    def __init__(self, spec_or_llm, store, hm, budget_usd: float | None, base_url: str | None = None, config=None):
        from ..config import Settings

        self.spec = spec_or_llm
        self.base_url = base_url
        self.config = config if config is not None else Settings.defaults()
        self.store, self.hm, self.budget_usd = store, hm, budget_usd
        self._llm = None if isinstance(spec_or_llm, (str, type(None))) else spec_or_llm

    @property
    def name(self) -> str:
        if self._llm is not None:
            return getattr(self._llm, "name", type(self._llm).__name__)
        return self.spec or self.config.llm

    def get(self):
        if self._llm is None:
            from ..llm import Budget
            from ..pipeline import make_llm

            spec = self.spec or self.config.llm
            budget = Budget(max_cost_usd=self.budget_usd) if self.budget_usd is not None else None
            self._llm = make_llm(spec, store=self.store, budget=budget, base_url=self.base_url, hm=self.hm,
                                 settings=self.config)
        return self._llm


def _run_ids(*results) -> list[int]:
    return [r.run_id for r in results if r is not None and r.run_id is not None]


def investigate(store, hm, task: str | None = None, *, dataset: str | None = None, llm=None,
                settings: InvestigateSettings | None = None, out: str | Path | None = None,
                budget_usd: float | None = None, llm_base_url: str | None = None, rerun: bool = False,
                log: Callable[[str], None] | None = None, config=None) -> InvestigationResult:
    """Run (or resume) the investigation of `task` (a built-in task name such as 'ioi', or a
    description for the LLM to write pairs for) or of a stored/file `dataset` on the subject
    model `hm`; write the report to `out` (a folder: README.md + PNG figures) and the store.
    config: the resolved config.Settings for the LLM's defaults (the CLI's; None: the library
    defaults)."""
    if not task and not dataset:
        raise UsageError("give --task (a built-in task like ioi, or a description) or --dataset")
    s = settings or InvestigateSettings()
    if s.top < 1 or s.n < 1:
        raise UsageError("--top and --n must be at least 1")
    if s.edges is not None and s.edges not in ("eap", "eap-ig"):
        raise UsageError(f"unknown --edges {s.edges!r}: use eap or eap-ig")
    if not 0 < s.edge_target <= 1:
        raise UsageError(f"--edge-target {s.edge_target} out of range: use a fraction in (0, 1], e.g. 0.8")
    if s.edge_points < 2:
        raise UsageError("edge_points must be at least 2")
    t_start = time.perf_counter()
    from . import stages

    task_label = task or f"dataset {dataset}"
    inv_id = investigation_id(task, dataset, hm.spec, s)
    store.put_model(hm.spec, hm.info())
    store.put_investigation(inv_id, task=task_label, model_id=hm.spec, settings={**s.science(), "dataset_arg": dataset})
    steps = Steps(store, inv_id, rerun=rerun, log=log)
    llm_h = _LLMHolder(llm, store, hm, budget_usd, llm_base_url, config)
    notes: list[str] = []
    try:
        ds, ds_info = stages.dataset_step(steps, store, hm, task, dataset, s, llm_h)
        store.update_investigation(inv_id, dataset=ds.name)
        loc = stages.localise_step(steps, store, hm, ds, ds_info, s)
        conf = stages.confirm_step(steps, store, hm, ds, ds_info, loc, s, inv_id)
        paths = stages.paths_step(steps, store, hm, ds, ds_info, conf, s, inv_id)
        heads = stages.heads_step(steps, store, hm, ds, ds_info, conf)
        neurons = stages.neurons_step(steps, store, hm, ds, ds_info, conf, s, llm_h, inv_id, notes)
        hyp = stages.hypothesis_step(steps, hm, ds, ds_info, conf, s)
        backup = stages.backup_step(steps, hm, ds, ds_info, conf, paths, s)
        edge = stages.edges_step(steps, store, hm, ds, ds_info, conf, s) if s.edges else None
        from .report import build_summary, write_report

        summary = build_summary(inv_id, task_label, hm, ds, ds_info, loc, conf, paths, heads, neurons, hyp, backup,
                                steps.keys, notes)
        summary["dataset_arg"] = dataset
        summary["edge_circuit"] = edge
        res = write_report(steps, store, hm, inv_id, summary, s, llm_h, out)
    except BaseException as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        store.update_investigation(inv_id, status="failed", error=msg[:500])
        raise
    total = round(time.perf_counter() - t_start, 3)
    return InvestigationResult(id=inv_id, task=task_label, model_id=hm.spec, dataset=ds.name, summary=summary,
                               report_md=res["markdown"], report_path=res["path"], figures=res["figures"],
                               timings=steps.timings, total_seconds=total)


__all__ = ["investigate", "InvestigateSettings", "InvestigationResult", "investigation_id"]
