"""Fixtures of the runtime tests: the micro program (tests/edge_runtime/micro.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge_runtime.micro import write_program


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro program and its contract, lowered once per test module (tests may copy it, never edit it)."""
    return write_program(tmp_path_factory.mktemp("micro"))
