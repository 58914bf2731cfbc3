"""Building and running the C++ scorer for the tests: one build per target and session (conftest.py).

The builds go under pytest's tmp_path unless AGIQA_CPP_BUILD names a folder to keep them in
(then a rerun rebuilds only what changed). A missing tool or an unreachable registry skips with
the reason (.ci/run installs the tools).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

sys.path.insert(0, str(REPO / "edge_runtime" / "cpp"))
import build as cpp_build  # noqa: E402  (edge_runtime/cpp/build.py, a script)

QEMU_CPUS = ("cortex-a53", "cortex-a76", "neoverse-n1")
SYSROOT = "/usr/aarch64-linux-gnu"


def build_or_skip(target: str, root: Path) -> Path:
    """``agiqa-score-cpp`` for ``target`` ("host" or "aarch64"), built under ``root / target``."""
    try:
        return cpp_build.build(target, root / target)
    except cpp_build.ToolMissing as exc:
        pytest.skip(str(exc))
    except subprocess.CalledProcessError as exc:  # pip download: no registry reachable
        pytest.skip(f"cannot download the aarch64 executorch wheel ({exc})")


def run(binary: Path, *args: str, cpu: str | None = None) -> subprocess.CompletedProcess:
    """Run a built binary (under qemu-aarch64 on ``cpu`` when given); text output captured."""
    command = [str(binary), *args]
    if cpu is not None:
        command = ["qemu-aarch64", "-L", SYSROOT, "-cpu", cpu, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)
