"""--dry-run's token estimate: one unit's REAL explain -> score pipeline run against a dry-run
LLM backend (llm.dryrun), which counts every prompt and completion it is sent, into a
throwaway store. Multiplied by the units to do. Calls no LLM and writes nothing to the store.

Counts are an estimate: cached calls cost nothing, completions are counted at their max_tokens,
and the real explanation's length is not known before it is written.
"""
from __future__ import annotations

from typing import Callable


def token_counter(llm_spec: str, device: str = "cpu") -> tuple[Callable[[str], int], str]:
    """A token counter for the LLM: its own tokenizer for embedded models, else ~4 characters a
    token (a remote endpoint's tokenizer is not at hand)."""
    from ..llm import parse_spec

    backend, model = parse_spec(llm_spec)
    if backend == "embedded":
        try:
            from ..llm.embedded import loaded_model

            _, tok = loaded_model(model, device, "float32")
            return (lambda s: len(tok(s, add_special_tokens=False)["input_ids"])), f"tokenizer of {model}"
        except Exception:  # noqa: BLE001 - fall back to the rough count
            pass
    return (lambda s: (len(s) + 3) // 4), "about 4 characters a token"


def unit_tokens(ex, llm_spec: str, s, count: Callable[[str], int]) -> dict:
    """Estimated prompt and completion tokens of one unit's explain + score pipeline: the
    pipeline itself, run once on this unit against the dry-run backend."""
    import tempfile
    from pathlib import Path

    from ..llm import parse_spec
    from ..llm.dryrun import DryRunLLM
    from ..pipeline import explain_exemplars
    from ..store import Store

    backend, _ = parse_spec(llm_spec)
    logprobs = backend == "embedded" if s.simulator == "auto" else s.simulator in ("logprobs", "yesno", "contrastive")
    llm = DryRunLLM(llm_spec, count, prompt_logprobs=logprobs)
    llm.backend = "embedded" if backend == "embedded" else "dryrun"   # the explainer style follows the backend
    with tempfile.TemporaryDirectory() as d:
        st = Store(Path(d) / "dry.db")
        st.put_model(ex.model_id, {"family": "?", "n_layers": 0, "d_model": 0, "n_heads": 0, "n_kv_heads": 0,
                                   "d_head": 0, "d_mlp": 0, "vocab_size": 0})
        dry = ex.model_copy(update={"run_id": None}) if hasattr(ex, "model_copy") else ex   # no mining run in this store
        explain_exemplars(st, dry, llm, settings=s.model_copy(update={"n_boot": 10}))
        st.close()
    from ..score.registry import SCORERS

    part: dict[str, tuple[str, ...]] = {"explain": ("explain_",)}
    for spec in SCORERS.values():      # each scorer's templates counted under its usage group
        if spec.usage:
            part[spec.usage] = part.get(spec.usage, ()) + spec.templates
    out: dict[str, int] = {}
    for name, prefixes in part.items():
        rows = [u for t, u in llm.usage.items() if t.startswith(prefixes)]
        out[f"{name}_prompt"] = sum(u["prompt"] for u in rows)
        out[f"{name}_completion"] = sum(u["completion"] for u in rows)
    out["prompt"] = sum(u["prompt"] for u in llm.usage.values())
    out["completion"] = sum(u["completion"] for u in llm.usage.values())
    out["total"] = out["prompt"] + out["completion"]
    out["calls"] = sum(u["calls"] for u in llm.usage.values())
    return out


def estimate(ex, n_units: int, llm_spec: str, s, count, counted_with: str) -> dict:
    from ..llm import parse_spec
    from ..llm.pricing import cost_usd

    per = unit_tokens(ex, llm_spec, s, count)
    backend, model = parse_spec(llm_spec)
    return {"based_on": ex.unit, "units": n_units, "per_unit": per, "prompt_tokens": per["prompt"] * n_units,
            "completion_tokens": per["completion"] * n_units, "total_tokens": per["total"] * n_units,
            "cost_usd": round(cost_usd(backend, model, per["prompt"] * n_units, per["completion"] * n_units), 4),
            "counted_with": counted_with}
