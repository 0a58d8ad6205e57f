"""Structured output: a request names a JSON schema (a pydantic model or a schema dict) and gets
back a validated object.

How each backend honours the schema (`LLM.structured_support()`):
  constrained   the embedded model decodes under a logits processor that allows only tokens that
                keep the output a valid prefix of the schema (lm-format-enforcer's TokenEnforcer),
                so the output always parses;
  json_schema   the endpoint takes OpenAI's `response_format={"type": "json_schema", ...}`
                (OpenAI, vLLM, llama.cpp's server, Ollama's OpenAI API), found by a probe;
  guided_json   the endpoint takes vLLM's older `guided_json` request field, found by a probe;
  None          the endpoint has none: parse the reply and re-ask with the error (recorded in
                llm_calls as kind `structured_parse`, so the fallback is visible).

Why lm-format-enforcer for the embedded model: pure Python (one small dependency, interegular),
works with any Hugging Face tokenizer, the tiny in-code test tokenizers included, and costs a few
ms a token next to SmolLM2's ~100 ms forward on this CPU. xgrammar is faster but pulls triton
(hundreds of MB, useless on a CPU) and takes ~8 s to import here; outlines pulls far more.
lm-format-enforcer's own transformers integration imports a module transformers 5 removed, so
the small logits processor below talks to its core API (TokenEnforcer) directly.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import pydantic

from ..errors import LLMError


def json_schema_of(schema: Any) -> dict:
    """The JSON schema of a pydantic model class, or the dict itself."""
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        return schema.model_json_schema()
    if isinstance(schema, dict):
        return schema
    raise LLMError(f"a structured request needs a pydantic model or a JSON schema dict, not {type(schema).__name__}")


def schema_name(schema: Any) -> str:
    if isinstance(schema, type):
        return schema.__name__
    return str(schema.get("title") or "JSON") if isinstance(schema, dict) else "JSON"


def validate_as(value: Any, schema: Any) -> Any:
    """`value` (parsed JSON) as the schema's object: a pydantic instance for a model class; for a
    schema dict the value itself (checked for the type and the required keys of an object).
    Raises ValueError with a short reason."""
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        try:
            return schema.model_validate(value)
        except pydantic.ValidationError as e:
            first = e.errors()[0] if e.errors() else {}
            loc = ".".join(str(x) for x in first.get("loc", ()))
            raise ValueError(f"JSON does not match {schema.__name__}: {loc} {first.get('msg', '')}".strip()) from None
    if schema.get("type") == "object":
        if not isinstance(value, dict):
            raise ValueError("JSON is not an object")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"JSON object lacks {', '.join(missing)}")
    return value


def parse_strict(text: str, schema: Any) -> Any:
    """The reply of a schema-enforcing backend: the whole text is the JSON value."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the reply is not complete JSON ({e.msg} at character {e.pos} of {len(text)}; "
                         "cut off by max_tokens?)") from None
    return validate_as(value, schema)


# ---- constrained decoding for the embedded model --------------------------------------------------
_TOKDATA: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_TOKDATA_LOCK = threading.Lock()
MAX_WHITESPACE = 1   # consecutive whitespace characters allowed between JSON tokens (small models ramble)


def tokenizer_data(tok) -> Any:
    """lm-format-enforcer's view of a tokenizer (every token's text, and whether it starts a
    word), built once per tokenizer (~3 s for SmolLM2's 49k tokens)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    with _TOKDATA_LOCK:
        data = _TOKDATA.get(tok)
        if data is not None:
            return data
        zero = tok.encode("0", add_special_tokens=False)[-1]
        specials = set(tok.all_special_ids or [])
        regular = []
        for i in range(len(tok)):
            if i in specials:
                continue
            # decoded after "0" keeps a word-start token's leading space that decode([i]) drops
            after = tok.decode([zero, i])[1:]
            alone = tok.decode([i])
            # keep printable tokens only: a piece of a multi-byte character ("\ufffd") cannot be
            # placed character by character, and lm-format-enforcer's free-text cache would let
            # control characters (tabs, \x0f) into strings, where JSON forbids them raw
            if not after or "\ufffd" in after or not after.isprintable():
                continue
            regular.append((i, after, len(after) > len(alone)))
        eos = tok.eos_token_id
        data = TokenEnforcerTokenizerData(regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), eos, False, len(tok))
        _TOKDATA[tok] = data
        return data


class SchemaLogitsProcessor:
    """A transformers logits processor that masks every token that would take the generated text
    (after the prompt's `n_prompt` tokens) off the schema."""

    def __init__(self, tok, schema: dict, n_prompt: int, vocab_size: int):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        parser = JsonSchemaParser(schema)
        self.enforcer = TokenEnforcer(tokenizer_data(tok), parser)
        cfg = self.enforcer.root_parser.config   # TokenEnforcer sets a fresh config: tune it here
        # raw control characters are not allowed inside JSON strings (lm-format-enforcer takes
        # every character of the vocabulary); a backslash is handled as an escape by the parser
        cfg.alphabet = "".join(c for c in cfg.alphabet if c.isprintable() and c not in "\\\ufffd")
        parser.context.alphabet_without_quotes = cfg.alphabet.replace('"', "")
        cfg.max_consecutive_whitespaces = MAX_WHITESPACE
        cfg.force_json_field_order = True
        self.n_prompt = n_prompt
        self.vocab_size = vocab_size
        self.eos = tok.eos_token_id

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for b in range(input_ids.shape[0]):
            allowed = self.enforcer.get_allowed_tokens(input_ids[b].tolist())
            ids = [i for i in _allowed_ids(allowed) if i < scores.shape[-1]]
            if not ids:  # no way on: end (the caller reports the JSON as incomplete)
                ids = [self.eos] if self.eos is not None else [int(scores[b].argmax())]
            mask[b, torch.tensor(ids, device=scores.device)] = 0.0
        return scores + mask


def _allowed_ids(allowed) -> list[int]:
    if hasattr(allowed, "allowed_tokens"):
        return list(allowed.allowed_tokens)
    if hasattr(allowed, "to_list"):
        return list(allowed.to_list())
    return list(allowed)
