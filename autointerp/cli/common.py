"""Shared CLI options and output helpers."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import click

from ..config import Settings
from ..core.files import check_output, probe_writable
from ..errors import StoreError, UsageError
from ..score.registry import default_scorers, scorer_names


# ----------------------------------------------------------------------------- option types
# Every numeric option of every command goes through these (HardenedGroup applies them when a
# command is registered), so no command checks them by hand: a float must be finite (nan and
# inf are refused, including by click.FloatRange, which lets nan through), and an integer is
# written in ASCII digits (int() would take '٣' or '1_0') and lies within +-MAX_INT.
MAX_INT = 2 ** 31 - 1
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


class _FiniteFloat:
    __slots__ = ()

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)  # type: ignore[misc]
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)  # type: ignore[attr-defined]
        return v


class _BoundedInt:
    __slots__ = ()

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not _INT_TEXT.fullmatch(value):
            self.fail(f"{value[:40]!r} is not an integer (ASCII digits)", param, ctx)  # type: ignore[attr-defined]
        v = super().convert(value, param, ctx)  # type: ignore[misc]
        if isinstance(v, int) and not -MAX_INT <= v <= MAX_INT:
            self.fail(f"{str(v)[:24]} is out of range (at most {MAX_INT:,} in size)", param, ctx)  # type: ignore[attr-defined]
        return v


@functools.cache
def _checked_type(mixin: type, base: type) -> type:
    """One checked subclass per click type (made once, so instances of it compare alike)."""
    return type(f"Checked{base.__name__}", (mixin, base), {})


def harden_param(param: click.Parameter) -> None:
    """Give a numeric parameter the checks above (a new instance of its type with them mixed in,
    so range types keep their range and help text; click's shared FLOAT/INT are left alone)."""
    t = param.type
    if isinstance(t, (_FiniteFloat, _BoundedInt)):
        return
    mixin = _FiniteFloat if isinstance(t, click.types.FloatParamType) else _BoundedInt if isinstance(
        t, click.types.IntParamType) else None
    if mixin is None:
        return
    cls = _checked_type(mixin, type(t))
    if isinstance(t, click.types._NumberRangeBase):
        param.type = cls(min=t.min, max=t.max, min_open=t.min_open, max_open=t.max_open, clamp=t.clamp)
    else:
        param.type = cls()


def harden_command(cmd: click.Command) -> None:
    for p in cmd.params:
        harden_param(p)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            harden_command(sub)


class HardenedGroup(click.Group):
    """A group whose commands (and their subcommands) get the numeric option checks above."""

    group_class = type           # its subgroups (`llm`, `sae`) are HardenedGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        harden_command(cmd)
        super().add_command(cmd, name)


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
    """--llm/--llm-base-url/--llm-timeout, for every command that asks an LLM."""
    f = click.option("--llm-timeout", type=click.FloatRange(min=0, min_open=True), default=None, expose_value=False,
                     callback=_flag_value("llm_timeout"),
                     help="Seconds to wait for one LLM request, doubled after a read timeout [default: 60, or $AUTOINTERP_LLM_TIMEOUT].")(f)
    f = click.option("--llm-base-url", default=None, help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama...).")(f)
    f = click.option("--llm", "llm_spec", default=None,
                     help="LLM: embedded:SPEC (in-process, default embedded:smollm2-135m) or openai:MODEL.")(f)
    return f


_FLAGS = "autointerp.flags"   # ctx.meta key: settings flags no command parameter carries (--llm-timeout)


def _flag_value(key: str) -> Callable:
    def cb(ctx, param, value):
        ctx.meta.setdefault(_FLAGS, {})[key] = value  # this invocation's context: gone when it ends
        return value

    return cb


def settings(**overrides: Any) -> Settings:
    """The command's Settings, resolved once here (flags > environment > config file > defaults)
    and passed down; flags without a command parameter (--llm-timeout) come from the context."""
    ctx = click.get_current_context(silent=True)
    flags = dict(ctx.meta.get(_FLAGS, {})) if ctx is not None else {}
    s = Settings.load(**{**flags, **{k: v for k, v in overrides.items() if v is not None}})
    from ..llm.prompts import use_prompts_dir

    use_prompts_dir(s.prompts)   # process-wide, like the store path: prompts are loaded deep in the library
    if s.threads is not None:    # process-wide too: torch's thread pool
        import torch

        torch.set_num_threads(s.threads)
    return s


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


class UnitKindNames(click.Choice):
    """A choice of the registered unit kinds' plurals (or names), read when asked, so a kind
    registered after the CLI is imported is a choice too. SAE kinds are left out: --sae selects
    latents."""

    def __init__(self, plural: bool = True):
        self.plural = plural
        super().__init__([])

    @property
    def choices(self) -> tuple[str, ...]:
        from ..core.units import UNIT_KINDS

        return tuple(k.plural if self.plural else k.name for k in UNIT_KINDS.values() if not k.needs_sae)

    @choices.setter
    def choices(self, _value) -> None:   # click.Choice.__init__ sets it; the registry is the list
        pass


class UnitKindList(click.ParamType):
    """`mine --units`: a registered unit kind's plural, a comma-separated list of them, or 'both'
    (neurons and heads); the choices are read from the registry when asked (core.units.
    unit_choices), so a kind registered after the CLI is imported is one too. The text is
    passed on as given: mine names the run's units canonically."""

    name = "units"

    def get_metavar(self, param, ctx=None) -> str:
        from ..core.units import unit_choices

        return "[" + "|".join(unit_choices()) + "][,...]"

    def convert(self, value, param, ctx):
        from ..core.units import parse_units
        from ..errors import UnitError

        try:
            parse_units(value)
        except UnitError as e:
            self.fail(str(e), param, ctx)
        return value


def explain_options(f: Callable) -> Callable:
    """--k/--seed/--style/--simulator/--scorers: the explain pipeline's settings (explain, batch)."""
    f = click.option("--explainer", type=click.Choice(["llm", "baseline"]), default="llm", show_default=True,
                     help="baseline: no LLM at all; the data-built baseline and its exact simulation score only.")(f)
    f = click.option("--scorers", default=",".join(default_scorers()), show_default=True,
                     help=f"Comma-separated scorers: {', '.join(scorer_names())}.")(f)
    f = click.option("--simulator", type=click.Choice(["auto", "logprobs", "yesno", "contrastive", "json"]), default="auto", show_default=True,
                     help="logprobs: all-at-once expected values (needs prompt logprobs); json: the model writes the values.")(f)
    f = click.option("--style", type=click.Choice(["auto", "completion", "chat"]), default="auto", show_default=True,
                     help="Explainer prompt: few-shot completion (small local models) or chat (instruction models).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Sampling and bootstrap seed.")(f)
    f = click.option("--k", type=int, default=None, help="Explanations sampled; the best on the calibration split is kept [default: 3].")(f)
    return f


# ----------------------------------------------------------------------------- checks before work
# Each raises UsageError (exit 2) with one line naming the option, before a model loads or
# anything is written.


def check_min(option: str, value, low: float = 1) -> None:
    """`option` (e.g. '--top-k') must be >= low when given."""
    if value is not None and value < low:
        raise UsageError(f"{option} must be at least {low:g}, got {value}")


def check_fraction(option: str, value, *, allow_zero: bool = False) -> None:
    """A fraction: 0 < value <= 1 (0 <= value with allow_zero)."""
    if value is None:
        return
    if not (0 <= value <= 1) or (value == 0 and not allow_zero) or value != value:
        raise UsageError(f"{option} must be a fraction {'in [0, 1]' if allow_zero else 'in (0, 1]'}, got {value}")


def check_layers_text(option: str, text: str | None) -> None:
    """A layer list given but empty ('' or ',') is refused rather than read as 'all layers'."""
    if text is not None and not str(text).replace(",", "").strip():
        raise UsageError(f"{option} is empty: give layers like 0,1,2 or 0-5, or leave the option out for all layers")


def known_sizes(model_spec: str | None) -> dict | None:
    """The model's sizes (n_layers, d_mlp, n_heads, max_context where known) without loading it:
    from the packaged-model table or a local directory's config.json; None when not known."""
    try:
        from ..models.loader import PACKAGED, resolve_spec
        spec = settings(model=model_spec).model
        r = resolve_spec(spec)
    except Exception:
        return None                                  # the model load reports a bad spec properly
    out: dict = {}
    if r.origin == "alias":
        p = PACKAGED[r.alias]
        out = {k: p[k] for k in ("n_layers", "d_mlp", "n_heads") if k in p}
    cfg_dir = r.path if r.origin == "dir" else None
    if r.origin in ("alias", "gguf") and r.path is not None:        # a GGUF converted before: its config is cached
        try:
            from ..models.loader import gguf_cache_path, is_complete
            d = gguf_cache_path(r.path)
            cfg_dir = d if is_complete(d) else None
        except Exception:
            cfg_dir = None
    if cfg_dir is not None:
        try:
            cfg = json.loads((cfg_dir / "config.json").read_text())
        except (OSError, ValueError):
            return out or None
        cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
        for key, names in (("n_layers", ("num_hidden_layers", "n_layer")), ("d_mlp", ("intermediate_size", "n_inner")),
                           ("n_heads", ("num_attention_heads", "n_head")),
                           ("max_context", ("max_position_embeddings", "n_positions", "n_ctx"))):
            v = next((cfg[n] for n in names if isinstance(cfg.get(n), int)), None)
            if v is not None:
                out.setdefault(key, v)
    return out or None


def check_layers(option: str, text, model_spec: str | None) -> None:
    """--layers: not empty, parseable, and in range when the model's size is known before loading."""
    check_layers_text(option, text)
    if text is None:
        return
    from ..mine.miner import parse_layers

    sizes = known_sizes(model_spec)
    try:
        parse_layers(text, sizes["n_layers"] if sizes and "n_layers" in sizes else 10 ** 6)
    except UsageError as e:
        raise UsageError(f"{option}: {e}") from None


def check_context_len(option: str, value: int | None, model_spec: str | None = None, max_context: int | None = None) -> None:
    """A context length >= 2 and within the model's maximum (given, or known before loading)."""
    if value is None:
        return
    if max_context is None:
        max_context = (known_sizes(model_spec) or {}).get("max_context")
    from ..mine.miner import check_context_len as _check

    try:
        _check(value, max_context)
    except UsageError as e:
        raise UsageError(str(e).replace("--context-len", option)) from None


def check_out_dir(option: str, path: Path | None) -> None:
    """An output folder that exists and is writable, or can be created; nothing is created here."""
    if path is None:
        return
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: a file, not a folder")
    why = probe_writable(path)
    if why:
        raise UsageError(f"{option} {path}: {why}")


def check_out_file(option: str, path: Path | None, *, force: bool = False) -> None:
    """An output file that may be written: not there yet (or force), not a symlink/FIFO/device,
    its folder existing or makeable (core/files.py); nothing is written here."""
    check_output(option, path, force=force)


def force_option(f: Callable) -> Callable:
    return click.option("--force", is_flag=True, help="Overwrite an existing output file.")(f)


def run_options(rerun_help: str = "Recompute even if an identical run is stored.", *, force: bool = False,
                llm: bool = False) -> Callable:
    """The options a stored-run command ends with, in this order: --rerun, [--force], the model
    options, [the LLM options], --store, --json."""
    def deco(f: Callable) -> Callable:
        opts = [click.option("--rerun", is_flag=True, help=rerun_help), *([force_option] if force else []),
                model_options, *([llm_options] if llm else []), store_option, json_option]
        for opt in reversed(opts):
            f = opt(f)
        return f
    return deco


def check_store_path(path: Path, *, must_exist: bool = False) -> Path:
    """The store file: an existing file, or (unless must_exist) a path where one can be created.
    must_exist: for commands that only read, or that need stored data (nothing is created)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"--store {path}: a folder, not a store file")
    if path.exists():
        return path
    if must_exist:       # the same line (and exit code) as every read-only open of a missing store
        raise StoreError(f"no store at {path} (run a command that writes, e.g. `autointerp mine`, first)")
    why = probe_writable(path.parent)
    if why:
        raise UsageError(f"--store {path}: {why}")
    return path


def quiet_library_warnings() -> None:
    """Known, harmless FutureWarnings/UserWarnings of the libraries (not ours), so normal runs
    print only their own lines on stderr. Narrow: by message and module."""
    import logging
    import warnings

    for msg, cat in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=msg, category=cat)
    for name, text in _KNOWN_LOG_LINES:
        logging.getLogger(name).addFilter(lambda rec, text=text: text not in rec.getMessage())


# (message regex, category): transformers deprecations of the generate()/forward() cache arguments
# that the embedded LLM passes (one line per call site, every run)
_KNOWN_WARNINGS: list[tuple[str, type]] = [
    (r"`past_key_values` is deprecated and will be removed", FutureWarning),
    (r"`cache_params` is deprecated and will be removed", FutureWarning),
]
# (logger, text): the same deprecation, logged once per process by transformers
_KNOWN_LOG_LINES: list[tuple[str, str]] = [
    ("transformers.utils.generic", "`past_key_values`/`cache_params` are deprecated"),
]


def check_unit(option: str, unit: str, model_spec: str | None):
    """A unit id (L3/N42, L9/H9) parsed, and checked against the model's sizes when they are known
    before loading (e.g. `--unit L3/N99999` -> out of range (d_mlp 1536)). Returns the Unit."""
    from ..core.units import Unit

    u = Unit.parse(unit)
    sizes = known_sizes(model_spec)
    if sizes and all(k in sizes for k in ("n_layers", "d_mlp", "n_heads")) and (u.record.needs_sae or u.record.size in sizes):
        u = u.check(sizes["n_layers"], sizes["d_mlp"], sizes["n_heads"],      # another kind's size by its name
                    **{k: v for k, v in sizes.items() if k not in ("n_layers", "d_mlp", "n_heads")})
    return u


def load_subject(model_spec, device, dtype):
    """The subject model named by flags/env/config (one place, for every command)."""
    from ..models.hooked import HookedModel

    s = settings(model=model_spec, device=device, dtype=dtype)
    return HookedModel.load(s.model, device=s.device, dtype=s.dtype)
