"""teacher/__init__.py: every public name resolves to its home module, lazily."""

from __future__ import annotations

import importlib

import pytest

from tests import modules_loaded_by


def test_every_public_name_resolves_to_its_home() -> None:
    import teacher

    for name in teacher.__all__:
        home = importlib.import_module(f"teacher.{teacher._HOMES[name]}")
        assert getattr(teacher, name) is getattr(home, name), name
        assert name in dir(teacher)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        teacher.Nope  # noqa: B018


def test_import_teacher_is_cheap() -> None:
    assert modules_loaded_by("teacher", {"torch", "timm", "transformers"}) == []


def test_label_cache_schema_imports_no_model_code() -> None:
    """Reading labels needs the schema and torch, never MANIQA, timm or transformers."""
    model_code = {"timm", "transformers", "teacher.maniqa", "teacher.model", "teacher.semantic", "teacher.labeler"}
    assert modules_loaded_by("teacher.cache_schema, teacher.cache_read", model_code) == []
