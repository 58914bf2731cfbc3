"""Write the golden pairs of an exported program (format: :mod:`edge_runtime.golden`).

Called once by :func:`export.export_executorch` after the program passed verification; also
usable alone on any program with its contract::

    from export.golden import write_golden
    write_golden("model.pte", sorted(Path("photos").glob("*.jpg")))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from _agiqa.atomic import atomic_write_bytes
from edge_runtime.golden import GOLDEN_FORMAT, GOLDEN_VERSION, golden_path
from edge_runtime.images import ImageLoadError
from edge_runtime.preprocess import resize_rgb
from edge_runtime.scorer import Scorer

__all__ = ["GOLDEN_PAIRS", "TOLERANCES", "PREPROCESS_TOLERANCE", "write_golden"]

GOLDEN_PAIRS = 3
# Candidates scored to pick the pairs from: the lowest, middle and highest score among them,
# so a runtime that returns one value for every image cannot pass all pairs.
_CANDIDATES = 16
# How far another CPU may land from the export machine (max abs diff of the score and of any
# gate weight). Measured (docs/edge.md): the int8 score is bitwise equal on x86-64 and on qemu
# cortex-a53/a76/neoverse-n1 (gates within 3e-8), fp32 within 3e-8. int8: 1e-4, three orders
# above that spread, yet below what a wrong int8 kernel moves the output by (2.4e-4 on the score
# under qemu 7.2's SME). fp32: 1e-5, so pairs whose scores differ by more tell a constant output
# apart.
TOLERANCES = {"fp32": {"score": 1e-5, "gate": 1e-5}, "int8": {"score": 1e-4, "gate": 1e-4}}
# The model input must come from identical pixels: one uint8 step is 0.017 after normalising.
PREPROCESS_TOLERANCE = 1e-5
# Stored images are at most this many times the model input per side (a 12 MP photo would
# make the file larger than the program): still a real downscale for the resize to prove.
_MAX_SCALE = 2


def _stored_rgb(rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    height, width = rgb.shape[:2]
    limit_h, limit_w = (_MAX_SCALE * s for s in input_size)
    if height <= limit_h and width <= limit_w:
        return rgb
    factor = min(limit_h / height, limit_w / width)
    return resize_rgb(rgb, (max(1, round(height * factor)), max(1, round(width * factor))))


def write_golden(program: str | os.PathLike, images: Sequence[str | os.PathLike],
                 count: int = GOLDEN_PAIRS) -> Path:
    """Store ``count`` golden pairs of ``program``: among the first readable ``images``
    (at most 16), those with the lowest, middle and highest score.

    Returns the path written (``model.golden.safetensors`` beside ``program``).
    """
    from safetensors.numpy import save

    scorer = Scorer.from_file(program, verify_golden=False)  # it writes the golden file: an older one may be there
    contract = scorer.contract
    spec = contract.preprocess
    tensors: dict[str, np.ndarray] = {}
    tolerance = TOLERANCES.get(contract.quantize, TOLERANCES["int8"])
    meta = {"format": GOLDEN_FORMAT, "format_version": str(GOLDEN_VERSION),
            "program_sha256": contract.program_sha256, "quantize": contract.quantize,
            "score_tolerance": repr(tolerance["score"]), "gate_tolerance": repr(tolerance["gate"]),
            "preprocess_tolerance": repr(PREPROCESS_TOLERANCE)}
    candidates = []  # (score, name, rgb, input, outputs)
    for path in images:
        if len(candidates) == max(count, _CANDIDATES):
            break
        try:
            rgb = _stored_rgb(spec.decode(path), spec.input_size)
        except ImageLoadError:
            continue
        x = spec(rgb)[None]
        outputs = scorer.run(x)
        score = float(outputs[contract.score_output].reshape(-1)[0])
        candidates.append((score, Path(path).name, rgb, x, outputs))
    if not candidates:
        raise ValueError(f"no readable image among {len(images)} to make golden pairs from")
    candidates.sort(key=lambda c: c[0])
    last = len(candidates) - 1
    picks = sorted({round(i * last / max(count - 1, 1)) for i in range(count)})
    for i, pick in enumerate(picks):
        _, name, rgb, x, outputs = candidates[pick]
        prefix = f"pair{i}."
        tensors[prefix + "rgb"] = np.ascontiguousarray(rgb)
        tensors[prefix + "input"] = x
        for output, value in outputs.items():
            tensors[prefix + output] = np.ascontiguousarray(value, dtype=np.float32)
        meta[prefix + "name"] = name
    meta["pairs"] = str(len(picks))
    return atomic_write_bytes(golden_path(program), save(tensors, metadata=meta))
