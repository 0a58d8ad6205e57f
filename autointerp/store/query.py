"""Read methods over the whole store: search, stats, export, the viewer's pages, and merge.

These are the store side of `autointerp query/stats/export/merge/serve`. Everything here reads,
except merge_from, which writes only into this (the target) store in one transaction.

Score used for ranking and filtering: an explanation's *best simulation score*, the highest
`scores.value` with kind='simulation' (its ci_low/ci_high come with it). A unit's score is the
best over its explanations.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..core.stats import summary
from ..core.units import UNIT_KINDS, UNIT_RE, Unit, id_prefix, kind_of_letter, unit_kind  # noqa: F401  (UNIT_RE re-exported: the one unit-id regex)
from ..errors import StoreError, UnitError, UsageError
from .base import APP_ID, SCHEMA_VERSION, parse_schema_version, readonly_uri, unpack_f16

SIM_KIND = "simulation"

# the explanations of units (a model diff's side is a subject too: core/subjects.py; its rows, with
# unit NULL, are read with their diff, store/diffs.py). A condition that also holds on a store of
# schema v4 opened read-only (no diff_id column yet)
UNIT_ROWS = "e.unit is not null"

# best simulation score per explanation (value with its interval)
_BEST_SQL = f"""
best as materialized (
  select explanation_id, value, ci_low, ci_high, n, scorer, control, margin, margin_low, margin_high from (
    select s.*, row_number() over (partition by explanation_id order by value desc, id) as rn
    from scores s where kind = '{SIM_KIND}' and value is not null)
  where rn = 1)
"""


# the same best score looked up per explanation through the scores_expl index: a search touches
# only the explanations it returns or filters, not every score of the store (the window above
# reads them all: seconds at a million units)
_BEST_JOIN = (f"left join scores b on b.id = (select s2.id from scores s2 where s2.explanation_id = e.id "
              f"and s2.kind = '{SIM_KIND}' and s2.value is not null order by s2.value desc, s2.id limit 1)")


def fts_query(text: str, any_word: bool = False) -> str:
    """User words -> an FTS5 MATCH expression: each word quoted (no syntax errors from user
    punctuation), all words required unless any_word."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    return (" OR " if any_word else " ").join(quoted)


