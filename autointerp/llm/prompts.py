"""Prompt templates: files under prompts/ (or a user's --prompts DIR), loaded by name.

Format (see prompts/README.md): Python `string.Template` placeholders (`$var` / `${var}`,
`$$` for a literal dollar). A file with `### system` / `### user` / `### assistant` header
lines is a chat prompt and renders to a list of messages; any other file is a completion
prompt and renders to one string. The content hash of the file is recorded with every call.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

_SECTION = re.compile(r"^### (system|user|assistant)[ \t]*$", re.MULTILINE)


_USER_DIR: Path | None = None   # the `prompts` setting, as the face resolved it (use_prompts_dir)


def use_prompts_dir(path: str | Path | None) -> None:
    """Where load_prompt looks first from now on in this process: the `prompts` setting
    (autointerp.toml, $AUTOINTERP_PROMPTS) resolved once by the face (cli/common.settings); None
    goes back to the shipped prompts. The library itself reads neither the environment nor a file."""
    global _USER_DIR
    _USER_DIR = None if path is None else Path(path)


def default_prompts_dir() -> Path:
    from ..config import packaged_prompts

    return _USER_DIR if _USER_DIR is not None else packaged_prompts()


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    hash: str = ""
    path: Path | None = None
    sections: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def from_text(cls, name: str, text: str, path: Path | None = None) -> "Prompt":
        h = hashlib.sha256(text.encode()).hexdigest()[:16]
        sections: list[tuple[str, str]] = []
        matches = list(_SECTION.finditer(text))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = text[m.end():end]
            body = body[1:] if body.startswith("\n") else body
            sections.append((m.group(1), body.rstrip("\n")))
        return cls(name=name, text=text, hash=h, path=path, sections=tuple(sections))

    @property
    def is_chat(self) -> bool:
        return bool(self.sections)

    @property
    def variables(self) -> list[str]:
        out = []
        for m in string.Template.pattern.finditer(self.text):
            v = m.group("named") or m.group("braced")
            if v and v not in out:
                out.append(v)
        return out

    def _sub(self, text: str, vars: dict) -> str:
        try:
            return string.Template(text).substitute(vars)
        except KeyError as e:
            raise UsageError(f"prompt {self.name!r} needs variable ${e.args[0]} (it uses: {', '.join(self.variables)})") from None
        except ValueError as e:
            raise UsageError(f"prompt {self.name!r} is not a valid template ({e}); write a literal $ as $$") from None

    def render(self, **vars) -> str | list[dict]:
        """A chat prompt → list of {role, content} messages; a completion prompt → str."""
        if self.is_chat:
            return [{"role": role, "content": self._sub(body, vars)} for role, body in self.sections]
        return self._sub(self.text, vars)

    def render_text(self, **vars) -> str:
        if self.is_chat:
            raise UsageError(f"prompt {self.name!r} is a chat prompt; use render() for messages")
        return self._sub(self.text, vars)

    def render_messages(self, **vars) -> list[dict]:
        if not self.is_chat:
            return [{"role": "user", "content": self._sub(self.text, vars)}]
        return self.render(**vars)  # type: ignore[return-value]

    @property
    def prefix(self) -> str:
        """The static head of a completion prompt: the text before the first placeholder, cut
        after its last newline (so it ends on a token boundary). Identical for every unit, so
        the embedded backend caches its KV once per process."""
        m = string.Template.pattern.search(self.text)
        head = self.text if m is None else self.text[: m.start()]
        head = head.replace("$$", "$")
        cut = head.rfind("\n")
        return head[: cut + 1] if cut >= 0 else ""

    def split_prefix(self, **vars) -> tuple[str, str]:
        """Render and split into (static prefix, per-unit rest): prefix + rest == render_text(**vars)."""
        full = self.render_text(**vars)
        p = self.prefix
        if not full.startswith(p):  # cannot happen for a well-formed template; be safe
            return "", full
        return p, full[len(p):]


    def parts(self, until: str, **vars) -> tuple[str, str]:
        """(static prefix, the rendered text between it and the placeholder `$until`): for prompt
        logprobs, prefix is the shared few-shot preamble and the second part goes in front of the
        first segment. Variables after `until` need not be given."""
        sentinel = "\x00AUTOINTERP_SPLIT\x00"
        allvars = {v: "" for v in self.variables}
        allvars.update(vars)
        allvars[until] = sentinel
        full = self.render_text(**allvars)
        if sentinel not in full:
            raise UsageError(f"prompt {self.name!r} has no placeholder ${until}")
        head = full.split(sentinel, 1)[0]
        p = self.prefix
        return (p, head[len(p):]) if head.startswith(p) else ("", head)


def load_prompt(name: str, prompts_dir: str | Path | None = None) -> Prompt:
    """Load prompts/<name>.txt (or <name> as given) from prompts_dir, else the `prompts` setting
    the face resolved (use_prompts_dir), falling back to the packaged prompts/ for names the user dir lacks."""
    from ..config import packaged_prompts

    dirs = [Path(prompts_dir)] if prompts_dir is not None else [default_prompts_dir()]
    if packaged_prompts() not in dirs:
        dirs.append(packaged_prompts())
    candidates = [name] if name.endswith((".txt", ".md")) else [f"{name}.txt", name]
    for d in dirs:
        for c in candidates:
            p = d / c
            if p.is_file():
                return Prompt.from_text(Path(c).stem if c.endswith(".txt") else c, p.read_text(encoding="utf-8"), p)
    raise UsageError(f"no prompt named {name!r} in {', '.join(str(d) for d in dirs)} (see prompts/README.md)")
