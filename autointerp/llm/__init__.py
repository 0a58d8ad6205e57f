"""The LLM layer: one interface (llm/base.py) over an embedded in-process model and any
OpenAI-compatible endpoint, with recording, a response cache, budgets, retries and prompts.

    from autointerp.llm import get_llm, load_prompt, Budget
"""

from .backends import BACKENDS, get_llm, parse_spec, register_backend
from .base import LLM, LogprobsUnsupported, extract_json, map_chat, parse_json_as
from .budget import Budget
from .prompts import Prompt, load_prompt

__all__ = ["LLM", "LogprobsUnsupported", "Budget", "Prompt", "get_llm", "load_prompt", "map_chat", "extract_json",
           "parse_json_as", "parse_spec", "BACKENDS", "register_backend"]
