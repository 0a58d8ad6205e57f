"""The import contract of autointerp/, checked from the source (ast; nothing is imported).

The allowed arrows between packages are written once, in ALLOWED. A "package" is a top-level
subpackage of the checked root (store, patching, ...) or a top-level module (errors, config). Relative imports are resolved against the importing file. Rules, each reported as
(file, rule) so an allowlist can name them:

    arrow A->B        A imports B and B is not in ALLOWED[A] (a back-arrow or a sideways one)
    cycle A->B->..    the package import graph (as it is, allowlisted arrows included) has a cycle
    sql               SQL outside store/: a call of .execute/.executemany/.executescript, or a
                      string that reads as SQL (select ... from, insert into, ...)
    openai / tenacity imported outside llm/
    private M._x      a name starting with "_" imported from another module (of another package, or
                      of the same package: a private name is its module's own)
    cycle P: a->b->a  modules of one package import each other in a cycle (imports inside functions
                      count; a package's __init__ is left out: it re-exports its modules)
    hook-name         an f-string (or "blocks." + ...) building a hook name outside core/ and models/
    unit-id           an f-string formatting a unit id (f"L{l}/N{i}") outside core/
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# ----------------------------------------------------------------------------- the layering, written once
#
# Ground: every package may import these (core is the neutral core; errors and config are the
# neutral modules it stands on).
GROUND = frozenset({"core", "errors", "config"})
# Faces compose stages; no face imports another, except cli, the entry point, which starts them.
FACES = frozenset({"cli", "serve", "batch", "investigate"})
# Stages and infrastructure: what each may import besides GROUND and itself. Arrows point down
# the flow of DESIGN.md: models -> mine -> explain -> score; models -> tasks -> patching; llm is
# asked by explain, score, tasks, validate; store/ is given to stages as an object, so no stage
# imports it (only the pipeline and the faces do).
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "config": frozenset({"errors"}),
    "core": frozenset({"errors"}),
    "store": GROUND,
    "models": GROUND,
    "corpus": GROUND,
    "llm": GROUND | {"models"},                      # the embedded backend loads local models
    "mine": GROUND | {"models", "corpus"},
    "tasks": GROUND | {"models", "llm"},
    "patching": GROUND | {"models", "tasks"},
    "explain": GROUND | {"llm", "mine"},
    "score": GROUND | {"llm", "mine", "models"},     # probes and interventions run the model
    "validate": GROUND | {"llm", "mine", "models", "score"},
    "graph": GROUND | {"models"},                    # attribution graphs over transcoder latents; store-free
    "compare": GROUND | {"models", "corpus", "mine", "tasks", "patching"},   # model diffs: two models at once
    "pipeline": GROUND | {"store", "models", "llm", "corpus", "mine", "explain", "score", "validate", "compare"},
    "__main__": frozenset({"cli"}),
    "__init__": GROUND,
}
STAGES = frozenset(ALLOWED) - {"__main__", "__init__"}
for _face in FACES:  # a face may import every stage and infrastructure package, but no other face
    ALLOWED[_face] = frozenset(STAGES)
ALLOWED["cli"] = frozenset(STAGES | FACES)

# where the per-file rules do not apply
SQL_HOME = "store"
LLM_HOME = "llm"
HOOK_NAME_HOMES = frozenset({"core", "models"})
UNIT_ID_HOMES = frozenset({"core"})
LLM_ONLY_MODULES = ("openai", "tenacity")
# configuration is resolved once, at the face: Settings.load only here (and in config.py itself)
SETTINGS_HOMES = frozenset({"cli", "config"})
# the faces that must not mutate module-level state (a global, or another module's attribute)
NO_GLOBAL_STATE = frozenset({"cli"})
_MUTATORS = frozenset({"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault",
                       "add", "discard"})

_SQL_RE = re.compile(r"^\s*(?:select\b[\s\S]*\bfrom\b|insert\s+(?:or\s+\w+\s+)?into\b|update\s+\w+\s+set\b|"
                     r"delete\s+from\b|create\s+(?:table|index|view)\b|drop\s+table\b|pragma\s+\w+)", re.I)
_UNIT_TEMPLATE_RE = re.compile(r"L\{\}/(?:[NH]\{\}|\{\})")


@dataclass(frozen=True, order=True)
class Violation:
    file: str      # path relative to the root's parent, e.g. autointerp/mine/miner.py
    rule: str
    line: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.file, self.rule)


def package_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_parts(root: Path, path: Path) -> list[str]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(root: Path, path: Path, tree: ast.AST) -> Iterator[tuple[ast.stmt, list[str], list[str]]]:
    """(node, absolute module parts, imported names) for each import; relative imports resolved."""
    mod = _module_parts(root, path)
    base_pkg = mod if path.name == "__init__.py" else mod[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name.split("."), []
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base = base_pkg[: len(base_pkg) - (node.level - 1)] if node.level > 1 else base_pkg
                if node.module:
                    yield node, base + node.module.split("."), names
                else:  # from . import a, b: each name may be a module
                    for n in names:
                        yield node, base + [n], []
            elif node.module:
                yield node, node.module.split("."), names


def _target_package(root: Path, parts: list[str]) -> str | None:
    if len(parts) >= 2 and parts[0] == root.name:
        return parts[1]
    if parts == [root.name]:
        return "__init__"
    return None


def _template(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def check_file(root: Path, path: Path) -> tuple[list[Violation], set[tuple[str, str]]]:
    """(violations of the per-file rules and of ALLOWED, package edges this file adds)."""
    rel = str(path.relative_to(root.parent))
    pkg = package_of(root, path)
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[Violation] = []
    edges: set[tuple[str, str]] = set()
    module_edges: set[tuple[str, str]] = set()
    mod_parts = list(path.relative_to(root.parent).with_suffix("").parts)
    allowed = ALLOWED.get(pkg)  # None: an unknown package (check_tree reports it once)
    for node, parts, names in imports_of(root, path, tree):
        if parts[0] in LLM_ONLY_MODULES and pkg != LLM_HOME:
            out.append(Violation(rel, parts[0], node.lineno))
        dep = _target_package(root, parts)
        if dep is not None and dep == pkg and parts[2:] != mod_parts[2:]:   # another module of this package
            mod_name = ".".join(parts[1:])
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    out.append(Violation(rel, f"private {mod_name}.{n}", node.lineno))
            if len(parts) > 2 and len(mod_parts) > 2 and mod_parts[-1] != "__init__" and path.name != "__init__.py":
                module_edges.add((".".join(mod_parts[1:]), ".".join(parts[1:])))
        if dep is None or dep == pkg:
            continue
        edges.add((pkg, dep))
        if allowed is not None and dep not in allowed:
            out.append(Violation(rel, f"arrow {pkg}->{dep}", node.lineno))
        mod_name = ".".join(parts[1:])
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                out.append(Violation(rel, f"private {mod_name}.{n}", node.lineno))
        if any(p.startswith("_") and not p.startswith("__") for p in parts[2:]):
            out.append(Violation(rel, f"private {mod_name}", node.lineno))
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if pkg != SQL_HOME:
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany", "executescript")):
                out.append(Violation(rel, "sql", node.lineno))
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and _SQL_RE.match(node.value)):
                out.append(Violation(rel, "sql", node.lineno))
        if isinstance(node, ast.JoinedStr):
            t = _template(node)
            if pkg not in HOOK_NAME_HOMES and t.startswith("blocks.{}"):
                out.append(Violation(rel, "hook-name", node.lineno))
            if pkg not in UNIT_ID_HOMES and _UNIT_TEMPLATE_RE.search(t):
                out.append(Violation(rel, "unit-id", node.lineno))
        elif (pkg not in HOOK_NAME_HOMES and isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
              and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
              and node.left.value.startswith("blocks.")):
            out.append(Violation(rel, "hook-name", node.lineno))
        if (pkg not in SETTINGS_HOMES and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "Settings"):
            out.append(Violation(rel, "settings-load", node.lineno))
    if pkg in NO_GLOBAL_STATE:
        out += [Violation(rel, "global-state", line) for line in _global_mutations(tree)]
    MODULE_EDGES.setdefault(str(root), set()).update(module_edges)
    return out, edges


def _root_name(node: ast.AST) -> str | None:
    """'config' for config.FLAG_VALUES[k] or config.X.y; None for a bare name (a rebinding)."""
    if not isinstance(node, (ast.Attribute, ast.Subscript)):
        return None
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _global_mutations(tree: ast.Module) -> list[int]:
    """Lines where a function changes module-level state: a `global` statement, or an item or
    attribute of a module-level or imported name assigned, deleted or mutated in place
    (config.FLAG_VALUES[k] = v, STATE.debug = d, CACHE.setdefault(...))."""
    module_names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module_names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                module_names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    lines: list[int] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        local_imports = {(a.asname or a.name).split(".")[0] for n in ast.walk(fn)
                         if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        names = module_names | local_imports
        for node in ast.walk(fn):
            if isinstance(node, ast.Global):
                lines.append(node.lineno)
            targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
                       [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            if any(_root_name(t) in names for t in targets):
                lines.append(node.lineno)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS
                    and _root_name(node.func.value) in names):
                lines.append(node.lineno)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS
                  and isinstance(node.func.value, ast.Name) and node.func.value.id in module_names
                  and node.func.value.id not in local_imports):
                lines.append(node.lineno)
    return sorted(set(lines))


# module -> module edges inside one package, per checked root (filled by check_file)
MODULE_EDGES: dict[str, set[tuple[str, str]]] = {}


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Each elementary cycle's node list once (via strongly connected components: one cycle per SCC
    of size > 1, found by DFS inside it)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in sccs:  # one concrete cycle through the SCC's first node
        start, members = comp[0], set(comp)
        path, seen = [start], {start}

        def dfs(v: str) -> bool:
            for w in sorted(graph[v] & members):
                if w == start and len(path) > 1:
                    return True
                if w not in seen:
                    seen.add(w)
                    path.append(w)
                    if dfs(w):
                        return True
                    path.pop()
            return False

        dfs(start)
        out.append(path)
    return out


def check_tree(root: Path) -> tuple[list[Violation], set[tuple[str, str]]]:
    """All violations under root (an autointerp-like package dir) and the package edges."""
    violations: list[Violation] = []
    edges: set[tuple[str, str]] = set()
    unknown: set[str] = set()
    MODULE_EDGES[str(root)] = set()
    for path in sorted(root.rglob("*.py")):
        v, e = check_file(root, path)
        violations += v
        edges |= e
        if package_of(root, path) not in ALLOWED:
            unknown.add(package_of(root, path))
    for pkg in sorted(unknown):
        violations.append(Violation(f"{root.name}/{pkg}", "unknown package (add it to ALLOWED)"))
    for cyc in cycles(edges):
        violations.append(Violation(root.name, "cycle " + "->".join(cyc + cyc[:1])))
    for cyc in cycles(MODULE_EDGES[str(root)]):   # inside a package (edges never cross packages)
        pkg = cyc[0].split(".")[0]
        violations.append(Violation(f"{root.name}/{pkg}", "cycle " + "->".join(cyc + cyc[:1])))
    return sorted(violations), edges


def allowed_is_acyclic() -> list[list[str]]:
    return cycles((a, b) for a, bs in ALLOWED.items() for b in bs if a != b)
