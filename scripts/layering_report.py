"""Layering figures for autointerp/: lines per package, largest functions, cross-package imports.

Run before and after a refactor and diff the output::

    .venv/bin/python scripts/layering_report.py [ROOT]

A "package" is a top-level subpackage of autointerp/ (``store``, ``patching`` …); top-level
modules (``autointerp/units.py``) count as their own package named after the module. An import
edge is one (importing package, imported package) pair with the two different; the count of
import statements behind the edges is given too.
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path


def package_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def module_parts(root: Path, path: Path) -> list[str]:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


def imported_packages(root: Path, path: Path, tree: ast.AST) -> list[str]:
    """Top-level autointerp packages imported by one file (one entry per import statement target)."""
    top = root.name
    mod = module_parts(root, path)
    is_pkg = path.name == "__init__.py"
    out: list[str] = []
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod if is_pkg else mod[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                tail = node.module.split(".") if node.module else []
                if tail:
                    targets = [base + tail]
                else:  # from . import x, y
                    targets = [base + [a.name] for a in node.names]
            elif node.module:
                targets = [node.module.split(".")]
        for t in targets:
            if len(t) >= 2 and t[0] == top:
                out.append(t[1])
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "autointerp"
    lines: Counter[str] = Counter()
    funcs: list[tuple[int, str]] = []
    edges: Counter[tuple[str, str]] = Counter()
    for path in sorted(root.rglob("*.py")):
        src = path.read_text()
        pkg = package_of(root, path)
        lines[pkg] += src.count("\n")
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                funcs.append((n, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
        for dep in imported_packages(root, path, tree):
            if dep != pkg:
                edges[(pkg, dep)] += 1
    print("== lines per package ==")
    for pkg, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"{n:7d}  {pkg}")
    print(f"{sum(lines.values()):7d}  TOTAL")
    print("\n== 10 largest functions ==")
    for n, where in sorted(funcs, reverse=True)[:10]:
        print(f"{n:5d}  {where}")
    print("\n== cross-package imports ==")
    print(f"edges (distinct package pairs): {len(edges)}")
    print(f"import statements across packages: {sum(edges.values())}")
    for (a, b), n in sorted(edges.items()):
        print(f"  {a} -> {b}  ({n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