def _json(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def unit_layer_sql(col: str = "unit") -> str:
    """SQL expression: the layer of a unit id of a registered kind ('L5/N131', 'L6/F12@res6k';
    NULL for hook names)."""
    letters = "".join(k.letter for k in UNIT_KINDS.values())
    return (f"(case when {col} glob 'L[0-9]*/[{letters}][0-9]*' "
            f"then cast(substr({col}, 2, instr({col}, '/') - 2) as integer) end)")


def unit_sae_sql(col: str = "unit") -> str:
    """SQL expression: the SAE name of a latent's id ('res6k' of L6/F12@res6k; NULL without one)."""
    return f"(case when instr({col}, '@') then substr({col}, instr({col}, '@') + 1) end)"


def unit_ranges(db, table: str, col: str, value: Any) -> Iterator[tuple[tuple | None, str, str]]:
    """The units of `table`'s rows with col = value, one layer and kind at a time: (id_prefix,
    lo, hi) with every unit of that layer and kind in lo <= unit < hi (a string that is no unit id
    is a range of its own, prefix None). One seek per range on an index that starts (col, unit):
    a query per range then reads only its part of the index, in order, so a million units are
    grouped by layer and kind with no sort."""
    lo = ""
    seek = f"select unit from {table} where {col} = ? and unit >= ? order by unit limit 1"
    while (row := db.execute(seek, [value, lo]).fetchone()) is not None:
        unit = row[0]
        prefix = id_prefix(unit)
        hi = prefix[0][:-1] + chr(ord(prefix[0][-1]) + 1) if prefix else unit + "\x00"
        yield prefix, (prefix[0] if prefix else unit), hi
        lo = hi


def _needs_sae(prefix: tuple | None) -> bool:
    """Whether the units of an id_prefix are a kind whose ids name an SAE (latents)."""
    return bool(prefix) and _kind_name(prefix[2]) in UNIT_KINDS and UNIT_KINDS[_kind_name(prefix[2])].needs_sae


def _kind_name(letter: str) -> str:
    """The registered kind of an id letter; the letter itself for a kind not registered here."""
    try:
        return kind_of_letter(letter).name
    except UnitError:
        return letter


class QueryMixin:
    """Read methods for search, stats, export and the viewer; merge_from for shards."""

    # ---- search -------------------------------------------------------------------
    def has_fts(self) -> bool:
        return "explanations_fts" in self.db.table_names()

    def search(self, text: str | None = None, *, model: str | None = None, layer: int | None = None,
               explainer: str | None = None, min_score: float | None = None, limit: int | None = 20,
               any_word: bool = False, kind: str | None = None, min_margin: float | None = None) -> list[dict]:
        """Explanations matching `text` (FTS5, ranked by bm25; all words required unless any_word),
        filtered by best simulation score, layer, model, explainer and unit kind (neuron|head).
        Without text: ordered by score (best first). Rows: id, model_id, unit, layer, explainer,
        method, text, score, ci_low, ci_high, n, rank."""
        where, params = [UNIT_ROWS], []
        if model is not None:
            where.append("e.model_id = ?"); params.append(model)
        if layer is not None:
            where.append("e.layer = ?"); params.append(int(layer))
        if explainer is not None:
            where.append("e.explainer = ?"); params.append(explainer)
        if min_score is not None:
            where.append("b.value >= ?"); params.append(float(min_score))
        if min_margin is not None:   # the margin over the null control on the same records
            where.append("b.margin >= ?"); params.append(float(min_margin))
        if kind is not None:
            where.append("e.unit like ?"); params.append(f"%/{unit_kind(kind).letter}%")
        select = ("e.id, e.model_id, e.unit, e.layer, e.explainer, e.method, e.text, e.created_at, "
                  "b.value as score, b.ci_low, b.ci_high, b.n, b.control, b.margin, b.margin_low, b.margin_high")
        text = (text or "").strip()
        if text:
            if self.has_fts():
                match = fts_query(text, any_word)
                if not match:
                    return []
                sql = (f"select {select}, bm25(explanations_fts) as rank "
                       "from explanations_fts join explanations e on e.rowid = explanations_fts.rowid "
                       f"{_BEST_JOIN} "
                       f"where explanations_fts match ? {''.join(' and ' + w for w in where)} "
                       "order by rank, b.value desc")
                params = [match, *params]
            else:  # a store without the FTS index (made by hand): substring search
                words = re.findall(r"\w+", text)
                conds = [f"e.text like ?" for _ in words]
                sql = (f"select {select}, 0.0 as rank from explanations e "
                       f"{_BEST_JOIN} where "
                       f"({(' or ' if any_word else ' and ').join(conds) or '1'}) "
                       f"{''.join(' and ' + w for w in where)} order by b.value desc")
                params = [f"%{w}%" for w in words] + params
        else:
            sql = (f"select {select}, null as rank from explanations e "
                   f"{_BEST_JOIN} "
                   f"where {' and '.join(where)} "
                   "order by b.value is null, b.value desc, e.model_id, e.layer, e.unit")
        if limit:
            sql += f" limit {int(limit)}"
        return self.query(sql, params)

    def dataset_units(self, dataset: str, *, min_effect: float = 0.0, min_score: float | None = None,
                      model: str | None = None, text: str | None = None, limit: int | None = 50,
                      include_unexplained: bool = False) -> list[dict]:
        """Explained units that matter for a dataset: components of its patch runs with
        |effect| >= min_effect, joined with each unit's best explanation (by simulation score,
        LLM explanations before the baseline). Rows: unit, layer, model_id, effect (the largest
        |effect| over runs and positions, signed), run_id, what, method, explanation, explainer,
        score, ci_low, ci_high. Ordered by |effect|."""
        if not self.query("select 1 from datasets where name = ?", [dataset]) and \
                not self.query("select 1 from patch_runs where dataset = ?", [dataset]):
            names = [r["name"] for r in self.query("select name from datasets order by name limit 10")]
            raise UsageError(f"no dataset {dataset!r} in the store"
                             + (f" (datasets: {', '.join(names)})" if names else " (it has no datasets)"))
        params: list[Any] = [dataset, float(min_effect)]
        mfilter = ""
        if model is not None:
            mfilter = " and r.model_id = ?"; params.append(model)
        text_units = None
        if text:
            text_units = {(r["model_id"], r["unit"]) for r in self.search(text, model=model, limit=None)}
        rows = self.query(f"""
            with {_BEST_SQL},
            eff as (
              select r.model_id, p.component as unit, p.layer, p.effect, p.position, r.id as run_id, r.what, r.method,
                     row_number() over (partition by r.model_id, p.component order by abs(p.effect) desc) as rn
              from patch_results p join patch_runs r on r.id = p.run_id
              where r.dataset = ? and abs(p.effect) >= ? and p.component glob 'L[0-9]*/[NH][0-9]*' {mfilter}),
            expl as (
              select e.id, e.model_id, e.unit, e.text, e.explainer, b.value as score, b.ci_low, b.ci_high,
                     row_number() over (partition by e.model_id, e.unit
                        order by (e.explainer = 'baseline'), b.value is null, b.value desc, e.id) as rn
              from explanations e left join best b on b.explanation_id = e.id)
            select eff.unit, coalesce(eff.layer, {unit_layer_sql('eff.unit')}) as layer, eff.model_id, eff.effect,
                   eff.position, eff.run_id, eff.what, eff.method,
                   x.id as explanation_id, x.text as explanation, x.explainer, x.score, x.ci_low, x.ci_high
            from eff left join expl x on x.model_id = eff.model_id and x.unit = eff.unit and x.rn = 1
            where eff.rn = 1
            order by abs(eff.effect) desc, eff.unit""", params)
        out = []
        for r in rows:
            if r["explanation_id"] is None and not include_unexplained:
                continue
            if min_score is not None and (r["score"] is None or r["score"] < min_score):
                continue
            if text_units is not None and (r["model_id"], r["unit"]) not in text_units:
                continue
            out.append(r)
            if limit and len(out) >= limit:
                break
        return out

    # ---- stats --------------------------------------------------------------------
    def stats(self, model: str | None = None, bins: int = 10) -> dict:
        """Coverage per layer and unit kind, latents per SAE (mined, explained by an LLM, scored),
        the distribution of best simulation scores (LLM explanations and the baseline apart), LLM
        tokens and cost, and row counts per table.

        A unit's kind is its id's letter looked up in the registered kinds (UNIT_KINDS); a letter
        no kind here registers is shown as itself. Coverage is read one layer and kind at a time
        from the (run, unit) and (model, unit) indexes (unit_ranges), each unit counted once per
        model however many runs mined it or explanations it has, with no sort of the whole store."""
        if model is not None and not self.query("select 1 from models where id = ?", [model]):
            raise UsageError(f"no model {model!r} in the store (models: {', '.join(self.model_ids()) or 'none'})")
        ef = f" and {UNIT_ROWS}" + (" and e.model_id = ?" if model else "")
        mp = [model] if model else []
        per: dict[tuple, dict] = {}

        def cell(prefix: tuple | None, sae: str | None) -> dict:
            layer, kind = (prefix[1], _kind_name(prefix[2])) if prefix else (None, "?")
            key = (layer, kind, sae)
            if key not in per:
                per[key] = {"layer": layer, "kind": kind, "sae": sae, "mined": 0, "explained": 0, "scored": 0,
                            "mean_score": None, "_sum": 0.0, "_n": 0}
            return per[key]

        # mined: the units with statistics in a run (a finished run has them for every unit it
        # mined), and the units with records in runs that have none (stores made by hand); a unit
        # of a model counted once over its runs (a later run's units less those of earlier runs)
        runs = self.query("select r.id, r.model_id, exists (select 1 from unit_stats s where s.run_id = r.id) as has_stats "
                          "from mining_runs r" + (" where r.model_id = ?" if model else "") + " order by r.model_id, r.id", mp)
        earlier: dict[str, list[tuple[str, str, set]]] = {}
        for r in runs:
            table = "unit_stats" if r["has_stats"] else "records"
            seen = earlier.setdefault(r["model_id"], [])
            mine: set[str] = set()
            for prefix, lo, hi in unit_ranges(self.db, table, "run_id", r["id"]):
                mine.add(lo)
                before = [(t, rid) for t, rid, los in seen if lo in los]
                sql = (f"select s.unit from {table} s where s.run_id = ? and s.unit >= ? and s.unit < ?"
                       + "".join(f" and not exists (select 1 from {t} o where o.run_id = ? and o.unit = s.unit)" for t, _ in before)
                       + (" group by s.unit" if table == "records" else ""))
                for sae, n in self._by_sae(prefix, f"select {{sae}}, count(*) from ({sql})",
                                           [r["id"], lo, hi] + [rid for _, rid in before]):
                    cell(prefix, sae)["mined"] += n
            seen.append((table, r["id"], mine))
        # explained / scored units, the mean best score of the LLM explanations and the score
        # distributions: one row per explanation (its best simulation score, with that score's
        # margin) read along (model_id, unit), so a unit's explanations are adjacent and a unit with
        # several LLM explanations counts once
        values: dict[str, list] = {"llm": [], "base": [], "margin": []}
        models = [model] if model else self.model_ids()
        for m in models:
            for prefix, lo, hi in unit_ranges(self.db, "explanations", "model_id", m):
                rows = self.db.execute(
                    f"select e.unit, e.explainer != 'baseline', max(b.value), b.margin from explanations e "
                    f"left join scores b on b.kind = '{SIM_KIND}' and b.explanation_id = e.id and b.value is not null "
                    "where e.model_id = ? and e.unit >= ? and e.unit < ? group by e.unit, e.id", [m, lo, hi]).fetchall()
                units, llm, v, mg = zip(*rows)
                llm = np.fromiter(llm, dtype=bool, count=len(units))
                v, mg = np.array(v, dtype=float), np.array(mg, dtype=float)
                scored = llm & ~np.isnan(v)
                values["llm"].append(v[scored])
                values["base"].append(v[~llm & ~np.isnan(v)])
                values["margin"].append(mg[scored & ~np.isnan(mg)])
                starts = np.flatnonzero(np.r_[True, [a != b for a, b in zip(units[1:], units)]])   # each unit's first row
                u_llm, u_scored = np.logical_or.reduceat(llm, starts), np.logical_or.reduceat(scored, starts)
                u_sum, u_n = np.add.reduceat(np.where(scored, v, 0.0), starts), np.add.reduceat(scored, starts)
                saes = ([units[i].partition("@")[2] or None for i in starts] if _needs_sae(prefix)
                        else [None] * len(starts))
                for sae in set(saes):
                    mask = np.fromiter((x == sae for x in saes), dtype=bool, count=len(saes)) if len(set(saes)) > 1 else slice(None)
                    c = cell(prefix, sae)
                    c["explained"] += int(u_llm[mask].sum())
                    c["scored"] += int(u_scored[mask].sum())
                    c["_sum"] += float(u_sum[mask].sum())
                    c["_n"] += int(u_n[mask].sum())
        order = {k: i for i, k in enumerate(UNIT_KINDS)}
        coverage = []
        for key in sorted(per, key=lambda k: (order.get(k[1], len(order)), k[1], k[2] or "", -1 if k[0] is None else k[0])):
            d = per[key]
            s, n = d.pop("_sum"), d.pop("_n")
            d["mean_score"] = s / n if n else None
            d["coverage"] = (d["explained"] / d["mined"]) if d["mined"] else None
            coverage.append(d)
        by_kind: dict[tuple, dict] = {}
        for d in coverage:
            t = by_kind.setdefault((d["kind"], d["sae"]), {"kind": d["kind"], "sae": d["sae"], "layers": 0, "mined": 0,
                                                           "explained": 0, "scored": 0})
            t["layers"] += 1
            for k in ("mined", "explained", "scored"):
                t[k] += d[k]
        for t in by_kind.values():
            t["coverage"] = t["explained"] / t["mined"] if t["mined"] else None

        def dist(values: list[float] | list[np.ndarray]) -> dict:
            a = np.concatenate([np.asarray(x, dtype=float).ravel() for x in values]) if len(values) else np.zeros(0)
            if not a.size:
                return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "histogram": []}
            s = summary(a.tolist())
            lo = min(-1.0, float(np.floor(a.min() * bins) / bins))
            hi = max(1.0, float(np.ceil(a.max() * bins) / bins))
            edges = np.round(np.arange(lo, hi + 1e-9, 1.0 / bins), 6)
            counts, _ = np.histogram(a, bins=edges)
            hist = [{"low": float(edges[i]) + 0.0, "high": float(edges[i + 1]) + 0.0, "count": int(c)} for i, c in enumerate(counts)]
            return {"n": s["n"], "mean": s["mean"], "median": s["median"], "min": s["min"], "max": s["max"],
                    "histogram": hist}

        exact = self.query(f"select s.value from scores s join explanations e on e.id = s.explanation_id "
                           f"where s.kind = 'simulation_exact' and e.explainer = 'baseline' and s.value is not null {ef}", mp)
        nulls = self.query(f"select s.kind, count(*) as n from scores s join explanations e on e.id = s.explanation_id "
                           f"where s.value is null and s.reason is not null {ef} group by s.kind", mp)
        cal = {}
        if "calibrations" in self.db.table_names():
            for r in self.query("select llm, id, created_at, results_json from calibrations order by id"):
                cal[r["llm"]] = {"id": r["id"], "created_at": r["created_at"],
                                 **(_json(r["results_json"], {}).get("summary") or {})}
        llm = self.query("""
            select model, backend, count(*) as calls, sum(cache_hit) as cache_hits,
                   sum(error is not null) as errors, coalesce(sum(prompt_tokens), 0) as prompt_tokens,
                   coalesce(sum(completion_tokens), 0) as completion_tokens,
                   coalesce(sum(cost_usd), 0.0) as cost_usd, avg(latency_s) as mean_latency_s
            from llm_calls group by model, backend order by cost_usd desc, calls desc""")
        totals = {k: sum((r[k] or 0) for r in llm) for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd")}
        return {
            "store": str(self.path), "model": model, "models": self.model_ids(),
            "coverage": coverage,
            "coverage_by_kind": list(by_kind.values()),
            "scores": dist(values["llm"]),
            "baseline_scores": dist(values["base"]),
            "margins": dist(values["margin"]),
            "baseline_exact_scores": dist([r["value"] for r in exact]),
            "null_scores": {r["kind"]: r["n"] for r in nulls},
            "calibrations": cal,
            "llm": {"by_model": llm, **totals},
            "counts": self.counts(),
        }

    def _by_sae(self, prefix: tuple | None, sql: str, params: list) -> list[tuple]:
        """Rows of `sql` (a template whose first column is {sae}, over a subquery of units):
        one row per SAE name in a range of latents, one row (SAE None) for any other kind."""
        if _needs_sae(prefix):
            return self.db.execute(sql.format(sae=unit_sae_sql("unit")) + " group by 1", params).fetchall()
        return self.db.execute(sql.format(sae="null"), params).fetchall()

    def model_ids(self) -> list[str]:
        return [r["id"] for r in self.query("select id from models order by id")]

    # ---- export -------------------------------------------------------------------
    # what -> (SQL with {where} where the filter goes, the model column --model filters on, [a condition
    # always applied: explanations and scores of units, not of model-diff sides])
    _EXPORT_SQL = {
        "explanations": (
            # the best score looked up per row (_BEST_JOIN): streamed, nothing materialised
            "select e.id, e.model_id, e.unit, e.layer, e.explainer, e.method, e.text, "
            "b.value as score, b.ci_low, b.ci_high, e.key, e.run_id, e.template_hash, e.records_hash, e.created_at "
            f"from explanations e {_BEST_JOIN} "
            "{where} order by e.model_id, e.layer, e.unit, e.id", "e.model_id", UNIT_ROWS),
        "scores": (
            "select s.id, e.model_id, e.unit, e.layer, e.explainer, s.explanation_id, e.key as explanation_key, "
            "s.kind, s.value, s.ci_low, s.ci_high, s.n, s.scorer, s.key, s.created_at, s.details_json "
            "from scores s join explanations e on e.id = s.explanation_id "
            "{where} order by e.model_id, e.layer, e.unit, s.id", "e.model_id", UNIT_ROWS),
        "records": (
            "select x.id, r.model_id, x.run_id, x.unit, x.kind, x.bin, x.ctx_idx, x.max_act, x.acts, x.extra, "
            "c.tokens_json from records x join mining_runs r on r.id = x.run_id "
            "left join contexts c on c.corpus_id = r.corpus_id and c.idx = x.ctx_idx "
            "{where} order by x.run_id, x.unit, x.kind, x.bin, x.ctx_idx", "r.model_id"),
        "patching": (
            "select r.dataset, r.model_id, r.key as run_key, r.what, r.method, r.direction, "
            "p.component, p.layer, p.position, p.effect from patch_results p "
            "join patch_runs r on r.id = p.run_id "
            "{where} order by r.dataset, r.id, p.layer, p.component, p.position", "r.model_id"),
    }
    EXPORTS = tuple(_EXPORT_SQL)

    def export_rows(self, what: str = "explanations", model: str | None = None) -> Iterator[dict]:
        """Rows for export, streamed. explanations: with their best simulation score; scores: one
        row per score with its explanation's unit; records: activations and tokens as lists;
        patching: one row per patch result with its run."""
        if what not in self.EXPORTS:
            raise UsageError(f"cannot export {what!r}: choose one of {', '.join(self.EXPORTS)}")
        sql, col, *always = self._EXPORT_SQL[what]
        conds = always + ([f"{col} = ?"] if model else [])
        rows = self.db.query(sql.replace("{where}", "where " + " and ".join(conds) if conds else ""), [model] if model else [])
        if what != "records":
            yield from rows
            return
        for r in rows:
            r["acts"] = [round(float(v), 4) for v in unpack_f16(r["acts"])]
            r["extra"] = [round(float(v), 4) for v in unpack_f16(r["extra"])] if r["extra"] else None
            r["tokens"] = _json(r.pop("tokens_json"), None)
            yield r

    # ---- the viewer's pages -------------------------------------------------------
    def overview(self) -> dict:
        models = self.query("""
            select m.*, (select count(distinct unit) from explanations e where e.model_id = m.id) as explained_units,
                        (select count(*) from head_scores h where h.model_id = m.id) as head_scores
            from models m order by id""")
        datasets = self.query("""
            select d.*, (select count(*) from patch_runs r where r.dataset = d.name) as runs
            from datasets d order by name""")
        cal = []
        if "calibrations" in self.db.table_names():
            for r in self.query("select id, llm, model_id, created_at, results_json from calibrations order by id desc"):
                res = _json(r.pop("results_json"), {})
                cal.append({**r, "summary": res.get("summary") or {},
                            "scorers": {k: {kk: v.get(kk) for kk in ("auroc", "low", "high", "n_true", "n_decoy", "n_null")}
                                        for k, v in (res.get("scorers") or {}).items()}})
        return {"models": models, "datasets": datasets, "calibrations": cal}

    def unit_view(self, model: str, unit: str, max_top: int = 20, per_bin: int = 3) -> dict | None:
        """Everything the viewer shows for one unit, or None when the store knows nothing of it."""
        u = str(Unit.parse(unit))
        m = self.get_model(model)
        expls = self.query("select * from explanations where model_id = ? and unit = ? order by (explainer = 'baseline'), id",
                           [model, u])
        for e in expls:
            e.pop("diff_id", None), e.pop("side", None)       # a unit's explanation: no diff side
            e["scores"] = self.query("select id, kind, value, ci_low, ci_high, n, scorer, details_json, created_at, "
                                     "control, margin, margin_low, margin_high, reason "
                                     "from scores where explanation_id = ? order by kind, value desc", [e["id"]])
            sims = [s for s in e["scores"] if s["kind"] == SIM_KIND and s["value"] is not None]
            e["best"] = max(sims, key=lambda s: s["value"]) if sims else None
        logits = self.query("select * from unit_logits where model_id = ? and unit = ?", [model, u])
        stats = self.query("select s.*, r.corpus_id from unit_stats s join mining_runs r on r.id = s.run_id "
                           "where r.model_id = ? and s.unit = ? order by r.updated_at desc", [model, u])
        for st in stats:
            st["hist"] = _json(st.pop("hist_json", None), None)
        recs = self.query("""
            select x.id, x.run_id, x.kind, x.bin, x.ctx_idx, x.max_act, x.acts, x.extra, c.tokens_json
            from records x join mining_runs r on r.id = x.run_id
            left join contexts c on c.corpus_id = r.corpus_id and c.idx = x.ctx_idx
            where r.model_id = ? and x.unit = ?
            order by case x.kind when 'top' then 0 when 'top_attn' then 1 when 'quantile' then 2 else 3 end,
                     case when x.kind = 'quantile' then -x.bin else x.bin end, x.max_act desc""", [model, u])
        heads = self.query("select detector, score, created_at from head_scores where model_id = ? and unit = ? "
                           "order by detector", [model, u])
        patching = self.query("""
            select r.dataset, r.id as run_id, r.what, r.method, p.position, p.effect from patch_results p
            join patch_runs r on r.id = p.run_id where r.model_id = ? and p.component = ?
            order by abs(p.effect) desc limit 50""", [model, u])
        circuits = self.query("""
            select c.id, c.dataset, c.method, count(*) as n_edges, min(e.rank) as best_rank
            from circuit_edges e join circuits c on c.id = e.circuit_id
            where c.model_id = ? and e.in_circuit = 1 and (e.sender = ? or e.receiver = ? or e.receiver like ?)
            group by c.id order by c.id""", [model, u, u, u + ":%"])
        graphs = self._unit_graphs(model, u)
        if not (expls or recs or stats or logits or heads or patching or circuits or graphs):
            return None
        # the interval of every record group (kind, and quantile bin): its records' max activations
        groups: dict[str, dict] = {}
        for r in recs:
            key = f"quantile/{r['bin']}" if r["kind"] == "quantile" else r["kind"]
            g = groups.setdefault(key, {"lo": r["max_act"], "hi": r["max_act"], "n": 0})
            g["lo"], g["hi"], g["n"] = min(g["lo"], r["max_act"]), max(g["hi"], r["max_act"]), g["n"] + 1
        # records: top ones, then a few per quantile bin, then a few random
        shown, per = [], {}
        for r in recs:
            k = r["kind"]
            key = (k, r["bin"]) if k == "quantile" else (k,)
            per[key] = per.get(key, 0) + 1
            cap = max_top if k in ("top", "top_attn") else per_bin
            if per[key] <= cap:
                shown.append(r)
        # simulated activations, from the best-scored explanation's details_json (where present)
        best_e = next((e for e in expls if e["explainer"] != "baseline" and e["best"]), None) or \
            next((e for e in expls if e["best"]), None)
        sim_by = _simulations(best_e["best"]["details_json"]) if best_e else {}
        for r in shown:
            r["acts"] = unpack_f16(r["acts"]).tolist()
            r["extra"] = unpack_f16(r["extra"]).tolist() if r["extra"] else None
            r["tokens"] = _json(r.pop("tokens_json"), None) or [f"#{i}" for i in range(len(r["acts"]))]
            r["sim"] = (sim_by.get(("id", r["id"])) or sim_by.get(("rec", r["kind"], r["bin"], r["ctx_idx"]))
                        or sim_by.get(("ctx", r["ctx_idx"])))
        for e in expls:
            for s in e["scores"]:
                s.pop("details_json", None)
        max_act = max([r["max_act"] for r in recs] + [s["max_act"] or 0 for s in stats] + [0.0])
        parsed = Unit.parse(u)
        return {
            "model_id": model, "model": m, "unit": u, "layer": parsed.layer, "kind": parsed.kind, "index": parsed.index,
            "explanations": [e for e in expls if e["explainer"] != "baseline"],
            "baselines": [e for e in expls if e["explainer"] == "baseline"],
            "sim_explanation_id": best_e["id"] if best_e and sim_by else None,
            "promoted": _json(logits[0]["promoted_json"], []) if logits else [],
            "suppressed": _json(logits[0]["suppressed_json"], []) if logits else [],
            "stats": stats[0] if stats else None, "records": shown, "n_records": len(recs), "max_act": max_act,
            "head_scores": heads, "patching": patching, "circuits": circuits, "graphs": graphs, "groups": groups,
        }

    def _unit_graphs(self, model: str, unit: str) -> list[dict]:
        """Attribution graphs (`autointerp graph`, schema v4) with a kept node on this unit."""
        if "graph_nodes" not in self.db.table_names():
            return []
        return self.query("""
            select g.id, g.prompt, g.target, count(*) as n_nodes, max(n.influence) as influence
            from graph_nodes n join graphs g on g.id = n.graph_id
            where g.model = ? and n.unit = ? and n.kept = 1 group by g.id order by g.id""", [model, unit])

    def dataset_view(self, name: str, top: int = 30) -> dict | None:
        ds = self.query("select * from datasets where name = ?", [name])
        runs = self.query("select * from patch_runs where dataset = ? order by id", [name])
        if not ds and not runs:
            return None
        pairs = self.query("select * from pairs where dataset = ? order by idx limit 5", [name])
        for run in runs:
            run["results"] = self.query("select component, layer, position, effect from patch_results where run_id = ? "
                                        "order by layer, component, position", [run["id"]])
        top_rows = self.dataset_units(name, min_effect=0.0, limit=top, include_unexplained=True)
        return {"dataset": ds[0] if ds else {"name": name}, "pairs": pairs, "runs": runs, "top": top_rows}

    # ---- merge --------------------------------------------------------------------
    def merge_from(self, sources: Iterable[str | Path]) -> dict[str, int]:
        """Copy every row of the source stores into this store, in one transaction, without
        duplicates: rows are matched by their natural keys (primary keys, `key` columns, the
        records' unique tuple); integer ids are remapped (explanations.id -> scores.explanation_id,
        patch_runs.id -> patch_results.run_id, records.id -> record ids in scores.details_json).
        Sources are checked first; a bad one raises StoreError and nothing is written.
        Returns the number of new rows per table."""
        srcs = [Path(p) for p in sources]
        me = self.path.resolve()
        conns = []
        try:
            for p in srcs:
                if p.resolve() == me:
                    raise UsageError(f"{p} is the merge target itself; name it once, with --into")
                conns.append(open_source(p))
            added: dict[str, int] = {}
            self.db.execute("PRAGMA cache_size = -65536")      # 64 MB of page cache for the big insert
            with self.tx(immediate=True):
                for p, src in zip(srcs, conns):
                    for t, n in _merge_one(self, src).items():
                        added[t] = added.get(t, 0) + n
            return added
        finally:
            for c in conns:
                c.close()

    def copy_runs_from(self, source: str | Path, run_ids: Iterable[str]) -> dict[str, int]:
        """The rows that explanations of these mining runs point at, copied from the store at
        `source` (opened read-only): the runs' models, corpora, run rows and the models' SAEs;
        not their contexts, statistics or records. An explain worker that reads its records from
        a mined store (`batch --mined`) keeps its own store this small; `merge` of the mined store
        and the workers' stores then gives the whole. One transaction, idempotent. Returns the
        new rows per table."""
        ids = sorted(set(run_ids))
        src = open_source(Path(source))
        try:
            q = ",".join("?" * len(ids))
            runs = src.execute(f"select * from mining_runs where id in ({q})", ids).fetchall() if ids else []
            missing = set(ids) - {r["id"] for r in runs}
            if missing:
                raise StoreError(f"{source} has no mining run {sorted(missing)[0]!r}")
            models = sorted({r["model_id"] for r in runs})
            corpora = sorted({r["corpus_id"] for r in runs})
            pick = {"models": ("id", models), "corpora": ("id", corpora), "mining_runs": ("id", ids),
                    "saes": ("model_id", models)}
            added: dict[str, int] = {}
            with self.tx():
                for t, (col, keys) in pick.items():
                    if not keys or t not in self.db.table_names():
                        continue
                    cols = [c for c in _cols(src, t) if c in set(_cols(self.db.conn, t))]
                    rows = src.execute(f"select {', '.join(cols)} from [{t}] where [{col}] in ({','.join('?' * len(keys))})",
                                       keys).fetchall()
                    cur = self.db.conn.executemany(
                        f"insert or ignore into [{t}] ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
                        [tuple(r) for r in rows])
                    added[t] = max(cur.rowcount, 0)
            return added
        finally:
            src.close()


# ---- helpers ----------------------------------------------------------------------
def _simulations(details_json: str | None) -> dict:
    """Per-record simulated activations from a simulation score's details_json.

    Accepted shape: {"records": [{"record_id": 12, "simulated": [...]}, ...]}; a record may be
    named by record_id/id, or by (kind, bin, ctx_idx), or by ctx_idx alone; the activations may
    be under simulated / simulated_acts / sim / predicted."""
    d = _json(details_json, None)
    if isinstance(d, dict):
        items = d.get("records") or d.get("per_record") or []
    elif isinstance(d, list):
        items = d
    else:
        return {}
    out = {}
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict):
            continue
        sim = next((it[k] for k in ("simulated", "simulated_acts", "sim", "predicted") if isinstance(it.get(k), list)), None)
        if sim is None:
            continue
        try:
            sim = [float(v) for v in sim]
        except (TypeError, ValueError):
            continue
        rid = it.get("record_id", it.get("id"))
        if isinstance(rid, int):
            out[("id", rid)] = sim
        if "ctx_idx" in it:
            if "kind" in it:
                out[("rec", it["kind"], it.get("bin", 0), it["ctx_idx"])] = sim
            out.setdefault(("ctx", it["ctx_idx"]), sim)
    return out


