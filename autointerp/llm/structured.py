"""Structured output: a request names a JSON schema (a pydantic model or a schema dict) and gets
back a validated object.

How each backend honours the schema (`LLM.structured_support()`):
  constrained   the embedded model decodes allowing only tokens that keep the output a valid
                prefix of the schema (lm-format-enforcer's TokenEnforcer, in a decode loop of
                EmbeddedLLM.generate_structured: forced tokens cost no forward pass, uniqueItems
                strings do not repeat), so the output always parses;
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
JsonConstraint below talks to its core API (TokenEnforcer) directly.
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


def strict_schema(schema: Any) -> Any:
    """The schema as OpenAI's strict mode wants it: every object closed (additionalProperties
    false) and all its properties required; pydantic's $defs/$ref kept; `uniqueItems` (refused
    by strict mode) dropped. The constrained decoder compiles this form too: lm-format-enforcer
    lets an object end after a comma when its remaining properties are optional (`{"a": 1 ,}`)."""
    if isinstance(schema, list):
        return [strict_schema(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items() if k != "uniqueItems"}
    if out.get("type") == "object" and isinstance(out.get("properties"), dict):
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


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
    """The reply of a schema-enforcing backend: the whole text is the JSON value. A reply cut off
    by max_tokens is a valid prefix: it is closed after its last complete element (`closings`)
    and used if that validates (fewer list items than asked; pydantic checks no minItems)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        for closed in closings(text):
            try:
                return validate_as(json.loads(closed), schema)
            except ValueError:
                continue
        raise ValueError(f"the reply is not complete JSON ({e.msg} at character {e.pos} of {len(text)}; "
                         "cut off by max_tokens?)") from None
    return validate_as(value, schema)


def _string_end(text: str, i: int) -> int:
    """The index of the quote that closes the JSON string opening at text[i] (escapes skipped), or
    len(text) when the text ends inside the string."""
    j, n = i + 1, len(text)
    while j < n and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return min(j, n)


def closings(text: str, limit: int = 64):
    """Texts that end a cut-off JSON prefix: cut right after a complete string, `]`, `}` or an
    opening bracket, then close the open brackets; latest cut first."""
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = _string_end(text, i)
            if j >= n:
                break
            i = j + 1
            cuts.append((i, "".join(reversed(stack))))
            continue
        if c in "{[":
            stack.append("}" if c == "{" else "]")
            cuts.append((i + 1, "".join(reversed(stack))))
        elif c in "}]" and stack:
            stack.pop()
            cuts.append((i + 1, "".join(reversed(stack))))
        i += 1
    for pos, close in reversed(cuts[-limit:]):
        yield text[:pos] + close


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


class JsonConstraint:
    """What the embedded decoder (EmbeddedLLM.generate_structured) needs to hold a reply to a
    schema: lm-format-enforcer's TokenEnforcer (the allowed next tokens after any prefix of the
    reply) and the roles whose strings must not repeat (`distinct_roles`). Building it raises
    on a schema the enforcer cannot compile (e.g. a string with both a pattern and a length)."""

    def __init__(self, tok, schema: dict):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        parser = JsonSchemaParser(strict_schema(schema))
        self.enforcer = TokenEnforcer(tokenizer_data(tok), parser)
        cfg = self.enforcer.root_parser.config   # TokenEnforcer sets a fresh config: tune it here
        # raw control characters are not allowed inside JSON strings (lm-format-enforcer takes
        # every character of the vocabulary); a backslash is handled as an escape by the parser
        cfg.alphabet = "".join(c for c in cfg.alphabet if c.isprintable() and c not in "\\\ufffd")
        parser.context.alphabet_without_quotes = cfg.alphabet.replace('"', "")
        cfg.max_consecutive_whitespaces = MAX_WHITESPACE
        cfg.force_json_field_order = True
        self.distinct = distinct_roles(schema)
        self.eos = tok.eos_token_id

    def allowed(self, ids: list[int]) -> list[int]:
        """The tokens that may follow `ids`, sorted (the enforcer's order depends on set
        iteration, so it changes with the process's hash seed; a seeded sample must not)."""
        return sorted(_allowed_ids(self.enforcer.get_allowed_tokens(ids)))


def distinct_roles(schema: dict) -> set[str]:
    """Property names whose string values must not repeat within one reply (case and outer
    spaces ignored): the items of an array property marked `uniqueItems`, across every array of
    that name in the reply (a value listed in two groups is a repeat), and the string fields of
    the objects in such an array (two groups with one answer). A stricter reading of JSON
    schema's uniqueItems; small models repeat themselves, and a repeat is useless to the caller."""
    defs = schema.get("$defs") or {}
    out: set[str] = set()

    def res(s):
        for _ in range(20):
            if not (isinstance(s, dict) and "$ref" in s):
                break
            s = defs.get(str(s["$ref"]).rsplit("/", 1)[-1], {})
        return s if isinstance(s, dict) else {}

    def walk(s, depth=0):
        s = res(s)
        if depth > 12:
            return
        for name, p in (s.get("properties") or {}).items():
            p = res(p)
            if p.get("type") == "array" and p.get("uniqueItems"):
                item = res(p.get("items"))
                if item.get("type") == "string":
                    out.add(name)
                out.update(k for k, f in (item.get("properties") or {}).items() if res(f).get("type") == "string")
            walk(p, depth + 1)
        if "items" in s:
            walk(s["items"], depth + 1)
        for k in ("anyOf", "oneOf", "allOf"):
            for x in s.get(k) or []:
                walk(x, depth + 1)

    walk(schema)
    return out


def json_strings(text: str) -> tuple[list[tuple[str | None, str, int, int]], bool]:
    """The value strings of a (partial) JSON text (contents as written, escapes not decoded): (role, content, start, end)
    with role the key the value belongs to (an array's items take the array's key; None at the
    top level), start the index of the first content character, end that of the closing quote;
    and whether the text ends inside a string. Keys are not listed."""
    out: list[tuple[str | None, str, int, int]] = []
    stack: list[list] = []      # [kind, role]: an object's role is its current key (None: a key is next)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = _string_end(text, i)
            j = j if j < n else -1
            top = stack[-1] if stack else None
            is_key = top is not None and top[0] == "obj" and top[1] is None
            if j < 0:
                return out, True
            if is_key:
                top[1] = text[i + 1:j]
            else:
                out.append((top[1] if top else None, text[i + 1:j], i + 1, j))
            i = j + 1
            continue
        if c in "{[":
            top = stack[-1] if stack else None
            stack.append(["obj" if c == "{" else "arr", None if c == "{" else (top[1] if top else None)])
        elif c in "}]":
            if stack:
                stack.pop()
        elif c == "," and stack and stack[-1][0] == "obj":
            stack[-1][1] = None
        i += 1
    return out, False


def first_repeat(text: str, distinct: set[str], since: int) -> tuple[int, int] | None:
    """(start, end) of a string closed at or after index `since` that repeats an earlier string
    of the same role, for the roles in `distinct`; None if there is none."""
    if not distinct:
        return None
    seen: dict[str, set[str]] = {}
    for role, content, start, end in json_strings(text)[0]:
        if role not in distinct:
            continue
        key = content.strip().lower()
        if end >= since and key in seen.get(role, ()):
            return start, end
        seen.setdefault(role, set()).add(key)
    return None


def _allowed_ids(allowed) -> list[int]:
    if hasattr(allowed, "allowed_tokens"):
        return list(allowed.allowed_tokens)
    if hasattr(allowed, "to_list"):
        return list(allowed.to_list())
    return list(allowed)
