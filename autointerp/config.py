"""Settings: flags > environment (AUTOINTERP_*) > config file (autointerp.toml or
$AUTOINTERP_CONFIG) > defaults. API keys are never settings: they are read from the
environment by the LLM backend at call time and never stored or printed.

Settings are resolved once, by the face (the CLI calls Settings.load with its flags), and passed
down; library functions take them as a parameter, and None there means Settings.defaults()
(no environment, no config file): library code never reads the working directory's config."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def packaged_prompts() -> Path:
    """The shipped prompts/: the checkout's (source or editable install), else the copy a plain
    `pip install .` puts under <prefix>/share/autointerp/prompts (pyproject data-files)."""
    import sys

    for d in (REPO_ROOT / "prompts", Path(sys.prefix) / "share" / "autointerp" / "prompts"):
        if (d / "explain_chat.txt").is_file():
            return d
    return REPO_ROOT / "prompts"


def cache_dir() -> Path:
    """Where converted model copies live: $AUTOINTERP_CACHE or ~/.cache/autointerp."""
    return Path(os.environ.get("AUTOINTERP_CACHE") or Path.home() / ".cache" / "autointerp")


def _config_path() -> Path:
    return Path(os.environ.get("AUTOINTERP_CONFIG", "autointerp.toml"))


def _config_file_values() -> dict[str, Any]:
    from .errors import UsageError

    path = _config_path()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOINTERP_", extra="ignore")

    # the descriptions are the README's configuration table (scripts/readme_reference.py)
    store: Path = Field(Path("store") / "autointerp.db", description="the SQLite store")
    model: str = Field("smollm2-135m", description="subject model spec: a packaged alias, a .gguf file, a local "
                                                   "directory or a hub id")
    device: str = Field("auto", description="auto | cpu | cuda | mps")
    dtype: str = Field("float32", description="float32 | bfloat16 | float16")
    llm: str = Field("embedded:smollm2-135m", description="the LLM that explains and scores: embedded:SPEC | "
                                                          "openai:MODEL")
    llm_base_url: str | None = Field(None, description="an OpenAI-compatible endpoint [none: OpenAI's]")
    prompts: Path = Field(default_factory=packaged_prompts, description="the prompt templates' folder")
    max_llm_tokens: int | None = Field(None, description="stop (exit 3) once this many LLM tokens were used; done work is kept")
    max_cost_usd: float | None = Field(None, description="stop (exit 3) once the LLM cost reaches this; done work is kept")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads torch uses in this process [none: torch's "
                                                         "default, one per core]; 1 is often faster on shared cores")
    llm_concurrency: int = Field(4, description="LLM requests at once per endpoint")
    llm_timeout: float | None = Field(None, description="seconds per LLM request [none: 60 s], doubled after a "
                                                        "read timeout")
    llm_rpm: float | None = Field(None, gt=0, description="requests a minute to one endpoint, shared by every "
                                                         "client of it in the process [none: no limit]")
    llm_tpm: float | None = Field(None, gt=0, description="tokens a minute to one endpoint (prompt + completion, "
                                                         "estimated before the call) [none: no limit]")
    llm_max_attempts: int | None = Field(None, description="attempts per LLM request on 429/5xx/connection "
                                                           "errors, with backoff and Retry-After [none: 5]")

    @classmethod
    def defaults(cls) -> "Settings":
        """The library's defaults: neither the environment nor a config file is read (the
        defaults are valid by construction; model_validate would read the environment)."""
        return cls.model_construct()

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        """Settings with explicit overrides (CLI flags; None means 'not given'), over the
        environment, the config file and the defaults: for faces (the CLI), once per command. An
        unknown key in the config file, or a value of the wrong type anywhere, is a UsageError
        naming the key."""
        from .errors import UsageError

        given = {k: v for k, v in overrides.items() if v is not None}
        path = _config_path()
        file_all = _config_file_values()
        unknown = sorted(k for k in file_all if k not in cls.model_fields)
        if unknown:
            raise UsageError(f"{path}: unknown key {unknown[0]!r} (known keys: {', '.join(cls.model_fields)})")
        file_vals = {k: v for k, v in file_all.items() if k not in given}
        try:
            env = cls()  # env + defaults
        except pydantic.ValidationError as e:
            raise UsageError(_bad_value(e, lambda k: f"environment variable AUTOINTERP_{k.upper()}")) from None
        from_file = {k: v for k, v in file_vals.items() if f"AUTOINTERP_{k.upper()}" not in os.environ}
        merged = {**env.model_dump(), **from_file, **given}
        try:
            return cls.model_validate(merged)
        except pydantic.ValidationError as e:
            def source(k: str) -> str:
                if k in given:
                    return f"option --{k.replace('_', '-')}"
                if k in from_file:
                    return f"{path}: key {k!r}"
                return f"environment variable AUTOINTERP_{k.upper()}"

            raise UsageError(_bad_value(e, source)) from None


def _bad_value(e: "pydantic.ValidationError", source) -> str:
    err = (e.errors() or [{}])[0]
    loc = err.get("loc") or ("?",)
    key = str(loc[0])
    got = err.get("input")
    return f"{source(key)}: {got!r} is not valid ({err.get('msg', 'invalid value')})"
