"""Publish a built program: stage it, verify it on real images, then commit it atomically.

Beside ``out``: a staging folder (named with our pid, so a later export removes one left by a
killed export) receives the program and its contract; the program is scored against the eager
student there. Only a program that passes replaces ``out`` and its contract and gets its golden
pairs; one that fails is kept as ``<stem>.rejected.pte`` without a contract, so no runtime loads
it, and an earlier good ``out`` stays as it was. The report is written last, either way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from edge_runtime.contract import contract_path, report_path
from edge_runtime.scorer import Scorer

from .build import BuiltProgram, image_tensors
from .golden import write_golden
from .report import ExportError, ExportReport, FidelityError, Verification, check_fidelity
from .source import ExportSource

__all__ = ["publish_program", "verify_program"]

Progress = Callable[[str], None]


def _correlations(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    from scipy import stats

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    return float(stats.spearmanr(a, b)[0]), float(stats.pearsonr(a, b)[0])


def verify_program(program: Path, student: torch.nn.Module, paths: Sequence[Path],
                   limit: int | None = None, threads: int | None = None,
                   image_set: str = "", batch_size: int = 32) -> Verification:
    """Score ``paths`` with the saved program (the device runtime path) and the eager student.

    The program is loaded once and run image by image (its batch is 1, as on the device, and
    that gives the latency); the eager reference runs in batches of ``batch_size``.
    """
    scorer = Scorer.from_file(program, threads=threads)
    skipped: list[dict[str, str]] = []
    inputs = [x for _, x in image_tensors(scorer.contract.preprocess, paths, limit, skipped)]
    if not inputs:
        raise ExportError(f"no readable verification images among {len(paths)} "
                          f"(skipped: {skipped[:3]})")
    exported, gates, seconds = [], [], []
    for x in inputs:
        start = time.perf_counter()
        out = scorer.run(x.numpy())
        seconds.append(time.perf_counter() - start)
        exported.append(float(out["score"].reshape(-1)[0]))
        gates.append(out["gate_weights"].reshape(-1))
    eager, eager_gates = [], []
    with torch.inference_mode():
        for i in range(0, len(inputs), batch_size):
            reference = student(torch.cat(inputs[i:i + batch_size]))
            eager.extend(reference.score.tolist())
            eager_gates.append(reference.gate_weights.numpy())
    a, b = np.asarray(eager), np.asarray(exported)
    gate_diff = np.abs(np.concatenate(eager_gates) - np.stack(gates))
    srcc, plcc = _correlations(a, b)
    ms = np.asarray(seconds) * 1e3
    return Verification(num_images=len(a), max_abs_diff=float(np.abs(a - b).max()),
                        mean_abs_diff=float(np.abs(a - b).mean()),
                        gate_max_abs_diff=float(gate_diff.max()), srcc=srcc, plcc=plcc,
                        latency_ms_median=float(np.median(ms)),
                        latency_ms_p90=float(np.percentile(ms, 90)), skipped=skipped,
                        image_set=image_set, distinct_scores=len(set(exported)),
                        reference_distinct_scores=len(set(eager)))


_STAGING = ".{stem}.staging-"


def _remove_stale_staging(folder: Path, stem: str) -> None:
    """Remove staging folders of exports of ``stem`` that were killed (their process is gone)."""
    for stale in folder.glob(_STAGING.format(stem=stem) + "*"):
        pid = stale.name[len(_STAGING.format(stem=stem)):].split("-")[0]
        if stale.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def publish_program(built: BuiltProgram, out: Path, src: ExportSource, thresholds: dict[str, float], *,
                    verify_limit: int | None, threads: int | None, say: Progress) -> ExportReport:
    """Stage, verify, and commit ``built`` as ``out`` (+ contract, golden pairs, report).

    Raises :class:`FidelityError` (after writing the report) when the program breaks ``thresholds``.
    """
    quantize = built.quantization["mode"]
    lowered, contract, student = built.lowered, built.contract, built.student
    timings = dict(built.seconds)
    # Stage program + contract beside the target and verify them there: a program that fails
    # verification never replaces an earlier good ``out`` (nothing already written is lost).
    # The staging folder carries our pid, so a later export can clean up after a killed one.
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out.parent, out.stem)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING.format(stem=out.stem)}{os.getpid()}-",
                                    dir=out.parent))
    try:
        staged = staging / out.name
        atomic_write_bytes(staged, lowered.buffer)
        contract.save(contract_path(staged))
        clock = time.perf_counter()
        say(f"verifying against the eager student on up to {verify_limit or 'all'} images "
            f"from {src.verification_from}")
        verification = verify_program(staged, student, src.verification_images, verify_limit,
                                      threads, image_set=src.verification_from)
        calibration_fidelity = None
        if quantize == "int8":
            say(f"int8 fidelity on up to {verify_limit or 'all'} calibration images")
            calibration_fidelity = verify_program(staged, student, src.calibration_images, verify_limit,
                                                  threads, image_set=src.images_from)
        timings["verify"] = time.perf_counter() - clock
        failures = check_fidelity(verification, thresholds)
        # A failed program is kept for inspection under another name, without a contract, so
        # no runtime loads it; an earlier good ``out`` and its contract stay as they were.
        final = out.with_name(f"{out.stem}.rejected{out.suffix}") if failures else out
        os.replace(staged, final)
        if not failures:
            os.replace(contract_path(staged), contract_path(out))
            write_golden(out, src.verification_images)  # model.golden.safetensors, for runtimes
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # also when verification failed or raised
    report = ExportReport(
        program=str(final), contract=str(contract_path(final)) if not failures else "",
        report=str(report_path(final)),
        quantize=quantize, backend=contract.backend, program_bytes=len(lowered.buffer),
        program_sha256=contract.program_sha256, nodes_outside_delegate=len(lowered.outside_delegate),
        outside_ops=list(lowered.outside_delegate), num_delegates=lowered.num_delegates,
        wrapper_changes=built.wrapper_changes, quantization=built.quantization,
        calibration_images=built.calibrated, images_from=src.images_from, verification=verification,
        calibration_fidelity=calibration_fidelity, thresholds=thresholds,
        passed=not failures, failures=failures, seconds={k: round(v, 2) for k, v in timings.items()})
    atomic_write_json(report_path(final), report.to_dict())
    if failures:
        raise FidelityError(
            f"{out}: fidelity below threshold on {verification.num_images} images: "
            f"{'; '.join(failures)}. Kept as {final} (no contract, so no runtime loads it), "
            f"report {report_path(final)}; {out} was not written. Recalibrate (more/realistic "
            "--calibration images), export fp32, or relax the threshold.", report)
    return report