def open_source(path: Path) -> sqlite3.Connection:
    """A read-only connection to an autointerp store of this schema version, or StoreError."""
    if not path.is_file():
        raise StoreError(f"no store at {path}")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        meta = dict(conn.execute("select key, value from meta").fetchall()) if "meta" in tables else {}
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not an autointerp store ({e})") from None
    if meta.get("app") != APP_ID:
        conn.close()
        raise StoreError(f"{path} is not an autointerp store")
    try:
        version = parse_schema_version(meta, path)
    except StoreError:
        conn.close()
        raise
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreError(f"{path} has schema version {version}, this autointerp has {SCHEMA_VERSION}: "
                         "open it once with the same autointerp version (it upgrades) and merge again")
    return conn


def mining_shards(path: Path) -> list[dict]:
    """The finished corpus shards of mining runs (status 'shard', from `mine --shard i/n`) in a
    store, read-only: id, model_id, corpus_id, n_done, state_path, settings, stats."""
    conn = open_source(Path(path))
    try:
        rows = conn.execute("select id, model_id, corpus_id, n_done, state_path, settings_json, stats_json "
                            "from mining_runs where status = 'shard' order by id").fetchall()
    finally:
        conn.close()
    return [{"id": r[0], "model_id": r[1], "corpus_id": r[2], "n_done": r[3], "state_path": r[4],
             "settings": json.loads(r[5]), "stats": json.loads(r[6]) if r[6] else {}} for r in rows]


