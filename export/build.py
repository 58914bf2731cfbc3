"""Build an ExecuTorch program from a student: trace, quantize, lower. Writes no files.

    student -> EdgeStudent (score, gate_weights) -> torch.export
      [int8: PT2E prepare -> calibrate on real images -> convert -> torch.export]
      -> to_edge_transform_and_lower(the backend's partitioner, export.backends) -> to_executorch

The result, :class:`BuiltProgram`, holds the program's bytes and its contract (with the program's
digest inside); :mod:`export.publish` verifies and writes them. The toolchain calls themselves
live in :mod:`export._toolchain`.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from _agiqa.version import installed_version
from edge_runtime.contract import CONTRACT_METHOD, ModelContract, sha256_bytes
from edge_runtime.images import ImageLoadError
from edge_runtime.preprocess import PreprocessSpec

from . import _toolchain as tc
from .backends import DEFAULT_INT8_ACTIVATIONS, ExportBackend
from .report import ExportError
from .source import ExportSource
from .wrapper import OUTPUT_NAMES, EdgeStudent, expert_names

__all__ = ["BuiltProgram", "build_program", "image_tensors", "library_versions", "load_student",
           "lower_with_contract"]

_VERSION_PACKAGES = ("agiqa-edge", "torch", "torchao", "executorch", "timm", "numpy", "pillow")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltProgram:
    """A lowered program and everything publishing it needs; nothing of it is on disk yet."""

    student: torch.nn.Module  # the eager fp32 student, the reference the program is verified against
    lowered: tc.LoweredProgram  # .buffer: the .pte bytes (the contract's digest embedded)
    contract: ModelContract  # completed with the program's sha256 and size
    quantization: dict[str, Any]  # as in the contract: mode, quantizer settings, calibration
    calibrated: int  # images the int8 ranges were measured on (0 for fp32)
    wrapper_changes: list[str]  # what EdgeStudent rewrote for the delegate
    seconds: dict[str, float]  # "quantize" (int8), "export_and_lower"


def load_student(student_dir: Path) -> torch.nn.Module:
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


def image_tensors(spec: PreprocessSpec, paths: Sequence[Path], limit: int | None,
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


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        absent = "not installed (source tree)" if name == "agiqa-edge" else "missing"
        versions[name] = installed_version(name) or absent
    return versions


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


def _check_submodules(wrapper: torch.nn.Module, paths: tuple[str, ...], scope: str) -> None:
    """Each of ``paths`` must name a submodule inside ``scope`` (a typo would quantize it anyway)."""
    names = {name for name, _ in wrapper.named_modules()}
    for path in paths:
        if path not in names or not (path + ".").startswith(scope + "."):
            near = sorted(n for n in names if n.startswith(scope + ".") and n.endswith(path.rsplit(".", 1)[-1]))
            raise ExportError(f"--keep-fp32 {path}: not a module of the int8 scope {scope!r}"
                             + (f"; did you mean {near[0]}?" if near else
                                "; bench/int8_sensitivity.py lists the module paths"))


def build_program(src: ExportSource, target: ExportBackend, quantize: str, calibration: int,
                  say: Progress, keep_fp32: tuple[str, ...] = (),
                  int8_activations: str = DEFAULT_INT8_ACTIVATIONS) -> BuiltProgram:
    """Load ``src``'s student, quantize it (int8: static activations calibrated on up to
    ``calibration`` of ``src.calibration_images``, or dynamic ones; the submodules ``keep_fp32``
    left in fp32) and lower it to ``target``, with its contract."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    say(f"loading the student from {src.student_dir}")
    student = load_student(src.student_dir)
    spec, cfg = student.config.preprocess, student.config
    wrapper = EdgeStudent(student)
    example = torch.zeros(1, 3, *spec.input_size)
    quantization: dict[str, Any] = {"mode": quantize}
    calibrated = 0
    if keep_fp32:
        _check_submodules(wrapper, keep_fp32, EdgeStudent.INT8_SCOPE)
    if quantize == "int8":
        recipe = tc.int8_recipe(target, int8_activations)
        calibration_skipped: list[dict[str, str]] = []
        if recipe.activations == "static":
            say(f"int8: calibrating on up to {calibration} images from {src.images_from}")
        else:
            say("int8: dynamic activations (ranges measured per image at run time; no calibration)")
        batches = (x for _, x in image_tensors(spec, src.calibration_images, calibration, calibration_skipped))
        module, calibrated = tc.quantize_int8(wrapper, example, batches, only_under=EdgeStudent.INT8_SCOPE,
                                              keep_fp32=keep_fp32, backend=target, activations=int8_activations,
                                              dynamic_under=EdgeStudent.INT8_DYNAMIC_SCOPE)
        quantization.update(recipe.record(EdgeStudent.INT8_SCOPE, keep_fp32, EdgeStudent.INT8_DYNAMIC_SCOPE))
        quantization["calibration"] = ({"images": calibrated, "requested": calibration, "source": src.images_from,
                                        "skipped": len(calibration_skipped)} if recipe.activations == "static"
                                       else {"images": 0, "none_needed": "dynamic activations"})
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
    say(f"torch.export and lowering to {target.name}")
    lowered, contract = lower_with_contract(module, example, contract)
    timings["export_and_lower"] = time.perf_counter() - clock - sum(timings.values())
    return BuiltProgram(student=student, lowered=lowered, contract=contract, quantization=quantization,
                        calibrated=calibrated, wrapper_changes=wrapper.describe_changes(), seconds=timings)
