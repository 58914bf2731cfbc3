"""What an export reports, and the thresholds its program must pass.

:class:`ExportReport` is ``model.report.json``; :class:`Verification` is one comparison of the
program with the eager student; :func:`resolve_thresholds` and :func:`check_fidelity` are the
pass/fail rule. No torch, no toolchain: anything may read a report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from _agiqa.errors import CheckFailedError

__all__ = ["DEFAULT_MAX_ABS_DIFF", "DEFAULT_MIN_SRCC", "ExportError", "ExportReport", "FidelityError",
           "Verification", "check_fidelity", "resolve_thresholds"]

DEFAULT_MAX_ABS_DIFF = 1e-4  # fp32: the program must reproduce eager scores
DEFAULT_MIN_SRCC = 0.99  # int8: the program must keep the eager ranking


class ExportError(RuntimeError):
    """The export could not be done (bad arguments, source, images)."""


class FidelityError(ExportError, CheckFailedError):
    """The program was built but scores too far from the eager student (see ``report``); the
    command line exits 1 for it, not 2."""

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Verification:
    """The exported program against the eager fp32 student on held-out images."""

    num_images: int
    max_abs_diff: float  # of the score
    mean_abs_diff: float
    gate_max_abs_diff: float  # of the gate weights
    srcc: float | None  # Spearman, None when undefined (constant scores, < 3 images)
    plcc: float | None  # Pearson
    latency_ms_median: float  # program only, batch 1, per image
    latency_ms_p90: float
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images
    image_set: str = ""  # which images: a run's held-out split, or the user's --verify-images
    distinct_scores: int = 0  # different program scores among the images (ties blur a ranking)
    # different eager fp32 scores: the most the program can have (identical images score alike)
    reference_distinct_scores: int = 0


@dataclass
class ExportReport:
    program: str
    contract: str
    report: str
    quantize: str
    backend: str
    program_bytes: int
    program_sha256: str
    nodes_outside_delegate: int
    outside_ops: list[str]
    num_delegates: int
    wrapper_changes: list[str]
    quantization: dict[str, Any]  # as in the contract: mode, quantizer settings, calibration
    calibration_images: int
    images_from: str  # where the calibration images came from
    verification: Verification  # .image_set names the verification images
    # int8: the same comparison on the calibration images (None for fp32): int8 fidelity on the
    # set its ranges were measured on, beside the set it was not
    calibration_fidelity: Verification | None
    thresholds: dict[str, float]
    passed: bool
    failures: list[str]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


def _finite(obj: Any) -> Any:
    """JSON has no NaN: undefined statistics become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def resolve_thresholds(quantize: str, min_srcc: float | None, max_abs_diff: float | None) -> dict[str, float]:
    """The limits ``quantize`` is held to: the given ones, else fp32 ``max_abs_diff`` and int8 ``min_srcc``."""
    if min_srcc is not None and not -1.0 <= min_srcc <= 1.0:
        raise ExportError(f"--min-srcc must lie in [-1, 1], got {min_srcc}")
    if max_abs_diff is not None and max_abs_diff < 0:
        raise ExportError(f"--max-abs-diff must be >= 0, got {max_abs_diff}")
    if quantize == "fp32" and max_abs_diff is None:
        max_abs_diff = DEFAULT_MAX_ABS_DIFF
    if quantize == "int8" and min_srcc is None:
        min_srcc = DEFAULT_MIN_SRCC
    limits = {"max_abs_diff": max_abs_diff, "min_srcc": min_srcc}
    return {k: v for k, v in limits.items() if v is not None}


def check_fidelity(v: Verification, thresholds: dict[str, float]) -> list[str]:
    """Each limit ``v`` breaks, as one sentence; empty when the program passes."""
    failures = []
    if "max_abs_diff" in thresholds and not v.max_abs_diff <= thresholds["max_abs_diff"]:
        failures.append(f"max abs score diff {v.max_abs_diff:.3g} > {thresholds['max_abs_diff']:.3g}")
    if "min_srcc" in thresholds:
        if v.srcc is None:
            failures.append(f"SRCC undefined (constant scores or fewer than 3 of {v.num_images} "
                            f"images) but min SRCC {thresholds['min_srcc']} was required")
        elif v.srcc < thresholds["min_srcc"]:
            failures.append(f"SRCC vs eager fp32 {v.srcc:.4f} < {thresholds['min_srcc']}")
    return failures