# tables copied in this order (foreign keys first); the rest (new tables) are copied generically
_ORDER = ["models", "corpora", "contexts", "mining_runs", "unit_stats", "unit_logits", "records", "diffs", "explanations",
          "scores", "llm_calls", "llm_cache", "datasets", "pairs", "patch_runs", "patch_results", "head_scores", "jobs"]
_SKIP = {"meta"}


def _cols(conn, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"pragma table_info([{table}])")]


def _merge_one(store, src: sqlite3.Connection) -> dict[str, int]:
    db = store.db.conn
    src_tables = [r[0] for r in src.execute("select name from sqlite_master where type = 'table' order by name")]
    dst_tables = set(store.db.table_names())
    tables = [t for t in _ORDER if t in src_tables] + [t for t in src_tables if t not in _ORDER]
    remap: dict[str, dict[int, int]] = {"explanations": {}, "patch_runs": {}, "records": {}}
    added: dict[str, int] = {}
    # record ids need remapping only where a score's details name a record by id (scores whose
    # simulations point at their records); otherwise records are copied without looking each up
    needs_record_ids = "scores" in src_tables and src.execute(
        "select 1 from scores where details_json like '%\"record_id\"%' limit 1").fetchone() is not None

    def count(t: str) -> int:  # (total_changes() would also count the FTS triggers' rows)
        return db.execute(f"select count(*) from [{t}]").fetchone()[0]

    for t in tables:
        if t in _SKIP or t.startswith("explanations_fts") or t.startswith("sqlite_") or t not in dst_tables:
            continue
        cols = [c for c in _cols(src, t) if c in set(_cols(db, t))]
        before = count(t)
        # a corpus shard of a mining run is not copied: `merge` writes the merged run (mine/shards.py)
        where = " where status != 'shard'" if t == "mining_runs" else ""
        rows = src.execute(f"select {', '.join('[' + c + ']' for c in cols)} from [{t}]{where}")
        if t in ("explanations", "patch_runs") or (t == "records" and needs_record_ids):
            # integer id: insert without it, then find the rows' ids in the target by their natural key
            # (in chunks: one lookup query per chunk, not per row)
            nat = ["key"] if t != "records" else ["run_id", "unit", "kind", "bin", "ctx_idx"]
            body = [c for c in cols if c != "id"]
            ins = f"insert or ignore into [{t}] ({', '.join(body)}) values ({', '.join('?' * len(body))})"
            bi, ni, ii = [cols.index(c) for c in body], [cols.index(c) for c in nat], cols.index("id")
            while chunk := rows.fetchmany(2000):
                db.executemany(ins, ([r[i] for i in bi] for r in chunk))
                if nat == ["key"]:
                    keys = [r[ni[0]] for r in chunk]
                    got = dict(db.execute(f"select key, id from [{t}] where key in ({','.join('?' * len(keys))})", keys))
                    remap[t].update((r[ii], got[r[ni[0]]]) for r in chunk)
                else:
                    look = f"select id from [{t}] where " + " and ".join(f"{c} = ?" for c in nat)
                    remap[t].update((r[ii], db.execute(look, [r[i] for i in ni]).fetchone()[0]) for r in chunk)
        elif t == "scores":
            body = [c for c in cols if c != "id"]
            ins = f"insert or ignore into scores ({', '.join(body)}) values ({', '.join('?' * len(body))})"
            ei, di = body.index("explanation_id"), (body.index("details_json") if "details_json" in body else None)
            bi, ex = [cols.index(c) for c in body], remap["explanations"]

            def score_rows():
                for r in rows:
                    v = [r[i] for i in bi]
                    v[ei] = ex[v[ei]]
                    if di is not None and v[di] and remap["records"]:
                        v[di] = _remap_details(v[di], remap["records"])
                    yield v
            db.executemany(ins, score_rows())
        elif t == "patch_results":
            ins = (f"insert into patch_results ({', '.join(cols)}) select {', '.join('?' * len(cols))} where not exists "
                   "(select 1 from patch_results where run_id = ? and component = ? and position is ?)")
            for r in rows:
                d = dict(zip(cols, r))
                d["run_id"] = remap["patch_runs"][d["run_id"]]
                db.execute(ins, [d[c] for c in cols] + [d["run_id"], d["component"], d["position"]])
        elif t == "mining_runs":
            # the same run in two shards: keep the further one
            ins = (f"insert into mining_runs ({', '.join(cols)}) values ({', '.join('?' * len(cols))}) "
                   "on conflict(id) do update set n_done = max(n_done, excluded.n_done), "
                   "status = case when 'done' in (status, excluded.status) then 'done' else status end, "
                   "updated_at = max(updated_at, excluded.updated_at) "
                   "where excluded.n_done > n_done or (excluded.status = 'done' and status != 'done')")
            db.executemany(ins, rows)
        elif t == "jobs":
            # a job done in any shard is done; its result id points at the merged explanation
            ins = (f"insert into jobs ({', '.join(cols)}) values ({', '.join('?' * len(cols))}) "
                   "on conflict(key) do update set status = excluded.status, result_id = excluded.result_id, "
                   "attempts = max(attempts, excluded.attempts), last_error = excluded.last_error, "
                   "updated_at = excluded.updated_at where excluded.status = 'done' and status != 'done'")
            for r in rows:
                d = dict(zip(cols, r))
                if d.get("result_id") is not None and d.get("stage") == "explain":
                    d["result_id"] = remap["explanations"].get(d["result_id"], d["result_id"])
                db.execute(ins, [d[c] for c in cols])
        elif t == "llm_calls" or (("id" in cols) and not _has_unique_besides_id(src, t)):
            # event rows without a natural key: a row equal in every column but id is a duplicate
            body = [c for c in cols if c != "id"]
            sel = ", ".join("[" + c + "]" for c in body)
            seen = {tuple(r) for r in db.execute(f"select {sel} from [{t}]")}
            ins = f"insert into [{t}] ({sel}) values ({', '.join('?' * len(body))})"
            for r in rows:
                d = dict(zip(cols, r))
                vals = tuple(d[c] for c in body)
                if vals not in seen:
                    seen.add(vals)
                    db.execute(ins, vals)
        else:   # records too, when no score of this source names a record by id (nothing to remap)
            body = [c for c in cols if not (c == "id" and ("key" in cols or t == "records"))]
            bi = [cols.index(c) for c in body]
            db.executemany(f"insert or ignore into [{t}] ({', '.join(body)}) values ({', '.join('?' * len(body))})",
                           rows if body == cols else ([r[i] for i in bi] for r in rows))
        added[t] = count(t) - before
    return added


