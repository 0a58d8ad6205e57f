"""Test-your-text (`autointerp serve --model SPEC`): a box on each unit page runs the subject model
(with the unit's SAE or transcoder for a latent) on a typed text and shows the unit's per-token
activations, coloured like the records (on the same scale), next to the exact simulation of the
unit's baseline explanation and, with `--llm`, the LLM simulation of its best explanation.

The viewer stays read-only: the text travels in the query string of a GET (`?text=`), nothing is
stored, and the SAE is loaded from the path the store registered (its content hash checked).

Bounds: a text is 1 to MAX_TEXT_CHARS characters (else 400 with one line); at most MAX_IN_FLIGHT
requests wait for or hold the model (one forward at a time: the model is shared); one more is
answered 503 with one line rather than queued without end."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from ..core.units import Unit
from .pages import NEG_RGB, POS_RGB, SIM_RGB, colour, record_view

MAX_TEXT_CHARS = 500
MAX_IN_FLIGHT = 4


class TextError(ValueError):
    """A bad text (400)."""


class Busy(RuntimeError):
    """Too many requests in flight (503)."""


def check_text(text: str) -> str:
    if not text.strip():
        raise TextError("text is empty: type a sentence to run the model on")
    if len(text) > MAX_TEXT_CHARS:
        raise TextError(f"text is too long ({len(text)} characters; at most {MAX_TEXT_CHARS})")
    if "\x00" in text:
        raise TextError("text holds a NUL character")
    return text


class TextTester:
    """The loaded subject model (and optional simulator LLM) behind the test-your-text box."""

    def __init__(self, hm, llm=None):
        self.hm, self.llm = hm, llm
        self.model_id = hm.spec
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self._model_lock = threading.Lock()
        self._saes: dict[str, object] = {}
        self.in_flight = 0

    def _sae(self, row: dict):
        from ..models.sae import SAEError, load_sae

        sae = self._saes.get(row["id"])
        if sae is None:
            if not row.get("path") or not Path(row["path"]).is_dir():
                raise SAEError(f"the store's SAE {row['name']} was loaded from {row.get('path')}, which is gone")
            sae = load_sae(row["path"], name=row["name"])
            if sae.id != row["id"]:
                raise SAEError(f"the files at {row['path']} changed since the store registered SAE {row['name']}")
            self._saes[row["id"]] = sae
        return sae

    def box(self, v: dict, text: str | None, action: str) -> dict:
        """The template context of the box on unit page `v`, running the model when text is given."""
        box = {"enabled": True, "model": self.model_id, "max_chars": MAX_TEXT_CHARS, "text": text or "",
               "action": action, "result": None}
        if v["model_id"] != self.model_id:
            return {"enabled": False, "hint": f"{v['model_id']} (this viewer runs {self.model_id})"}
        if text is None:
            return box
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{MAX_IN_FLIGHT} texts are already being run; try again in a moment")
        try:
            self.in_flight += 1
            box["result"] = self._run(v, check_text(text))
        finally:
            self.in_flight -= 1
            self._slots.release()
        return box

    def _run(self, v: dict, text: str) -> dict:
        from ..mine.trace import unit_trace

        u = Unit.parse(v["unit"])
        sae = self._sae(v["sae"]) if u.record.needs_sae else None
        with self._model_lock:
            t = unit_trace(self.hm, text, u, sae)
        scale = v["max_act"] if v["max_act"] > 0 else max(t.acts + [0.0])
        neg = max([-a for a in t.acts] + [0.0])
        rec = record_view(t.tokens, t.acts, label=f"{u} on your text",
                          bg=lambda a: colour(a, scale, POS_RGB) if a >= 0 else colour(-a, neg, NEG_RGB),
                          tip=lambda i, a, s: f"act {a:.6f}", cls="try-acts", data=[("unit", str(u))])
        sims, notes = [], []
        records = [SimpleNamespace(tokens=t.tokens, acts=t.acts, max_act=max(t.acts + [0.0]), ctx_idx=-1, kind="text")]
        base = next(iter(v["baselines"]), None)
        if base is not None:
            from ..score.exact import ExactSimulator

            sim = ExactSimulator().simulate(base["text"], records)
            if sim is None:
                notes.append("the baseline explanation carries no rule to simulate exactly")
            else:
                sims.append(_sim_record(t.tokens, sim.expected[0], f"exact simulation of the baseline: {base['text']}",
                                        "try-exact"))
        else:
            notes.append("no baseline explanation stored: no exact simulation")
        best = next(iter(v["explanations"]), None)
        if self.llm is None:
            notes.append("LLM simulation: start the viewer with --llm SPEC to see it")
        elif best is None:
            notes.append("no LLM explanation stored: no LLM simulation")
        else:
            from ..score.simulate import LogprobSimulator

            try:
                sim = LogprobSimulator(self.llm).simulate(best["text"], records)
                sims.append(_sim_record(t.tokens, sim.expected[0], f"LLM simulation ({self.llm.name}) of: {best['text']}",
                                        "try-llm"))
            except Exception as e:  # one line on the page; the activations above still stand
                notes.append(f"LLM simulation failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return {"n_tokens": len(t.tokens), "max": max(t.acts) if t.acts else None, "scale": scale, "record": rec,
                "sims": sims, "notes": notes, "acts": t.acts, "tokens": t.tokens, "exact_note": ""}


def _sim_record(tokens: list[str], values: list[float], label: str, cls: str) -> dict:
    return record_view(tokens, values, label=label, bg=lambda s: colour(s, 10.0, SIM_RGB),
                       tip=lambda i, s, _: f"simulated {s:.2f} of 10", cls=cls)
