"""The shape of the code: its longest functions and largest files (issue 20's before/after).

    python bench/code_shape.py                       # this checkout
    python bench/code_shape.py --root OTHER --top 8  # another checkout, e.g. a git worktree of an old commit

Counts lines of the product's packages (tests, benches and fixtures left out): a function's
lines run from its ``def`` to its last statement, docstring included; nested functions count
inside their parent and on their own.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGES = ("_agiqa", "teacher", "student", "distill", "export", "edge_runtime")


def _walk(node: ast.AST, where: str, prefix: str, found: list[tuple[int, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            found.append((child.end_lineno - child.lineno + 1, f"{where}::{name}"))
            _walk(child, where, f"{name}.", found)
        elif isinstance(child, ast.ClassDef):
            _walk(child, where, f"{prefix}{child.name}.", found)


def functions(root: Path) -> list[tuple[int, str]]:
    """(lines, ``path::qualified.name``) of every function of the packages under ``root``."""
    found: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            _walk(ast.parse(path.read_text(), filename=str(path)), str(path.relative_to(root)), "", found)
    return sorted(found, reverse=True)


def files(root: Path) -> list[tuple[int, str]]:
    """(lines, path) of every Python file of the packages under ``root``."""
    return sorted(((len(p.read_text().splitlines()), str(p.relative_to(root)))
                   for package in PACKAGES for p in (root / package).rglob("*.py")), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(f"longest functions ({args.root}):")
    for n, name in functions(args.root)[:args.top]:
        print(f"  {n:4d}  {name}")
    print("largest files:")
    for n, name in files(args.root)[:args.top]:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