def _has_unique_besides_id(conn, table: str) -> bool:
    pk = [r[1] for r in conn.execute(f"pragma table_info([{table}])") if r[5]]
    if pk and pk != ["id"]:
        return True
    return any(r[2] for r in conn.execute(f"pragma index_list([{table}])"))


def _remap_details(details_json: str, ids: dict[int, int]) -> str:
    d = _json(details_json, None)
    items = d.get("records") if isinstance(d, dict) else d if isinstance(d, list) else None
    if not isinstance(items, list):
        return details_json
    changed = False
    for it in items:
        if isinstance(it, dict):
            for k in ("record_id",):
                if isinstance(it.get(k), int) and it[k] in ids and ids[it[k]] != it[k]:
                    it[k] = ids[it[k]]; changed = True
    return json.dumps(d) if changed else details_json



# ----------------------------------------------------------------------------- provenance SQL
# The SQL that reads back the rows a figure was drawn from (shown with the figure, runnable with
# `autointerp query --sql`). It is written here so that only store/ knows the schema.


def patch_run_source_sql(run_ids: int | Iterable[int]) -> str:
    """SQL selecting the results of one patching run (by |effect|) or of several runs."""
    if not isinstance(run_ids, (list, tuple, set)):
        return (f"select component, layer, position, effect from patch_results where run_id = {int(run_ids)} "
                "order by abs(effect) desc")
    return ("select run_id, component, effect from patch_results where run_id in ("
            + ", ".join(str(int(r)) for r in run_ids) + ")")


def investigation_step_source_sql(investigation_id: str, step: str) -> str:
    """SQL selecting one stored investigation step's result."""
    q = lambda x: str(x).replace("'", "''")  # noqa: E731  (SQL string literal quoting)
    return (f"select result_json from investigation_steps where investigation_id = '{q(investigation_id)}' "
            f"and step = '{q(step)}'")
