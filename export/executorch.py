"""Export a student to a self-describing ExecuTorch program, and verify it on real images.

:func:`export_executorch` checks its arguments, then runs the two steps:

    build (export.build: trace, quantize, lower; no files written)
      -> publish (export.publish: stage, verify against the eager student, commit the program,
         its contract and golden pairs atomically, write model.report.json; or FidelityError)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from _agiqa.quiet import quiet_toolchain

from .backends import (
    DEFAULT_INT8_ACTIVATIONS,
    INT8_ACTIVATIONS,
    QUANTIZE_MODES,
    ExportBackend,
    get_backend,
    registered_runtime_backends,
)
from .build import Progress, build_program
from .publish import publish_program
from .report import ExportError, ExportReport, resolve_thresholds
from .source import ExportSource, resolve_source

__all__ = ["export_executorch"]


def export_executorch(source: str | os.PathLike, out: str | os.PathLike, *, quantize: str = "int8",
                      calibration: int = 64, backend: str = "xnnpack",
                      images: str | os.PathLike | None = None,
                      verify_images: str | os.PathLike | None = None,
                      calibration_images: str | os.PathLike | None = None,
                      min_srcc: float | None = None, max_abs_diff: float | None = None,
                      verify_limit: int | None = 200, threads: int | None = None,
                      keep_fp32: Sequence[str] = (), int8_activations: str = DEFAULT_INT8_ACTIVATIONS,
                      progress: Progress | None = None) -> ExportReport:
    """Export ``source`` (a run folder or a student folder) to ``out`` (.pte) and verify it.

    Writes ``out``, ``out.with_suffix('.json')`` (the contract) and ``...report.json``.
    Verification uses the run's held-out split (or the odd files of ``images``), or all of
    ``verify_images`` when given; the report names the set. ``calibration_images`` (a folder)
    calibrates int8 instead of the run's train split and unlabeled pool (or ``images``); int8 reports its fidelity on
    the calibration images too (``calibration_fidelity``). ``keep_fp32`` names submodules of the
    int8 scope (``"student.backbone.conv_stem"``) left in fp32. ``int8_activations``
    (:data:`export.backends.INT8_ACTIVATIONS`): ``"dynamic"`` (the default) ranges measured on
    each image by the program (no calibration set to miss, faithful on any photo) or ``"static"``
    ones calibrated once (7% faster on x86-64, less faithful on photos unlike the calibration
    set). ``progress`` receives one line
    per phase. Raises :class:`FidelityError` (after writing the report, and removing the
    contract so the runtime refuses the program) when the program disagrees with the eager
    student beyond the thresholds: fp32 ``max_abs_diff`` (default 1e-4), int8 ``min_srcc``
    (default 0.99).
    """
    quiet_toolchain()
    say = progress or (lambda line: None)
    out = Path(out)
    if out.suffix != ".pte":
        raise ExportError(f"{out}: the program file must end in .pte")
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"--quantize must be one of {list(QUANTIZE_MODES)}, got {quantize!r}")
    try:
        target: ExportBackend = get_backend(backend)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if quantize not in target.modes:
        raise ExportError(f"backend {backend!r} exports only {list(target.modes)}, not {quantize}")
    registered = registered_runtime_backends()
    if target.runtime_backend not in registered:  # the program could not be verified here
        raise ExportError(f"the installed ExecuTorch runtime cannot run {backend} programs: it registers "
                          f"{registered}, not {target.runtime_backend}; install the executorch wheel "
                          "pinned in pyproject.toml")
    if calibration < 1:
        raise ExportError(f"--calibration must be >= 1, got {calibration}")
    thresholds = resolve_thresholds(quantize, min_srcc, max_abs_diff)
    try:
        src: ExportSource = resolve_source(source, images, verify_images, calibration_images)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if keep_fp32 and quantize != "int8":
        raise ExportError("--keep-fp32 applies to int8 exports only")
    if int8_activations not in INT8_ACTIVATIONS:
        raise ExportError(f"--int8-activations must be one of {list(INT8_ACTIVATIONS)}, got {int8_activations!r}")
    built = build_program(src, target, quantize, calibration, say, tuple(keep_fp32), int8_activations)
    return publish_program(built, out, src, thresholds, verify_limit=verify_limit, threads=threads, say=say)
