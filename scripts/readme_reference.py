"""The README's reference section, generated from the code (like cog): it cannot drift.

Three parts of README.md sit between marker comments and are written by this script, never by hand:

    <!-- reference: commands -->  ...  <!-- /reference -->   `--help` of every command (the click group,
                                                              walked: subcommands such as `sae train` too)
    <!-- reference: store -->     ...  <!-- /reference -->   the tables of autointerp/store/schema.sql, with
                                                              its comments as their meaning
    <!-- reference: config -->    ...  <!-- /reference -->   the settings model (autointerp/config.py):
                                                              key, environment variable, flag, default

    .venv/bin/python scripts/readme_reference.py --update   # rewrite those parts of README.md
    .venv/bin/python scripts/readme_reference.py --check    # exit 1 with a diff when README.md differs

tests/test_readme.py runs --check. It imports the CLI (no model is loaded): about a second.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCHEMA = ROOT / "autointerp" / "store" / "schema.sql"
WIDTH = 100                     # the help's terminal width: fixed, so the text does not depend on the terminal
_SECTION = re.compile(r"(<!-- reference: (?P<name>[a-z]+) -->\n)(?P<body>.*?)(<!-- /reference -->)", re.S)


# ---- commands -----------------------------------------------------------------------------------
def _cli():
    from autointerp.cli import _load_commands, cli

    _load_commands()
    return cli


def command_helps() -> list[tuple[str, str, str]]:
    """(full name, first help line, --help text) of every command, groups and their subcommands
    included, in `autointerp --help` order (depth first)."""
    import click

    root = _cli()
    out = []

    def walk(cmd, ctx, path):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sctx = click.Context(sub, info_name=name, parent=ctx)
            full = " ".join(path + [name])
            out.append((full, sub.get_short_help_str(limit=90), sub.get_help(sctx)))
            if isinstance(sub, click.Group):
                walk(sub, sctx, path + [name])

    ctx = click.Context(root, info_name="autointerp", terminal_width=WIDTH, max_content_width=WIDTH)
    out.append(("autointerp", "", root.get_help(ctx)))
    walk(root, ctx, ["autointerp"])
    return out


def commands_md() -> str:
    parts = []
    for full, short, text in command_helps():
        summary = f"<code>{full}</code>" + (f": {_html(short)}" if short else "")
        parts.append(f"<details><summary>{summary}</summary>\n\n```text\n$ {full} --help\n{text.rstrip()}\n```\n\n</details>\n")
    return "\n".join(parts)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- store --------------------------------------------------------------------------------------
_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", re.S)
_CONSTRAINT = ("PRIMARY KEY", "UNIQUE", "FOREIGN KEY", "CHECK")


def schema_tables(sql: str | None = None) -> list[dict]:
    """The tables of schema.sql in file order: name, the comment block right above it (a comment
    names the group of tables up to the next comment), and its columns with their types and
    end-of-line comments (a comment on the lines below a column continues it)."""
    sql = SCHEMA.read_text() if sql is None else sql
    tables, group = [], ""
    pos = 0
    for m in _CREATE.finditer(sql):
        before = sql[pos:m.start()].split("\n")[:-1]      # the lines above CREATE (a blank line ends a comment)
        pos = m.end()
        comment = []
        for ln in reversed(before):
            if ln.startswith("--"):
                comment.insert(0, ln[2:].strip())
            else:
                break
        if comment:
            group = " ".join(comment)
        tables.append({"name": m.group(1), "meaning": group, "columns": _columns(m.group(2))})
    return tables


def _columns(body: str) -> list[dict]:
    cols: list[dict] = []
    last: list[dict] = []              # the column(s) of the previous line, which a comment-only line continues
    for raw in body.split("\n"):
        code, _, note = raw.partition("--")
        code, note = code.strip().rstrip(","), note.strip()
        if not code:
            if note and last:
                last[-1]["note"] = (last[-1]["note"] + " " + note).strip()
            continue
        if code.upper().startswith(_CONSTRAINT):
            last = []
            continue
        last = []
        for piece in _split_top(code):
            words = piece.split()
            if len(words) < 2:
                continue
            col = {"name": words[0], "type": words[1], "note": ""}
            cols.append(col)
            last.append(col)
        if last:
            last[-1]["note"] = note          # a note after several columns on one line is about the last
    return cols


def _split_top(code: str) -> list[str]:
    """Comma-separated column definitions of one line (commas inside parentheses kept)."""
    out, depth, cur = [], 0, ""
    for ch in code:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + ([cur.strip()] if cur.strip() else [])


def store_md() -> str:
    tables = schema_tables()
    lines = ["| table | what it holds (schema.sql's comment) |", "|---|---|"]
    groups: list[tuple[str, list[str]]] = []
    for t in tables:
        if groups and groups[-1][0] == t["meaning"]:
            groups[-1][1].append(t["name"])
        else:
            groups.append((t["meaning"], [t["name"]]))
    for meaning, names in groups:
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {_cell(meaning) or '-'} |")
    lines += ["", "<details><summary>every column</summary>", ""]
    for t in tables:
        cols = ", ".join(f"`{c['name']}` {c['type'].lower()}" + (f" ({_cell(c['note'])})" if c["note"] else "")
                         for c in t["columns"])
        lines.append(f"- **`{t['name']}`**: {cols}")
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


# ---- configuration ------------------------------------------------------------------------------
def _flags() -> set[str]:
    """Every --flag some command takes."""
    import click

    n: set[str] = set()

    def walk(cmd):
        for p in cmd.params:
            if isinstance(p, click.Option):
                n.update(o for o in p.opts if o.startswith("--"))
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                walk(sub)

    walk(_cli())
    return n


def _default(f) -> str:
    from pydantic_core import PydanticUndefined

    if f.default_factory is not None:
        doc = (f.default_factory.__doc__ or "").strip().split("\n")[0].split(":")[0]
        return (doc + " " if doc else "") + f"(`{f.default_factory.__name__}()`)"
    if f.default is PydanticUndefined:
        return "required"
    if f.default is None:
        return "none"
    return f"`{f.default}`"


def config_md() -> str:
    from autointerp.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    flags = _flags()
    lines = ["| key (`autointerp.toml`) | environment | flag | default | meaning |", "|---|---|---|---|---|"]
    for name, f in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        flag_cell = f"`{flag}`" if flag in flags else ""
        lines.append(f"| `{name}` | `{prefix}{name.upper()}` | {flag_cell} | {_cell(_default(f))} | "
                     f"{_cell(f.description or '')} |")
    return "\n".join(lines) + "\n"


GENERATORS = {"commands": commands_md, "store": store_md, "config": config_md}


# ---- README -------------------------------------------------------------------------------------
def regenerate(text: str) -> tuple[str, list[str]]:
    """README text with every reference section rewritten; and the names of the sections found."""
    found = []

    def sub(m):
        name = m.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"README.md: unknown reference section {name!r} (known: {', '.join(GENERATORS)})")
        found.append(name)
        return m.group(1) + GENERATORS[name]() + m.group(4)

    return _SECTION.sub(sub, text), found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--update", action="store_true", help="rewrite the reference sections of the README")
    g.add_argument("--check", action="store_true", help="exit 1 with a diff when the README differs from the code")
    ap.add_argument("--readme", default=str(README))
    a = ap.parse_args(argv)
    path = Path(a.readme)
    old = path.read_text()
    new, found = regenerate(old)
    missing = sorted(set(GENERATORS) - set(found))
    if missing:
        print(f"{path}: no reference section {', '.join(missing)} (add <!-- reference: NAME --> ... <!-- /reference -->)",
              file=sys.stderr)
        return 1
    if a.update:
        if new != old:
            path.write_text(new)
        print(f"{'updated' if new != old else 'unchanged'}: {path} ({', '.join(found)})", file=sys.stderr)
        return 0
    if new == old:
        return 0
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "README.md", "generated from the code", lineterm="", n=1)
    print("README reference differs from the code; run scripts/readme_reference.py --update\n" + "\n".join(diff),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
