"""Shared CLI options and output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import click

from ..config import Settings


@dataclass
class _State:
    debug: bool = False


STATE = _State()


def store_option(f: Callable) -> Callable:
    return click.option("--store", "store_path", type=click.Path(path_type=Path), default=None, envvar="AUTOINTERP_STORE",
                        help="SQLite store file [default: store/autointerp.db].")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def model_options(f: Callable) -> Callable:
    """--model/--device/--dtype, for every command that loads a subject model."""
    f = click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                     help="Weights dtype [default: float32; bf16/fp16 are for GPUs].")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
                     help="Device [default: auto].")(f)
    f = click.option("--model", "model_spec", default=None, envvar="AUTOINTERP_MODEL",
                     help="Subject model: packaged alias (smollm2-135m), .gguf file, local dir or hub id.")(f)
    return f


def llm_options(f: Callable) -> Callable:
    """--llm/--llm-base-url, for every command that asks an LLM."""
    f = click.option("--llm-base-url", default=None, help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama...).")(f)
    f = click.option("--llm", "llm_spec", default=None,
                     help="LLM: embedded:SPEC (in-process, default embedded:smollm2-135m) or openai:MODEL.")(f)
    return f


def settings(**overrides: Any) -> Settings:
    return Settings.load(**overrides)


def emit(as_json: bool, data: Any, human: Callable[[], None] | None = None) -> None:
    """Print `data` as one JSON document (--json) or call `human()` to print for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    elif human is not None:
        human()
    else:
        click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def progress(iterable=None, **kw):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal unless forced)."""
    from tqdm.auto import tqdm

    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("leave", False)
    return tqdm(iterable, **kw)


def explain_options(f: Callable) -> Callable:
    """--k/--seed/--style/--simulator/--scorers: the explain pipeline's settings (explain, batch)."""
    f = click.option("--scorers", default="simulation,detection,fuzzing", show_default=True, help="Comma-separated scorers to run.")(f)
    f = click.option("--simulator", type=click.Choice(["auto", "logprobs", "json"]), default="auto", show_default=True,
                     help="logprobs: all-at-once expected values (needs prompt logprobs); json: the model writes the values.")(f)
    f = click.option("--style", type=click.Choice(["auto", "completion", "chat"]), default="auto", show_default=True,
                     help="Explainer prompt: few-shot completion (small local models) or chat (instruction models).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Sampling and bootstrap seed.")(f)
    f = click.option("--k", type=int, default=None, help="Explanations sampled; the best on the calibration split is kept [default: 3].")(f)
    return f
