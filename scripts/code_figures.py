"""Code-size figures for autointerp/: lines per package and the largest functions (issue 22's note).

    python scripts/code_figures.py [ROOT] [--top N]
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 10
    root = Path(args[0]) if args and not args[0].isdigit() else Path(__file__).resolve().parents[1] / "autointerp"
    lines: Counter[str] = Counter()
    funcs: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        text = path.read_text()
        lines[pkg] += text.count("\n")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    print(f"total {sum(lines.values())} lines in {len(lines)} packages")
    print(" ".join(f"{p}={n}" for p, n in sorted(lines.items(), key=lambda kv: -kv[1])))
    print(f"largest {top} functions:")
    for n, where in sorted(funcs, reverse=True)[:top]:
        print(f"  {n:4d} {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
