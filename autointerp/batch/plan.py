"""What a batch covers: the units (ordered, sharded), the mining run of each layer, each unit's
job key, and which jobs are still to do. Pure planning: reads the store, writes nothing.

Job key = content_hash of everything that determines a unit's result:
    (JOB_VERSION, explain PIPELINE_VERSION, model, unit, mining run id (which fixes the records),
     explainer LLM, simulator LLM, explain style, the hashes of every prompt template the
     pipeline may use, the ExplainSettings)
so an identical re-run finds its job done, and any change (a template edit, another LLM, other
settings, a new mining run) makes new jobs for the same units.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from ..errors import UsageError
from ..pipeline import PIPELINE_VERSION, ExplainSettings
from ..core.keys import content_hash
from ..core.units import UNIT_KINDS, Unit, kind_of_plural

JOB_VERSION = 1
STAGE = "explain"
# every template explain_exemplars may load (which ones depends on the backend and the simulator): the
# explainer's and each registered scorer's (score/registry.py)
EXPLAIN_TEMPLATES = ("explain_completion", "explain_chat")


def templates() -> tuple[str, ...]:
    from ..score.registry import all_templates

    return EXPLAIN_TEMPLATES + all_templates()


class BatchOptions(BaseModel):
    model: str = "smollm2-135m"            # subject model spec (as stored: model_id)
    layers: str | list[int] | None = None  # '0-3', '0,2', [0, 1]; None: all layers
    units: str = "neurons"                 # neurons | heads | latents (of the SAE given as run_batch(sae=...))
    unit_ids: list[str] | None = None      # explicit units (L3/N42, L1/F3 ...), instead of whole layers
    limit: int | None = None               # the first N units not done (after sharding)
    shard: tuple[int, int] | None = None   # (i, n): units whose position in the ordered list is i mod n
    concurrency: int = 1                   # worker threads
    llm: str = "embedded:smollm2-135m"
    llm_base_url: str | None = None
    max_llm_tokens: int | None = None
    max_cost_usd: float | None = None
    n_tokens: int | None = None            # tokens to mine for layers with no run [default: mine.DEFAULT_TOKENS]
    corpus: str | None = None              # corpus to mine / runs to use [default: the offline gensim corpus]
    mined: str | None = None               # a mined store, read read-only (runs, records, stats): this run mines
                                           # nothing and its store gets only jobs, explanations, scores, LLM calls
                                           # and the runs' own rows (an explain worker of slurm_batch.sh)
    max_attempts: int = 3                  # per job, over all runs
    claim_timeout_s: float = 1800.0        # a running claim not refreshed for this long is stale
    unit_timeout_s: float = 900.0          # every LLM request of one unit ends by then (the unit then fails)
    retry_failed: bool = False             # failed-for-good jobs get a fresh set of attempts
    device: str = "auto"
    dtype: str = "float32"
    settings: ExplainSettings = Field(default_factory=ExplainSettings)


class UnitJob(BaseModel):
    unit: str
    layer: int
    index: int
    run_id: str | None = None              # None: its layer has no mining run yet
    key: str | None = None
    status: str = "new"                    # new (no job row) | pending | running | done | failed | dead
                                           # (dead: an SAE latent that never fired in its run; never a job)
    attempts: int = 0
    last_error: str | None = None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' with 0 <= i < n -> (i, n)."""
    if text is None or text == "":
        return None
    try:
        a, b = str(text).split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise UsageError(f"bad --shard {text!r}: use i/n, e.g. 0/4 (worker i of n, counting from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"bad --shard {text!r}: need 0 <= i < n (e.g. 0/4 .. 3/4)")
    return i, n


def check_options(o: BatchOptions, sae=None) -> None:
    kinds = {k.plural: k for k in UNIT_KINDS.values()}    # latents: those of the SAE given to run_batch(sae=...)
    if o.units not in kinds:
        plain = " or ".join(p for p, k in kinds.items() if not k.needs_sae)
        raise UsageError(f"bad --units {o.units!r}: use {plain} (or give --sae for an SAE's latents)")
    if kinds[o.units].needs_sae != (sae is not None):
        raise UsageError("a batch of SAE latents needs the SAE (--sae PATH_OR_NAME), and an SAE batches only its latents"
                         if sae is None else f"--units {o.units} with --sae: an SAE batch does the SAE's latents")
    if o.limit is not None and o.limit < 0:
        raise UsageError("--limit must not be negative")
    if o.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if o.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    if o.n_tokens is not None and o.n_tokens < 1:
        raise UsageError("--tokens must be at least 1")
    if o.shard is not None:
        parse_shard(f"{o.shard[0]}/{o.shard[1]}")
    if o.settings.k < 1:
        raise UsageError("--k must be at least 1")


def unit_kind(o: BatchOptions) -> str:
    return kind_of_plural(o.units).name


def _sae_units(o: BatchOptions, sizes: dict, sae) -> list[Unit]:
    """The SAE's latents (all, or the --unit ones bound to it), checked against it."""
    from ..mine import parse_layers

    n_layers = int(sizes["n_layers"])
    if not 0 <= sae.layer < n_layers:
        raise UsageError(f"SAE {sae.name} reads layer {sae.layer}, but the model has layers 0..{n_layers - 1}")
    if o.layers is not None and sae.layer not in parse_layers(o.layers, n_layers):
        raise UsageError(f"--layers {o.layers}: SAE {sae.name} reads layer {sae.layer}")
    if not o.unit_ids:
        return [Unit.latent(sae.layer, i, sae.name) for i in range(sae.d_sae)]
    out = set()
    for text in o.unit_ids:
        u = Unit.parse(text)
        if not u.record.needs_sae:
            raise UsageError(f"--unit {u}: an SAE batch does SAE latents (L{sae.layer}/F<latent>), not a {u.kind}")
        u = u.with_sae(sae.name)
        if u.layer != sae.layer:
            raise UsageError(f"--unit {u}: SAE {sae.name} reads layer {sae.layer} ({sae.hook}), not layer {u.layer}")
        u.check(n_layers, 0, 0, sae.d_sae)
        out.add(u)
    return sorted(out)


def select_units(o: BatchOptions, sizes: dict, sae=None) -> list[Unit]:
    """The batch's units in (layer, index) order, checked against the model's sizes (an SAE's
    latents: against the SAE), sharded."""
    from ..mine import parse_layers

    n_layers = int(sizes["n_layers"])
    kind = unit_kind(o)
    if UNIT_KINDS[kind].needs_sae:
        units = _sae_units(o, sizes, sae)
    elif o.unit_ids:
        other = {k: int(v) for k, v in sizes.items() if k != "n_layers" and isinstance(v, (int, float))}
        units = sorted({Unit.parse(u).check(n_layers, **other) for u in o.unit_ids})
        wrong = [u for u in units if u.record is not UNIT_KINDS[kind]]
        if wrong:
            raise UsageError(f"{wrong[0]} is not one of the --units {o.units}")
        if o.layers is not None:
            keep = set(parse_layers(o.layers, n_layers))
            units = [u for u in units if u.layer in keep]
    else:
        width = int(sizes[UNIT_KINDS[kind].size])
        units = [Unit(L, kind, i) for L in parse_layers(o.layers, n_layers) for i in range(width)]
    if o.shard is not None:
        i, n = o.shard
        units = [u for j, u in enumerate(units) if j % n == i]
    return units


def llm_name(spec: str) -> str:
    from ..llm import parse_spec

    backend, model = parse_spec(spec)
    return f"{backend}:{model}"


def template_hashes() -> dict[str, str]:
    from ..llm import load_prompt

    return {t: load_prompt(t).hash for t in templates()}


def job_key(model_id: str, unit: str, run_id: str, o: BatchOptions, templates: dict[str, str], sae_id: str | None = None) -> str:
    """The job's key; an SAE latent's also names the SAE by content id (its run already does, the
    key says it outright)."""
    from ..explain.explainer import choose_style

    backend = llm_name(o.llm).split(":", 1)[0]
    style = choose_style(type("_L", (), {"backend": backend})(), o.settings.style)
    extra = ("sae", sae_id) if sae_id else ()
    return content_hash("batch-job", JOB_VERSION, PIPELINE_VERSION, STAGE, model_id, unit, run_id, llm_name(o.llm),
                        llm_name(o.llm), style, sorted(templates.items()), o.settings.model_dump(mode="json"), *extra)


def _covers(run, layer: int, kind: str, sae=None) -> bool:
    """Whether a run mined this layer's units of this kind (an SAE's latents: this very SAE, by
    content id, not only by name)."""
    if not UNIT_KINDS[kind].needs_sae:
        return run.covers(Unit(layer, kind, 0))
    return any(x.get("id") == sae.id and x.get("layer") == layer and x.get("d_sae") == sae.d_sae
               for x in run.settings.get("saes", []))


def layer_runs(store, model_id: str, layers: Sequence[int], kind: str, o: BatchOptions, sae=None) -> dict[int, str]:
    """For each layer, the finished mining run the batch uses (layers with none are left out).

    Stable choice: among done runs covering the layer (on --corpus if given; with --tokens if
    given), the one with the most contexts, then the oldest; so a later small `explain` mine of
    one layer does not move the batch to new jobs. a latent kind: runs that mined `sae`."""
    from ..mine.records import run_from_row as _run

    if store is None:
        return {}
    runs = [_run(r) for r in store.find_mining_runs(model_id, corpus=o.corpus, status="done")]
    if o.n_tokens is not None:
        runs = [r for r in runs if r.settings.get("n_tokens") == o.n_tokens]
    runs.sort(key=lambda r: (-r.n_contexts, r.created_at, r.id))
    out: dict[int, str] = {}
    for L in layers:
        for r in runs:
            if _covers(r, L, kind, sae):
                out[L] = r.id
                break
    return out


def plan_jobs(store, model_id: str, units: Sequence[Unit], runs: dict[int, str], o: BatchOptions,
              templates: dict[str, str], sae=None) -> list[UnitJob]:
    """A UnitJob per unit, with its key and status where its layer has a run."""
    jobs = []
    for u in units:
        j = UnitJob(unit=str(u), layer=u.layer, index=u.index, run_id=runs.get(u.layer))
        if j.run_id is not None:
            j.key = job_key(model_id, j.unit, j.run_id, o, templates, sae.id if sae is not None and u.record.needs_sae else None)
        jobs.append(j)
    rows = store.jobs_by_key([j.key for j in jobs if j.key]) if store is not None else {}
    for j in jobs:
        r = rows.get(j.key) if j.key else None
        if r is not None:
            j.status, j.attempts, j.last_error = r["status"], int(r["attempts"]), r["last_error"]
    return jobs


def mark_dead(store, jobs: Sequence[UnitJob]) -> int:
    """SAE latents that never fired in their mining run (no top records to explain) get status
    'dead' and are not done: the batch reports them, as delphi skips dead latents, rather than
    failing them. A latent with a job row already keeps its status. Returns how many."""
    n = 0
    for j in jobs:
        if j.status != "new" or j.run_id is None or not Unit.parse(j.unit).record.sparse:
            continue
        st = store.get_unit_stats(j.run_id, j.unit)
        if st is None or not (st.get("frac_active") or 0) > 0 or not (st.get("max_act") or 0) > 0:
            j.status = "dead"
            n += 1
    return n


def is_todo(j: UnitJob, max_attempts: int, retry_failed: bool = False) -> bool:
    if j.status in ("done", "dead"):
        return False
    if j.status == "failed" and j.attempts >= max_attempts and not retry_failed:
        return False
    return True
