"""The LLM backends, registered by name: a spec `NAME:MODEL` picks one (embedded:smollm2-135m,
openai:gpt-4o-mini). A backend is one factory registered with `@register_backend`; base.py knows
none of them, so the backend modules import base.py and nothing imports them back.

    @register_backend("mine", example="mine:MODEL")
    def _mine(name, *, store, budget, base_url, settings, **kw) -> LLM: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from .base import LLM
from .budget import Budget


@dataclass(frozen=True)
class Backend:
    name: str
    example: str                       # a spec shown in errors, e.g. embedded:smollm2-135m
    factory: Callable[..., LLM]        # factory(model, *, store, budget, base_url, settings, **kw)


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, *, example: str) -> Callable[[Callable[..., LLM]], Callable[..., LLM]]:
    def deco(factory: Callable[..., LLM]) -> Callable[..., LLM]:
        BACKENDS[name] = Backend(name, example, factory)
        return factory
    return deco


def _examples() -> str:
    return ", ".join(b.example for b in BACKENDS.values())


def parse_spec(spec: str) -> tuple[str, str]:
    if ":" in spec:
        backend, model = spec.split(":", 1)
        if backend in BACKENDS:
            if not model:
                raise UsageError(f"LLM spec {spec!r} names no model (e.g. {_examples()})")
            return backend, model
    names = list(BACKENDS)
    first, rest = BACKENDS[names[0]], names[1:]
    raise UsageError(f"unknown LLM spec {spec!r}: use {first.name}:SPEC (e.g. {first.example})"
                     + "".join(f" or {n}:MODEL" for n in rest))


def get_llm(spec: str | None = None, *, store=None, base_url: str | None = None, budget: Budget | None = None,
            settings=None, **kw) -> LLM:
    """spec: 'embedded:smollm2-135m' (in-process, loaded through the model loader) or
    'openai:MODEL' (OPENAI_API_KEY from the environment; base_url, or settings.llm_base_url, for
    any OpenAI-compatible server). Defaults come from settings, a config.Settings the caller
    resolved (the CLI: flags > env > config file); None means the library defaults."""
    if settings is None:
        from ..config import Settings

        settings = Settings.defaults()
    spec = spec or settings.llm
    backend, name = parse_spec(spec)   # the name after 'backend:'; kw may carry model= (shared weights)
    if budget is None and (settings.max_llm_tokens is not None or settings.max_cost_usd is not None):
        budget = Budget(settings.max_llm_tokens, settings.max_cost_usd)
    return BACKENDS[backend].factory(name, store=store, budget=budget, base_url=base_url, settings=settings, **kw)


@register_backend("embedded", example="embedded:smollm2-135m")
def _embedded(name, *, store, budget, base_url, settings, **kw) -> LLM:
    from .embedded import EmbeddedLLM

    kw.setdefault("device", settings.device)
    kw.setdefault("dtype", settings.dtype)
    return EmbeddedLLM(name, store=store, budget=budget, **kw)


@register_backend("openai", example="openai:gpt-4o-mini")
def _openai(name, *, store, budget, base_url, settings, **kw) -> LLM:
    from .openai_backend import OpenAILLM

    kw.setdefault("concurrency", settings.llm_concurrency)
    if getattr(settings, "llm_timeout", None) is not None:
        kw.setdefault("timeout", settings.llm_timeout)
    for key in ("max_attempts", "rpm", "tpm"):
        if getattr(settings, f"llm_{key}", None) is not None:
            kw.setdefault(key, getattr(settings, f"llm_{key}"))
    return OpenAILLM(name, base_url=base_url or settings.llm_base_url, store=store, budget=budget, **kw)
