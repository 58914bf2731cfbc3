"""Fixtures of the C++ scorer's tests: each target is built once per session and shared."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.edge_runtime.cpp.builds import build_or_skip


@pytest.fixture(scope="session")
def cpp_build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("AGIQA_CPP_BUILD")
    return Path(kept) if kept else tmp_path_factory.mktemp("cpp-build")


@pytest.fixture(scope="session")
def host_binary(cpp_build_root: Path) -> Path:
    """``agiqa-score-cpp`` built natively (``agiqa-bench-camera`` lies beside it)."""
    return build_or_skip("host", cpp_build_root)


@pytest.fixture(scope="session")
def aarch64_binary(cpp_build_root: Path) -> Path:
    """``agiqa-score-cpp`` cross-built for aarch64, run under qemu-user."""
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not found (apt-get install qemu-user)")
    return build_or_skip("aarch64", cpp_build_root)


@pytest.fixture(scope="session")
def programs(tiny_exports) -> dict[str, Path]:
    """The tiny student's fp32, int8 (static) and int8-dynamic programs (tests/conftest.py), each
    with its golden file."""
    return {mode: Path(report.program) for mode, report in tiny_exports.items()}
