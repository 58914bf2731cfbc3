"""Labelling workers: they die with their parent and keep the memory they free for reuse."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A worker's allocation pattern: a few blocks of megabytes live per image, freed together.
_CHURN = """
import resource, sys
sys.path.insert(0, {repo!r})
from _agiqa.workers import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
import numpy as np
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    blocks = [np.ones(size << 20, np.uint8) for size in (1, 3, 2, 5)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(keep: bool) -> int:
    done = subprocess.run([sys.executable, "-c", _CHURN.format(repo=str(REPO), keep=keep)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_page_faults_of_a_worker_loop() -> None:
    """100 rounds of 11 MB in 4 blocks (2,816 pages a round): glibc's defaults map or trim most of
    them back to the kernel each round, so the next round faults them in again; a worker that keeps
    freed blocks reuses the first round's pages."""
    default = _page_faults(keep=False)
    if default < 20_000:
        pytest.skip(f"this allocator reuses freed blocks by itself ({default} page faults)")
    kept = _page_faults(keep=True)
    assert kept < default / 5, (kept, default)


def test_labelling_worker_init_is_picklable_for_spawned_workers() -> None:
    from _agiqa.workers import labelling_worker

    init = pickle.loads(pickle.dumps(labelling_worker()))
    assert callable(init)
