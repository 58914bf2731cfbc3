"""Golden pairs: what an exported program must compute, stored beside it.

``model.golden.safetensors`` (written by ``agiqa-export``, see :mod:`export.golden`) holds a
few real images as the device holds them (decoded RGB8), the model input the numpy
preprocessing makes of each, and the program's outputs on that input, computed by the
ExecuTorch runtime at export time (ExecuTorch's Android ``ModuleE2ETest`` pattern). A runtime
on a new CPU (an aarch64 phone, a Jetson, another x86) reproduces them before it is trusted:
the C++ scorer does so at every load and refuses a program whose outputs drift beyond the
stored tolerances (docs/edge.md, "Golden pairs").

Tensors, per pair ``i``: ``pair{i}.rgb`` (H, W, 3) uint8, ``pair{i}.input`` (1, 3, h, w)
float32, and one float32 tensor per program output, named as in ``model.json`` (``pair{i}.score``
(1,), ``pair{i}.gate_weights`` (1, E)). String metadata: ``format``, ``format_version``,
``program_sha256``, ``pairs``, ``pair{i}.name``, and the tolerances ``score_tolerance``,
``gate_tolerance`` (max abs diff of any output value) and ``preprocess_tolerance`` (max abs diff
of the model input: identical pixels after the resize).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GOLDEN_FORMAT", "GoldenError", "GoldenPair", "GoldenSet", "golden_path", "read_golden"]

GOLDEN_FORMAT = "agiqa-edge.golden"
GOLDEN_VERSION = 1


class GoldenError(ValueError):
    """The golden file is missing, malformed, or made for another program."""


def golden_path(program: str | os.PathLike) -> Path:
    """``dir/model.pte`` -> ``dir/model.golden.safetensors``."""
    return Path(program).with_suffix(".golden.safetensors")


@dataclass(frozen=True)
class GoldenPair:
    name: str  # the source image's file name
    rgb: np.ndarray  # (H, W, 3) uint8, as decoded on the export machine
    input: np.ndarray  # (1, 3, h, w) float32, PreprocessSpec(rgb)
    outputs: dict[str, np.ndarray]  # program outputs by name, float32


@dataclass(frozen=True)
class GoldenSet:
    program_sha256: str
    score_tolerance: float
    gate_tolerance: float
    preprocess_tolerance: float
    pairs: tuple[GoldenPair, ...]


def read_golden(path: str | os.PathLike) -> GoldenSet:
    """Read a golden file; raises :class:`GoldenError` with the file and the fix."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"{path}: missing; re-export the program (agiqa-export writes it)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GoldenError(f"{path}: not a valid safetensors file ({exc}); re-export") from None
    if meta.get("format") != GOLDEN_FORMAT:
        raise GoldenError(f"{path}: not an agiqa-edge golden file; re-export the program")
    try:
        count = int(meta["pairs"])
        pairs = []
        for i in range(count):
            prefix = f"pair{i}."
            outputs = {k[len(prefix):]: v for k, v in tensors.items()
                       if k.startswith(prefix) and k not in (prefix + "rgb", prefix + "input")}
            pairs.append(GoldenPair(meta.get(prefix + "name", prefix), tensors[prefix + "rgb"],
                                    tensors[prefix + "input"], outputs))
        return GoldenSet(meta["program_sha256"], float(meta["score_tolerance"]),
                         float(meta["gate_tolerance"]), float(meta["preprocess_tolerance"]),
                         tuple(pairs))
    except (KeyError, ValueError) as exc:
        raise GoldenError(f"{path}: incomplete golden file ({exc}); re-export the program") from None
