"""Export a student to a self-describing ExecuTorch program, and verify it on real images.

One straight sequence (:func:`export_executorch`):

    student -> EdgeStudent (score, gate_weights) -> torch.export
      [int8: PT2E prepare -> calibrate on real images -> convert -> torch.export]
      -> to_edge_transform_and_lower(the backend's partitioner, export.backends) -> to_executorch
      -> model.pte
      -> model.json (the contract) -> load with the ExecuTorch runtime, score held-out images,
         compare with the eager fp32 student -> model.report.json -> pass or FidelityError

The toolchain calls themselves live in :mod:`export._toolchain`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from _agiqa.errors import CheckFailedError
from _agiqa.version import installed_version
from edge_runtime.contract import CONTRACT_METHOD, ModelContract, contract_path, report_path, sha256_bytes
from edge_runtime.images import ImageLoadError
from edge_runtime.preprocess import PreprocessSpec
from edge_runtime.scorer import Scorer

from . import _toolchain as tc
from .backends import ExportBackend, get_backend
from .golden import write_golden
from .source import ExportSource, resolve_source
from .wrapper import OUTPUT_NAMES, EdgeStudent, expert_names

__all__ = ["ExportError", "ExportReport", "FidelityError", "Verification", "export_executorch",
           "lower_with_contract",
           "DEFAULT_MAX_ABS_DIFF", "DEFAULT_MIN_SRCC", "QUANTIZE_MODES"]

QUANTIZE_MODES = ("int8", "fp32")
DEFAULT_MAX_ABS_DIFF = 1e-4  # fp32: the program must reproduce eager scores
DEFAULT_MIN_SRCC = 0.99  # int8: the program must keep the eager ranking
_VERSION_PACKAGES = ("agiqa-edge", "torch", "torchao", "executorch", "timm", "numpy", "pillow")


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


def _load_student(student_dir: Path) -> torch.nn.Module:
    from student.model import StudentIQA  # training-side import, kept out of module import

    try:
        return StudentIQA.from_pretrained(student_dir).eval()
    except (ValueError, RuntimeError, OSError, KeyError, TypeError) as exc:
        # e.g. a config.json whose sizes do not match model.safetensors (torch's size-mismatch
        # message spans many lines: keep its first).
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        first = next((ln for ln in lines if "size mismatch" in ln or "key" in ln.lower()), lines[0])
        raise ExportError(f"{student_dir}: cannot load the student ({first}); export a folder "
                          "written by agiqa-distill, with its own config.json") from None


def _tensors(spec: PreprocessSpec, paths: Sequence[Path], limit: int | None,
             skipped: list[dict[str, str]]) -> Iterator[tuple[Path, torch.Tensor]]:
    """Preprocessed ``(1, 3, H, W)`` images, skipping unreadable files (recorded)."""
    taken = 0
    for path in paths:
        if limit is not None and taken >= limit:
            return
        try:
            array = spec.load(path)
        except ImageLoadError as exc:
            skipped.append({"path": str(path), "reason": exc.reason})
            continue
        taken += 1
        yield path, torch.from_numpy(array)[None]


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
    inputs = [x for _, x in _tensors(scorer.contract.preprocess, paths, limit, skipped)]
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
                        image_set=image_set, distinct_scores=len(set(exported)))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        absent = "not installed (source tree)" if name == "agiqa-edge" else "missing"
        versions[name] = installed_version(name) or absent
    return versions


def _thresholds(quantize: str, min_srcc: float | None, max_abs_diff: float | None) -> dict[str, float]:
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


def _failures(v: Verification, thresholds: dict[str, float]) -> list[str]:
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


def lower_with_contract(module: torch.nn.Module, example: torch.Tensor, contract: ModelContract
                        ) -> tuple[tc.LoweredProgram, ModelContract]:
    """Export and lower ``module`` with ``contract``'s digest inside; returns the program and
    the contract completed with the program's sha256 and size (ready to save beside it).

    Each file protects the other: an edited model.json no longer matches the digest in the
    program, and an edited program no longer matches the sha256 in model.json.
    """
    digest = contract.digest()
    lowered = tc.lower_to_executorch(tc.export_program(module, example), contract.backend,
                                     constant_methods={CONTRACT_METHOD: digest})
    return lowered, dataclasses.replace(contract, program_sha256=sha256_bytes(lowered.buffer),
                                        program_bytes=len(lowered.buffer), contract_sha256=digest)


Progress = Callable[[str], None]
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


def export_executorch(source: str | os.PathLike, out: str | os.PathLike, *, quantize: str = "int8",
                      calibration: int = 64, backend: str = "xnnpack",
                      images: str | os.PathLike | None = None,
                      verify_images: str | os.PathLike | None = None,
                      calibration_images: str | os.PathLike | None = None,
                      min_srcc: float | None = None, max_abs_diff: float | None = None,
                      verify_limit: int | None = 200, threads: int | None = None,
                      progress: Progress | None = None) -> ExportReport:
    """Export ``source`` (a run folder or a student folder) to ``out`` (.pte) and verify it.

    Writes ``out``, ``out.with_suffix('.json')`` (the contract) and ``...report.json``.
    Verification uses the run's held-out split (or the odd files of ``images``), or all of
    ``verify_images`` when given; the report names the set. ``calibration_images`` (a folder)
    calibrates int8 instead of the run's train split or ``images``; int8 reports its fidelity on
    the calibration images too (``calibration_fidelity``). ``progress`` receives one line
    per phase. Raises :class:`FidelityError` (after writing the report, and removing the
    contract so the runtime refuses the program) when the program disagrees with the eager
    student beyond the thresholds: fp32 ``max_abs_diff`` (default 1e-4), int8 ``min_srcc``
    (default 0.99).
    """
    tc.quiet_toolchain()
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
    registered = tc.registered_runtime_backends()
    if target.runtime_backend not in registered:  # the program could not be verified here
        raise ExportError(f"the installed ExecuTorch runtime cannot run {backend} programs: it registers "
                          f"{registered}, not {target.runtime_backend}; install the executorch wheel "
                          "pinned in pyproject.toml")
    if calibration < 1:
        raise ExportError(f"--calibration must be >= 1, got {calibration}")
    thresholds = _thresholds(quantize, min_srcc, max_abs_diff)
    try:
        src: ExportSource = resolve_source(source, images, verify_images, calibration_images)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    say(f"loading the student from {src.student_dir}")
    student = _load_student(src.student_dir)
    spec, cfg = student.config.preprocess, student.config
    wrapper = EdgeStudent(student)
    example = torch.zeros(1, 3, *spec.input_size)
    quantization: dict[str, Any] = {"mode": quantize}
    calibrated = 0
    if quantize == "int8":
        say(f"int8: calibrating on up to {calibration} images from {src.images_from}")
        calibration_skipped: list[dict[str, str]] = []
        batches = (x for _, x in _tensors(spec, src.calibration_images, calibration, calibration_skipped))
        module, calibrated = tc.quantize_int8(wrapper, example, batches,
                                              only_under=EdgeStudent.INT8_SCOPE, backend=target)
        quantization.update(target.int8.record(EdgeStudent.INT8_SCOPE))
        quantization["calibration"] = {"images": calibrated, "requested": calibration,
                                       "source": src.images_from,
                                       "skipped": len(calibration_skipped)}
        timings["quantize"] = time.perf_counter() - clock
    else:
        module = wrapper
    contract = ModelContract(
        program_sha256="", preprocess=spec,
        input_shape=tuple(example.shape), output_names=OUTPUT_NAMES, score_output="score",
        expert_names=tuple(expert_names(cfg.num_semantic)), score_range=cfg.score_range,
        lower_better=cfg.lower_better, backend=target.name, partitioner=target.partitioner,
        quantization=quantization,
        versions=library_versions(), **src.fingerprints())
    say(f"torch.export and lowering to {backend}")
    lowered, contract = lower_with_contract(module, example, contract)
    timings["export_and_lower"] = time.perf_counter() - clock - sum(timings.values())

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
        failures = _failures(verification, thresholds)
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
        quantize=quantize, backend=backend, program_bytes=len(lowered.buffer),
        program_sha256=contract.program_sha256, nodes_outside_delegate=len(lowered.outside_delegate),
        outside_ops=list(lowered.outside_delegate), num_delegates=lowered.num_delegates,
        wrapper_changes=wrapper.describe_changes(), quantization=quantization,
        calibration_images=calibrated, images_from=src.images_from, verification=verification,
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
