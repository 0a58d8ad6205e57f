"""Mine once, explain anywhere: the corpus shards of a mining run (`autointerp mine --shard i/n`,
each worker its own store) merged into exactly the run that one process gives.

Why the merge is exact (mine/state.py): every kept set is the top k under a total order that
does not depend on the stream (score, then context index); the reservoirs' priorities are a
function of (the whole run's id, context index, unit), so a shard draws the same priorities as
the single run does for its contexts. The union of the shards' top k contains the top k of the
corpus, so merging the shards' states and taking the top k again gives the single run's sets;
quantile and random records and histograms are then drawn from those sets as a single run draws
them (mine/finalize.py). max, min and counts merge exactly; mean and variance by Chan's update
(equal to float64 rounding: the summation order differs).

A shard keeps its final state in a file beside its store (state_path of its mining_runs row,
status 'shard'); the merge reads those files and the shards' stores, and needs no model.
"""

from __future__ import annotations

import time
from pathlib import Path
import torch

from ..errors import UsageError
from .finalize import finish_run
from ..core.units import parse_units
from .layers import layer_state
from .miner import STATE_VERSION
from .sae import LatentLayer


def plan_merge(shards: dict[str | Path, list[dict]]) -> dict[str, list[dict]]:
    """From {source store: its shard rows (store.query.mining_shards)}: {run id: its shards in
    index order, each row with its store path and state file}, checked: every shard of a run is
    there once, with its state file, and all shards of a run agree on the settings. Raises
    UsageError (one line) otherwise. Reads only."""
    runs: dict[str, dict[int, dict]] = {}
    for p, rows in shards.items():
        for row in rows:
            sh = row["settings"]["shard"]
            full, i = sh["run_id"], int(sh["index"])
            row["source"] = str(p)
            row["state_file"] = _state_file(Path(p), row)
            got = runs.setdefault(full, {})
            if i in got:
                raise UsageError(f"shard {i}/{sh['of']} of mining run {full} is in two sources: {got[i]['source']} and {p}")
            got[i] = row
    out = {}
    for full, got in runs.items():
        rows = [got[i] for i in sorted(got)]
        n = int(rows[0]["settings"]["shard"]["of"])
        missing = [i for i in range(n) if i not in got]
        if missing:
            raise UsageError(f"mining run {full}: shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing "
                             f"(have {', '.join(str(i) for i in sorted(got))}); merge once every shard is mined")
        base = _settings(rows[0])
        try:
            parse_units(base.get("units", "neurons"))
        except UsageError:
            raise UsageError(f"mining run {full} mined units {base.get('units')!r}: a unit kind not registered here "
                             "(import the module that registers it before merging)") from None
        for r in rows[1:]:
            if _settings(r) != base or int(r["settings"]["shard"]["of"]) != n:
                raise UsageError(f"mining run {full}: shards {r['source']} and {rows[0]['source']} differ in settings")
        for r in rows:
            if r["state_file"] is None:
                raise UsageError(f"shard {r['settings']['shard']['index']}/{n} in {r['source']}: its state file "
                                 f"{r['state_path']} is missing (mine that shard again)")
        out[full] = rows
    return out


def _settings(row: dict) -> dict:
    return {k: v for k, v in row["settings"].items() if k != "shard"}


def _state_file(store_path: Path, row: dict) -> Path | None:
    """The shard's state file: where its row says, else beside its store (the stores were moved)."""
    p = Path(row["state_path"] or "")
    for cand in (p, store_path.resolve().parent / p.name):
        if p.name and cand.is_file():
            return cand
    return None


def merge_shards(store, plan: dict[str, list[dict]], progress: bool = False) -> list[dict]:
    """Write each planned run into `store` (where the shards' models, corpora, contexts and logit
    effects were already merged) as one finished run; a run already done there is left alone.
    Returns per run: id, shards, n_contexts, seconds."""
    out = []
    for full, rows in plan.items():
        t0 = time.perf_counter()
        have = store.get_mining_run(full)
        if have is not None and have["status"] == "done":
            out.append({"run_id": full, "shards": len(rows), "n_contexts": have["n_done"], "seconds": 0.0,
                        "already": True})
            continue
        settings = _settings(rows[0])
        fp = int(settings.get("first_pos", 0))
        saes = {x["hook"]: x for x in settings.get("saes", [])}     # a shard's latents are keyed by input hook
        kinds = [k for k in parse_units(settings.get("units", "neurons")) if not k.needs_sae]
        ul: dict = {}                                   # {(kind name, layer): state}
        fl: dict = {}
        n_done, expected = 0, 0
        for r in rows:                                  # in shard order: the float64 moments merge in one order
            ck = torch.load(r["state_file"], map_location="cpu", weights_only=False)
            if ck.get("version") != STATE_VERSION or ck.get("run_id") != r["id"] or int(ck["n_done"]) != r["n_done"]:
                raise UsageError(f"{r['state_file']} is not the final state of shard {r['id']} (mine that shard again)")
            sh = r["settings"]["shard"]
            if n_done != expected:
                raise UsageError(f"mining run {full}: shard {sh['index']} starts at context {sh['start']} but the "
                                 f"shards before it stopped early at {n_done} (the corpus is shorter than --tokens)")
            parts = [(kind.name, L, layer_state(kind).from_state(int(L), fp, d, unit_kind=kind))
                     for kind in kinds for L, d in ck.get(kind.plural, {}).items()]      # by the kind's plural
            parts += [(None, name, LatentLayer.from_saved(saes[name], fp, d)) for name, d in ck.get("latents", {}).items()]
            for kname, key, x in parts:
                acc, k = (fl, key) if kname is None else (ul, (kname, int(key)))
                acc[k] = acc[k].merge(x) if k in acc else x
            n_done += int(r["n_done"])
            expected = int(sh["stop"])
            del ck
        if have is None:
            store.start_mining_run(full, rows[0]["model_id"], rows[0]["corpus_id"], settings)
        stats = {"n_contexts": n_done, "n_tokens": n_done * int(settings["context_len"]), "resumed_from": 0,
                 "n_units": sum(x.n for x in [*ul.values(), *fl.values()]), "shards": len(rows),
                 "shard_seconds": [r["stats"].get("loop_s") for r in rows]}
        order = {k.name: i for i, k in enumerate(kinds)}         # kinds in registry order, then layers
        finish_run(store, full, n_done, stats, dict(sorted(ul.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))), fl,
                   n_random=int(settings["n_random"]), n_quantiles=int(settings["n_quantiles"]),
                   per_quantile=int(settings["per_quantile"]))
        secs = round(time.perf_counter() - t0, 3)
        stats["merge_s"] = secs
        store.set_mining_stats(full, stats)
        out.append({"run_id": full, "shards": len(rows), "n_contexts": n_done, "seconds": secs, "already": False})
    return out
