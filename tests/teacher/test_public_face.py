"""teacher/__init__.py: every public name resolves to its home module, lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests import REPO


def test_every_public_name_resolves_to_its_home() -> None:
    import teacher

    for name in teacher.__all__:
        home = importlib.import_module(f"teacher.{teacher._HOMES[name]}")
        assert getattr(teacher, name) is getattr(home, name), name
        assert name in dir(teacher)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        teacher.Nope  # noqa: B018


def test_import_teacher_is_cheap() -> None:
    code = "import sys, teacher; print(sorted({'torch', 'timm', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_label_cache_schema_imports_no_model_code() -> None:
    """Reading labels needs the schema and torch, never MANIQA, timm or transformers."""
    code = ("import sys, teacher.cache_schema, teacher.cache_read\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'transformers')\n"
            "             or m in ('teacher.maniqa', 'teacher.model', 'teacher.semantic', 'teacher.labeler')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
