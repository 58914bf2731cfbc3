"""Worker processes that never outlive the job that started them, and keep the memory they free.

``kill -9`` of a job reaches only its main process. A DataLoader worker blocked on a full pipe
to it then waits forever, holding the job's output open (a shell pipeline or a supervisor that
waits for end of file hangs too). On Linux the kernel can kill the worker when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere the DataLoader's own watchdog is all there is.

A worker that decodes and resizes photos allocates and frees a few megabytes per image. glibc
hands blocks that large back to the kernel at once (``mmap``, or trimming the heap), so every
image pays page faults for fresh zeroed memory: measured here, a third of the page faults and
about 2 ms of a 1024 x 1024 JPEG's 17.6 ms of labelling work. :func:`keep_freed_memory` keeps
such blocks for reuse, in the worker processes only.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent", "keep_freed_memory", "labelling_worker"]

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _arm(parent: int, _worker_id: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl in this libc: keep the DataLoader's watchdog
            return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def die_with_parent() -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` that makes each worker die with the process creating it now."""
    return functools.partial(_arm, os.getpid())


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """glibc: serve blocks below ``mmap_threshold`` bytes from the heap and give the heap back to the
    kernel only above ``trim_threshold`` free bytes, for this process; False where that is not
    glibc (nothing changes). 32 MiB is the largest threshold glibc accepts on 64-bit."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _labelling(parent: int, worker_id: int) -> None:
    _arm(parent, worker_id)
    keep_freed_memory()


def labelling_worker() -> Callable[[int], None]:
    """:func:`die_with_parent`, and :func:`keep_freed_memory` in each worker (image decoding)."""
    return functools.partial(_labelling, os.getpid())
