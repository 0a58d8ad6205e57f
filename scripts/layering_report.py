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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from layering_check import GROUND, check_tree, imports_of, package_of  # noqa: E402  (the one import parser, shared with the test)


def imported_packages(root: Path, path: Path, tree: ast.AST) -> list[str]:
    """Top-level autointerp packages imported by one file (one entry per import statement target)."""
    return [p[1] for _, p, _ in imports_of(root, path, tree) if len(p) >= 2 and p[0] == root.name]


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
    upper = {k: n for k, n in edges.items() if k[1] not in GROUND}
    print(f"  of which between stages/faces (target not in the ground {sorted(GROUND)}): "
          f"{len(upper)} edges, {sum(upper.values())} statements")
    for (a, b), n in sorted(edges.items()):
        print(f"  {a} -> {b}  ({n})")
    violations, _ = check_tree(root)
    keys = sorted({v.key for v in violations})
    print("\n== layering contract (tests/layering_check.py) ==")
    print(f"violations: {len(violations)} sites, {len(keys)} (file, rule) pairs")
    for f, r in keys:
        print(f"  {f}  {r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
