"""The import rules between our packages, checked on the source (AST), plus a lean runtime import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"teacher", "student", "distill", "export", "edge_runtime"}
ALLOWED = {  # package -> our packages it may import
    "edge_runtime": set(),
    "student": {"edge_runtime"},
    "teacher": {"edge_runtime"},
    "distill": {"teacher", "student", "edge_runtime"},
    "export": {"student", "edge_runtime"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PACKAGES


def test_packages_import_only_lower_layers() -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _imports(path) - allowed - {package}
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_edge_runtime_import_is_lean() -> None:
    code = ("import sys, edge_runtime, edge_runtime.preprocess, edge_runtime.images\n"
            "heavy = {'torch', 'timm', 'transformers', 'torchao', 'teacher', 'student', 'distill', 'export'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_scoring_needs_only_the_core_dependencies() -> None:
    """`pip install agiqa-edge` (no extras) must be enough for edge_runtime: every third-party
    module it imports is a core dependency, and the training stack is not one."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~;\[ ]", dep)[0].lower() for dep in project["dependencies"]}
    distribution = {"PIL": "pillow"}  # import name -> distribution name, where they differ
    imported = set()
    for path in (ROOT / "edge_runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {distribution.get(m, m).lower() for m in imported
                   if m not in sys.stdlib_module_names and m != "edge_runtime"}
    assert third_party <= core, f"edge_runtime imports {sorted(third_party - core)} beyond the core"
    assert not core & {"timm", "transformers", "torchvision", "matplotlib", "scipy"}, core
    assert {"timm", "torchvision", "torchao"} <= {
        re.split(r"[<>=!~;\[ ]", dep)[0].lower() for dep in project["optional-dependencies"]["train"]}
