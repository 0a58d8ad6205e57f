"""Settings: flags > environment (AUTOINTERP_*) > config file (autointerp.toml or
$AUTOINTERP_CONFIG) > defaults. API keys are never settings: they are read from the
environment by the LLM backend at call time and never stored or printed."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where converted model copies live: $AUTOINTERP_CACHE or ~/.cache/autointerp."""
    return Path(os.environ.get("AUTOINTERP_CACHE") or Path.home() / ".cache" / "autointerp")


def _config_file_values() -> dict[str, Any]:
    path = Path(os.environ.get("AUTOINTERP_CONFIG", "autointerp.toml"))
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOINTERP_", extra="ignore")

    store: Path = Path("store") / "autointerp.db"
    model: str = "smollm2-135m"            # subject model spec
    device: str = "auto"                   # auto | cpu | cuda | mps
    dtype: str = "float32"                 # float32 | bfloat16 | float16
    llm: str = "embedded:smollm2-135m"     # embedded:SPEC | openai:MODEL
    llm_base_url: str | None = None
    prompts: Path = REPO_ROOT / "prompts"
    max_llm_tokens: int | None = None
    max_cost_usd: float | None = None
    llm_concurrency: int = 4

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        """Settings with explicit overrides (CLI flags; None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        file_vals = {k: v for k, v in _config_file_values().items() if k not in given}
        env = cls()  # env + defaults
        merged = {**env.model_dump(), **{k: v for k, v in file_vals.items() if f"AUTOINTERP_{k.upper()}" not in os.environ}, **given}
        return cls.model_validate(merged)
