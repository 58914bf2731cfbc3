"""Golden pairs: what an exported program must compute, stored beside it.

``model.golden.safetensors`` (written by ``agiqa-export``, see :mod:`export.golden`) holds a
few real images as the device holds them (decoded RGB8), the model input the numpy
preprocessing makes of each, and the program's outputs on that input, computed by the
ExecuTorch runtime at export time (ExecuTorch's Android ``ModuleE2ETest`` pattern). A runtime
on a new CPU (an aarch64 phone, a Jetson, another x86) reproduces them before it is trusted:
both scorers (Python :class:`edge_runtime.Scorer` and C++ ``agiqa::Scorer::load``) do so at
every load, with the same checks (:func:`check_golden`), and refuse a program whose outputs
drift beyond the stored tolerances (docs/edge.md, "Golden pairs"). A program without the file
(exported before golden pairs existed) loads unchecked in both, unless the check is required.

Tensors, per pair ``i``: ``pair{i}.rgb`` (H, W, 3) uint8, ``pair{i}.input`` (1, 3, h, w)
float32, and one float32 tensor per program output, named as in ``model.json`` (``pair{i}.score``
(1,), ``pair{i}.gate_weights`` (1, E)). String metadata: ``format``, ``format_version``,
``program_sha256``, ``pairs``, ``pair{i}.name``, and the tolerances ``score_tolerance``,
``gate_tolerance`` (max abs diff of any output value) and ``preprocess_tolerance`` (max abs diff
of the model input: identical pixels after the resize).

Camera pairs (optional; ``camera_pairs`` in the metadata): camera frames made of the same images
(:mod:`edge_runtime.camera`, every layout and rotation, see ``export.golden.CAMERA_FRAMES``), so
a device proves its camera path too. Per pair ``j``: ``camera{j}.frame`` (N,) uint8 (the frame's
bytes), ``camera{j}.input`` (1, 3, h, w) float32 (the numpy camera rule), one tensor per program
output on that input, and ``camera{j}.layout``: JSON with the planes' ``[offset, row_stride,
pixel_stride]``, ``format``, ``width``, ``height``, ``matrix``, ``range``, ``rotation``,
``crop``, ``name`` and ``encoding``. A runtime preprocesses the frame itself, compares with the
stored input, runs the program on *its own* input and compares the outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .camera import CameraFrame, frame_from_layout
from .contract import ContractError

__all__ = ["GOLDEN_FORMAT", "GoldenCheck", "GoldenError", "GoldenPair", "GoldenPairResult",
           "GoldenCameraPair", "GoldenReport", "GoldenSet", "check_golden", "golden_path", "read_golden"]

GOLDEN_FORMAT = "agiqa-edge.golden"
GOLDEN_VERSION = 1


class GoldenError(ContractError):
    """The golden file is missing, malformed, made for another program, or its pairs are not
    reproduced (the program is refused). A :class:`ContractError`: the golden file is part of
    what an export ships, and callers handle both the same way (one line, exit 2)."""


class GoldenCheck(str, Enum):
    """What a scorer does with ``model.golden.safetensors`` at load (C++: ``Scorer::GoldenCheck``)."""

    REQUIRED = "required"  # refuse a program without the file
    IF_PRESENT = "if_present"  # check it when it is there (the default, as in C++)
    SKIP = "skip"  # never check (benchmarks; diagnosing a refused program)

    @classmethod
    def of(cls, value: bool | str | GoldenCheck) -> GoldenCheck:
        """``True`` -> IF_PRESENT, ``False`` -> SKIP, or a member / its value."""
        if isinstance(value, bool):
            return cls.IF_PRESENT if value else cls.SKIP
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"verify_golden must be True, False or one of "
                             f"{[m.value for m in cls]}, got {value!r}") from None


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
class GoldenCameraPair:
    name: str  # e.g. "camera0 (nv21, 90 deg) of photo.jpg"
    frame: CameraFrame
    rotation: int  # degrees clockwise
    crop: tuple[int, int, int, int] | None  # (left, top, width, height), buffer coordinates
    input: np.ndarray  # (1, 3, h, w) float32, edge_runtime.camera.preprocess_frame
    outputs: dict[str, np.ndarray]  # program outputs on that input, by name


@dataclass(frozen=True)
class GoldenSet:
    program_sha256: str
    score_tolerance: float
    gate_tolerance: float
    preprocess_tolerance: float
    pairs: tuple[GoldenPair, ...]
    camera_pairs: tuple[GoldenCameraPair, ...] = ()


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
                         tuple(pairs), _camera_pairs(meta, tensors))
    except (KeyError, ValueError, TypeError) as exc:
        raise GoldenError(f"{path}: incomplete golden file ({exc}); re-export the program") from None


def _camera_pairs(meta: dict[str, str], tensors: dict[str, np.ndarray]) -> tuple[GoldenCameraPair, ...]:
    pairs = []
    for j in range(int(meta.get("camera_pairs", 0))):
        prefix = f"camera{j}."
        layout = json.loads(meta[prefix + "layout"])
        outputs = {k[len(prefix):]: v for k, v in tensors.items()
                   if k.startswith(prefix) and k not in (prefix + "frame", prefix + "input")}
        crop = layout.get("crop")
        encoding = layout.get("encoding", layout["format"])
        name = f"camera{j} ({encoding}, {layout['rotation']} deg) of {layout.get('name', '?')}"
        pairs.append(GoldenCameraPair(name, frame_from_layout(tensors[prefix + "frame"], layout),
                                      int(layout["rotation"]), None if crop is None else tuple(crop),
                                      tensors[prefix + "input"], outputs))
    return tuple(pairs)


@dataclass(frozen=True)
class GoldenPairResult:
    """How far this runtime landed from one pair (``agiqa::GoldenResult``)."""

    name: str
    preprocess_max_abs_diff: float  # this runtime's preprocessing of rgb vs the stored input
    score_abs_diff: float  # program on the stored input vs the stored score
    gate_max_abs_diff: float  # same, max over the gate weights (0 without that output)
    score: float
    expected_score: float


@dataclass(frozen=True)
class GoldenReport:
    """The check of one golden file (``agiqa::GoldenReport``); ``failure`` is empty when passed."""

    path: str
    score_tolerance: float
    gate_tolerance: float
    preprocess_tolerance: float
    pairs: tuple[GoldenPairResult, ...] = field(default=())
    failure: str = ""
    camera_pairs: tuple[GoldenPairResult, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failure


def check_golden(path: str | os.PathLike, contract: Any,
                 preprocess: Callable[[np.ndarray], np.ndarray],
                 run: Callable[[np.ndarray], dict[str, np.ndarray]],
                 preprocess_frame: Callable[..., np.ndarray] | None = None) -> GoldenReport:
    """Reproduce every pair of the golden file ``path`` as ``agiqa::Scorer::check_golden`` does.

    ``contract`` is the program's :class:`~edge_runtime.contract.ModelContract`;
    ``preprocess`` maps ``(H, W, 3) uint8`` to ``(3, h, w) float32``; ``run`` maps a
    ``(1, 3, h, w) float32`` input to the outputs by name. Per pair: the score output against
    ``score_tolerance``, ``gate_weights`` (when the program has it) against ``gate_tolerance``,
    both on the *stored* input, and then this runtime's preprocessing of the stored RGB against
    the stored input within ``preprocess_tolerance``; the first pair outside reports the failure.
    With ``preprocess_frame(frame, rotation=, crop=) -> (3, h, w)``, the camera pairs too: this
    runtime's camera preprocessing against the stored input, then the program on *that* input
    against the stored outputs (end to end: the camera path as a device runs it).

    Raises :class:`GoldenError` when the file itself is unusable (missing, malformed, another
    program's, no pairs, a tensor missing or of the wrong shape); never for a failed pair.
    """
    path = Path(path)
    golden = read_golden(path)
    if golden.program_sha256 != contract.program_sha256:
        raise GoldenError(f"{path}: made for another program (sha256 differs from model.json); "
                          "re-export the program")
    if not golden.pairs:
        raise GoldenError(f"{path}: holds no golden pairs; re-export the program")
    results, failures = [], []
    for pair in golden.pairs:
        if pair.rgb.dtype != np.uint8 or pair.rgb.ndim != 3 or pair.rgb.shape[2] != 3:
            raise GoldenError(f"{path}: pair '{pair.name}' lacks an (H, W, 3) uint8 rgb; re-export the program")
        mine = _input(path, pair.name, preprocess(pair.rgb), pair.input)
        got = run(np.ascontiguousarray(pair.input, dtype=np.float32))
        results.append(_compare(path, contract, golden, pair.name, mine, pair, got, failures,
                                "this build's resize is wrong"))
    camera_results = []
    for pair in golden.camera_pairs if preprocess_frame is not None else ():
        mine = _input(path, pair.name, preprocess_frame(pair.frame, rotation=pair.rotation, crop=pair.crop),
                      pair.input)
        camera_results.append(_compare(path, contract, golden, pair.name, mine, pair, run(mine), failures,
                                       "this build's camera conversion is wrong"))
    return GoldenReport(str(path), golden.score_tolerance, golden.gate_tolerance,
                        golden.preprocess_tolerance, tuple(results), failures[0] if failures else "",
                        tuple(camera_results))


def _input(path: Path, name: str, mine: np.ndarray, stored: np.ndarray) -> np.ndarray:
    mine = np.ascontiguousarray(mine[None], dtype=np.float32)
    if mine.shape != stored.shape:
        raise GoldenError(f"{path}: '{name}' input has the wrong size; re-export")
    return mine


def _compare(path: Path, contract: Any, golden: GoldenSet, name: str, mine: np.ndarray,
             pair: GoldenPair | GoldenCameraPair, got: dict[str, np.ndarray], failures: list[str],
             wrong_preprocessing: str) -> GoldenPairResult:
    """One pair's result; its failure (if any) appended to ``failures``."""
    missing = [n for n in contract.output_names if n not in pair.outputs]
    if missing:
        raise GoldenError(f"{path}: pair '{name}' lacks {missing}; re-export the program")
    score_name = contract.score_output
    score = float(np.asarray(got[score_name]).reshape(-1)[0])
    expected = float(pair.outputs[score_name].reshape(-1)[0])
    gate = 0.0
    if "gate_weights" in pair.outputs and "gate_weights" in got:
        ours, theirs = (np.asarray(a, np.float64).reshape(-1)
                        for a in (got["gate_weights"], pair.outputs["gate_weights"]))
        n = min(ours.size, theirs.size)  # as the C++ does
        gate = float(np.abs(ours[:n] - theirs[:n]).max(initial=0.0))
    result = GoldenPairResult(name, float(np.abs(mine.astype(np.float64) - pair.input).max(initial=0.0)),
                              abs(score - expected), gate, score, expected)
    camera = isinstance(pair, GoldenCameraPair)
    kind = "golden camera pair" if camera else "golden pair"
    wrong_outputs = result.score_abs_diff > golden.score_tolerance or gate > golden.gate_tolerance
    wrong_input = result.preprocess_max_abs_diff > golden.preprocess_tolerance
    # An RGB pair runs the stored input, so its outputs judge the program alone; a camera pair
    # runs this runtime's own input, so a wrong input explains wrong outputs and is named first.
    if wrong_outputs and not (camera and wrong_input):
        failures.append(f"{kind} '{name}' scores {score:.6g}, expected {expected:.6g} "
                        f"(|diff| {result.score_abs_diff:.3g}, gate |diff| {gate:.3g}; tolerances "
                        f"{golden.score_tolerance:.3g}, {golden.gate_tolerance:.3g}): this "
                        "CPU/runtime computes wrong outputs")
    elif wrong_input:
        failures.append(f"{kind} '{name}' preprocesses differently from numpy (max |diff| "
                        f"{result.preprocess_max_abs_diff:.3g} > {golden.preprocess_tolerance:.3g}); "
                        f"{wrong_preprocessing}")
    return result
