"""The import rules between our packages, checked on the source (AST), plus a lean runtime import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests import REPO, modules_loaded_by

BASE = "_agiqa"  # file writing, exit codes, --version, quiet toolchain: under every package
PACKAGES = {BASE, "teacher", "student", "distill", "export", "edge_runtime"}
ALLOWED = {  # package -> our packages it may import
    BASE: set(),
    "edge_runtime": {BASE},
    "student": {BASE, "edge_runtime"},
    "teacher": {BASE, "edge_runtime"},
    "distill": {BASE, "teacher", "student", "edge_runtime"},
    "export": {BASE, "student", "edge_runtime"},
}


def _top_level_imports(path: Path) -> set[str]:
    """The top-level names of every absolute import in ``path`` (module level or local)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _imports(path: Path) -> set[str]:
    return _top_level_imports(path) & PACKAGES


def test_packages_import_only_lower_layers() -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO / package).rglob("*.py")):
            bad = _imports(path) - allowed - {package}
            if bad:
                violations.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_base_imports_only_the_standard_library() -> None:
    """Every package stands on the base, so it may import nothing beyond the standard library."""
    outside = [f"{path.relative_to(REPO)} imports {m}" for path in sorted((REPO / BASE).rglob("*.py"))
               for m in sorted(_top_level_imports(path)) if m not in sys.stdlib_module_names and m != BASE]
    assert not outside, "\n".join(outside)


def test_edge_runtime_import_is_lean() -> None:
    heavy = {"torch", "timm", "transformers", "torchao", "teacher", "student", "distill", "export"}
    assert modules_loaded_by("edge_runtime, edge_runtime.preprocess, edge_runtime.images", heavy) == []


def test_scoring_needs_only_the_core_dependencies() -> None:
    """`pip install agiqa-edge` (no extras) must be enough for edge_runtime: every third-party
    module it (or the base under it) imports is a core dependency, and the training stack is not
    one."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~;\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    distribution = {"PIL": "pillow"}  # import name -> distribution name, where they differ
    imported = {m for package in ("edge_runtime", BASE) for path in (REPO / package).rglob("*.py")
                for m in _top_level_imports(path)}
    third_party = {distribution.get(m, m).lower() for m in imported
                   if m not in sys.stdlib_module_names and m not in {"edge_runtime", BASE}}
    assert third_party <= core, f"edge_runtime imports {sorted(third_party - core)} beyond the core"
    assert not core & {"timm", "transformers", "torchvision", "matplotlib", "scipy"}, core
    assert {"timm", "torchvision", "torchao"} <= {
        re.split(r"[<>=!~;\[ ]", dep)[0].lower() for dep in project["optional-dependencies"]["train"]}
