"""--dry-run's token estimate: build the real prompts of one unit (its explain prompt, its
simulator prompts, its judge prompts) with the pipeline's own builders, count their tokens, and
multiply by the units to do. Calls no LLM and writes nothing.

Calls per unit (explain_exemplars with ExplainSettings s):
  explain      1 call, k samples of up to s.max_tokens tokens
  calibration  k > 1: k candidates x the calibration records, one simulation each
  test         2 explanations (the LLM's and the baseline) x the test records
  detection    2 x (test + spare) items, fuzzing about the same (yes/no judge, ~1 token out)
A logprob simulator (embedded) reads the prompt and writes 1 token; a JSON simulator (remote)
writes about 3 tokens per record token. Counts are an estimate: cached calls cost nothing, and
the real explanation's length is not known before it is written.
"""

from __future__ import annotations

from typing import Callable

SAMPLE_EXPLANATION = "the word \"the\" at the start of a sentence, and sometimes other articles"


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


def _text(prompt) -> str:
    if isinstance(prompt, list):
        return "\n".join(m.get("content", "") for m in prompt)
    if isinstance(prompt, tuple):
        return "".join(prompt[0:1]) + "".join(prompt[1]) if isinstance(prompt[1], list) else "".join(prompt)
    return str(prompt)


def unit_tokens(ex, llm_spec: str, s, count: Callable[[str], int]) -> dict:
    """Estimated prompt and completion tokens of one unit's explain+score pipeline."""
    from ..core.format import unit_max_of
    from ..explain.api import pairs as _pairs
    from ..explain.baseline import baseline_explanation
    from ..explain.explainer import build_explain_prompt, choose_style
    from ..llm import load_prompt, parse_spec
    from ..score.classify import build_yes_no_prompt, detection_items, fuzzing_items
    from ..score.simulate import build_json_prompt, build_logprob_prompt
    from ..score.splits import split_records

    backend, _ = parse_spec(llm_spec)
    unit_max = unit_max_of(ex)
    promoted = _pairs(ex.promoted)
    sp = split_records(ex.unit, ex.top, ex.random, ex.quantiles, s.sizes)
    style = choose_style(type("_L", (), {"backend": backend})(), s.style)
    tpl = load_prompt(f"explain_{style}")
    explain_p = count(_text(build_explain_prompt(tpl, sp.train, unit_max, window_size=s.window, promoted=promoted,
                                                 unit=ex.unit)))
    logprobs = backend == "embedded" if s.simulator == "auto" else s.simulator == "logprobs"
    expls = [SAMPLE_EXPLANATION, baseline_explanation(sp.train, unit_max, promoted) if sp.train else SAMPLE_EXPLANATION]

    def sim(records, expl) -> tuple[int, int]:
        p = c = 0
        for r in records:
            if logprobs:
                prefix, segs = build_logprob_prompt(load_prompt("simulate_all_at_once"), expl, r.tokens)
                p += count(prefix + "".join(segs))
                c += 1
            else:
                p += count(_text(build_json_prompt(load_prompt("simulate_json"), expl, r.tokens)))
                c += 16 + 3 * len(r.tokens)
        return p, c

    sim_p = sim_c = 0
    if "simulation" in s.scorers or s.k > 1:
        if s.k > 1:
            p, c = sim(sp.calibration, SAMPLE_EXPLANATION)
            sim_p, sim_c = sim_p + s.k * p, sim_c + s.k * c
        if "simulation" in s.scorers:
            for e in expls:
                p, c = sim(sp.test, e)
                sim_p, sim_c = sim_p + p, sim_c + c
    judge_p = judge_c = 0
    pool = sp.test + list(sp.spare[: s.n_spare])
    for task, make in (("detection", detection_items), ("fuzzing", fuzzing_items)):
        if task not in s.scorers or not pool:
            continue
        items = make(pool, unit_max, frac=s.active_frac)
        t = load_prompt(task if logprobs else f"{task}_chat")
        for e in expls:
            for it in items:
                judge_p += count(_text(t.render(explanation=e, text=it.text)))
                judge_c += 1 if logprobs else 3
    out = {"explain_prompt": explain_p, "explain_completion": s.k * s.max_tokens,
           "simulate_prompt": sim_p, "simulate_completion": sim_c, "judge_prompt": judge_p, "judge_completion": judge_c}
    out["prompt"] = explain_p + sim_p + judge_p
    out["completion"] = out["explain_completion"] + sim_c + judge_c
    out["total"] = out["prompt"] + out["completion"]
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
