"""Keep the toolchain's harmless import-time noise out of the user's output.

torch.export / torchao log deprecation warnings about Enum pytree registration when torchao is
imported (by ExecuTorch, and by transformers' quantization integrations). This only sets
logging and warning filters: it imports nothing heavy and is safe to call repeatedly.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_toolchain"]


def quiet_toolchain() -> None:
    """Silence the harmless import-time warnings of torch/torchao (idempotent)."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*KernelPreference.*")
    warnings.filterwarnings("ignore", module="torchao.*")
