"""Price table, USD per 1M tokens (input, output). Override or extend with a JSON file named by
$AUTOINTERP_PRICES_FILE: {"gpt-4o-mini": [0.15, 0.6], "openai:my-model": [1, 2]}.
Embedded models and unknown models cost 0 (unknown ones are still counted in tokens)."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from ..errors import UsageError

PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
}


@lru_cache(maxsize=8)
def _file_prices(path: str) -> dict[str, tuple[float, float]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return {str(k): (float(v[0]), float(v[1])) for k, v in data.items()}
    except (OSError, ValueError, TypeError, IndexError) as e:
        raise UsageError(f"AUTOINTERP_PRICES_FILE={path} is not a JSON object of model -> [input, output] USD per 1M tokens ({e})") from None


def price_table() -> dict[str, tuple[float, float]]:
    table = dict(PRICES)
    path = os.environ.get("AUTOINTERP_PRICES_FILE")
    if path:
        table.update(_file_prices(path))
    return table


def cost_usd(backend: str, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float:
    if backend == "embedded":
        return 0.0
    table = price_table()
    price = table.get(f"{backend}:{model}") or table.get(model)
    if price is None:
        return 0.0
    return ((prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]) / 1e6
