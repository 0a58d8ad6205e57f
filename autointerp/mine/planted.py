"""Planted units: units whose true behaviour is known, because a rule (core.rules) defines their
activation on the real corpus. They are mined like any unit (top, quantile and random records
from the same contexts) so the scorers can be checked against ground truth (`calibrate`).

A planted-units file is JSON: a list of objects (or {"units": [...]})

    {"name": "months",
     "explanation": "names of the months of the year",          # the true explanation
     "rule": {"tokens": ["January", "February", ...]},         # where it fires (core.rules)
     "decoys": ["names of the days of the week",               # wrong explanations: near misses...
                {"text": "numbers", "rule": {"regex": "[0-9]"}}]}   # ...optionally with their rule

A decoy given with a rule can also be simulated exactly. The built-ins are planted_units.json
next to this module. The activation of a planted unit is 1.0 where its rule fires and 0 elsewhere,
plus a tiny deterministic jitter per (unit, context, position) so rankings have no ties.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..core.keys import content_hash
from ..core.rules import Rule
from ..errors import UsageError
from .records import ActivationRecord, UnitExemplars, UnitStats

BUILTIN = Path(__file__).with_name("planted_units.json")


class Decoy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    rule: Rule | None = None


class PlantedUnit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    explanation: str
    rule: Rule
    decoys: list[Decoy] = []

    @field_validator("decoys", mode="before")
    @classmethod
    def _decoys(cls, v):
        return [{"text": d} if isinstance(d, str) else d for d in (v or [])]

    @field_validator("name", "explanation")
    @classmethod
    def _nonempty(cls, v):
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()


def load_planted(path: str | Path | None = None) -> list[PlantedUnit]:
    """The planted units of a JSON file (default: the built-ins). A malformed file is a
    UsageError of one line naming the file, the unit and the problem."""
    p = Path(path) if path else BUILTIN
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--units: no such file {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--units: cannot read {p}: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--units: {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(raw, dict):
        raw = raw.get("units")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"--units: {p} must hold a non-empty list of planted units (or {{\"units\": [...]}})")
    out, seen = [], set()
    for i, item in enumerate(raw):
        name = item.get("name", f"#{i}") if isinstance(item, dict) else f"#{i}"
        try:
            u = PlantedUnit.model_validate(item)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "unit"
            raise UsageError(f"--units: {p}: unit {name!r}: {loc}: {err['msg']}") from None
        if u.name in seen:
            raise UsageError(f"--units: {p}: unit name {u.name!r} appears twice")
        seen.add(u.name)
        out.append(u)
    return out


def _jitter(name: str, ctx: int, pos: int) -> float:
    return (int(content_hash(name, ctx, pos)[:6], 16) / 0xFFFFFF) * 1e-3


def planted_acts(unit: PlantedUnit, tokens: Sequence[str], ctx_idx: int) -> list[float]:
    fires = unit.rule.fires(tokens)
    return [(1.0 if f else 0.0) + _jitter(unit.name, ctx_idx, i) for i, f in enumerate(fires)]


def mine_planted(units: Sequence[PlantedUnit], contexts: Sequence[tuple[int, list[str]]], *, top_k: int = 40,
                 n_random: int = 20, n_quantiles: int = 10, per_quantile: int = 2, model_id: str = "planted",
                 run_id: str = "planted") -> dict[str, UnitExemplars]:
    """UnitExemplars of each planted unit over `contexts` [(ctx_idx, decoded text tokens)]: top
    records by max activation, a seeded uniform random sample of the other contexts, and quantile
    records, as the miner selects them."""
    out = {}
    for u in units:
        recs = []
        for ctx, toks in contexts:
            acts = planted_acts(u, toks, ctx)
            recs.append(ActivationRecord(ctx_idx=ctx, kind="top", tokens=list(toks), acts=acts,
                                         max_act=max(acts) if acts else 0.0))
        ranked = sorted(recs, key=lambda r: (-r.max_act, r.ctx_idx))
        top = [r.model_copy(update={"kind": "top", "bin": i}) for i, r in enumerate(ranked[:top_k])]
        rest = sorted(ranked[top_k:], key=lambda r: content_hash("planted-random", u.name, r.ctx_idx))
        random = [r.model_copy(update={"kind": "random"}) for r in rest[:n_random]]
        pool = sorted(rest[n_random:], key=lambda r: r.max_act)
        quant = []
        for b in range(n_quantiles):
            lo, hi = b * len(pool) // n_quantiles, (b + 1) * len(pool) // n_quantiles
            quant += [r.model_copy(update={"kind": "quantile", "bin": b}) for r in pool[lo:hi][:per_quantile]]
        all_acts = [a for r in recs for a in r.acts]
        n = max(len(all_acts), 1)
        mean = sum(all_acts) / n
        std = math.sqrt(sum((a - mean) ** 2 for a in all_acts) / n)
        stats = UnitStats(max_act=max(all_acts, default=0.0), mean_act=mean, std_act=std,
                          frac_active=sum(a >= 0.5 for a in all_acts) / n)
        out[u.name] = UnitExemplars(model_id=model_id, run_id=run_id, unit=f"P/{u.name}", stats=stats, top=top,
                                    quantiles=quant, random=random)
    return out


def fire_counts(units: Sequence[PlantedUnit], contexts) -> dict[str, int]:
    """How many contexts each planted unit fires in (a unit firing nowhere cannot be scored)."""
    return {u.name: sum(any(u.rule.fires(t)) for _, t in contexts) for u in units}


def describe(u: PlantedUnit) -> dict[str, Any]:
    return {"name": u.name, "explanation": u.explanation, "rule": u.rule.model_dump(exclude_defaults=True),
            "decoys": [d.text for d in u.decoys]}
