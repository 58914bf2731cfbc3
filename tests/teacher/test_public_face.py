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
