"""Worker processes that never outlive the job that started them.

``kill -9`` of a job reaches only its main process. A DataLoader worker blocked on a full pipe
to it then waits forever, holding the job's output open (a shell pipeline or a supervisor that
waits for end of file hangs too). On Linux the kernel can kill the worker when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere the DataLoader's own watchdog is all there is.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


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
