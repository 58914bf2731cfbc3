"""Where an export's student and images come from: a distillation run, or a bare student folder.

A run folder holds ``student/best/`` and ``data_index.json`` (absolute image paths per split):
calibration uses its train split and, when the run has one, its unlabeled pool (images the
teacher labelled for the student, often unlike the labelled set: int8 ranges then cover what
users score), verification its test split. A bare student folder has no
images of its own, so ``--images DIR`` is required; its images are split alternately into a
calibration half and a verification half so the two never overlap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.scorer import IMAGE_SUFFIXES, find_images
from student.layout import RunLayout, read_data_index
from student.model import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["ExportSource", "SourceError", "calibration_mix", "resolve_source"]


class SourceError(ValueError):
    """The export source or its images cannot be used."""


@dataclass(frozen=True)
class ExportSource:
    student_dir: Path  # folder with config.json + model.safetensors
    calibration_images: tuple[Path, ...]
    verification_images: tuple[Path, ...]
    images_from: str  # human-readable origin, recorded in the report
    verification_from: str  # human-readable origin of the verification images
    metadata: dict  # the student's config.json (fingerprints live here)

    def fingerprints(self) -> dict[str, str | None]:
        weights = self.student_dir / WEIGHTS_NAME
        return {"teacher_fingerprint": _str_or_none(self.metadata.get("teacher_fingerprint")),
                "student_weights_sha256": _sha256_file(weights) if weights.is_file() else None}


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_source(source: str | os.PathLike, images: str | os.PathLike | None = None,
                   verify_images: str | os.PathLike | None = None,
                   calibration_images: str | os.PathLike | None = None) -> ExportSource:
    """A run folder (-> ``student/best``, train/test splits) or a student folder + ``images``.

    ``verify_images``, a folder, replaces the verification images wherever they came from;
    ``calibration_images``, a folder, replaces the calibration images (then all of ``images``,
    when given, are verification images: nothing needs to be held out of a calibration set).
    """
    if calibration_images is not None:
        return _with_calibration(source, images, verify_images, calibration_images)
    source = Path(source)
    run = RunLayout(source)
    if run.is_run():
        student_dir = run.student()
        index = run.data_index
        if images is None:
            if not index.is_file():
                raise SourceError(f"{index}: missing; pass --images DIR for calibration and "
                                  "verification images")
            try:
                data_index = read_data_index(index)
            except ValueError as exc:
                raise SourceError(str(exc)) from None
            calibration = calibration_mix(data_index.split("train"), data_index.unlabeled)
            verification = data_index.split("test") or data_index.split("val")
            if not calibration or (not verification and verify_images is None):
                raise SourceError(f"{index}: needs non-empty 'train' and 'test' (or 'val') splits; "
                                  "or pass --images DIR")
            return _with_verification(student_dir, calibration, verification,
                                      f"{index} (calibration: train split"
                                      + (", unlabeled pool, alternately)" if data_index.unlabeled else ")"),
                                      f"{index} (test split, held out)", verify_images)
    elif (source / CONFIG_NAME).is_file():
        student_dir = source
        if images is None:
            raise SourceError(f"{source} is a bare student folder: pass --images DIR (real "
                              "photos for int8 calibration and verification)")
    else:
        raise SourceError(f"{source}: neither a distillation run ({RunLayout(Path()).student() / CONFIG_NAME}) "
                          f"nor a student folder ({CONFIG_NAME})")
    found = _folder_images(images)
    if verify_images is not None:  # the user's own verification set: calibrate on everything
        return _with_verification(student_dir, found, [], f"{images} (all {len(found)} files)",
                                  "", verify_images)
    # Alternate split: calibration and verification never share an image (unless only one).
    return _with_verification(student_dir, found[0::2], found[1::2] or found,
                              f"{images} (calibration: even files)",
                              f"{images} (odd files, not used for calibration)", None)


def calibration_mix(train: list[Path], unlabeled: list[Path], seed: int = 0) -> list[Path]:
    """``train`` and ``unlabeled`` alternately, each in a seeded order, so that the first N images
    (an export calibrates on the first ``--calibration``) take half from each, spread over the
    whole of both rather than the first files of one; just ``train`` when there is no pool."""
    if not unlabeled:
        return list(train)
    order = random.Random(seed)
    halves = [order.sample(part, len(part)) for part in (train, unlabeled)]
    mixed = [path for pair in zip(*halves) for path in pair]
    short = min(len(train), len(unlabeled))
    return mixed + halves[0][short:] + halves[1][short:]


def _with_calibration(source: str | os.PathLike, images: str | os.PathLike | None,
                      verify_images: str | os.PathLike | None,
                      calibration_images: str | os.PathLike) -> ExportSource:
    """The source's verification images (a run's test split, all of ``images`` or
    ``verify_images``) with ``calibration_images`` as the calibration set."""
    calibration = _folder_images(calibration_images)
    if images is not None and verify_images is None:
        verify_images = images  # all of them verify: the calibration set is the user's own
    if verify_images is None and not RunLayout(Path(source)).is_run():
        raise SourceError(f"{source} is a bare student folder: with --calibration-images pass "
                          "--verify-images DIR (or --images DIR) too, the photos to verify on")
    if verify_images is None:  # a run's held-out split
        base = resolve_source(source)
        verification_from = base.verification_from
    else:
        base = _with_verification(_student_dir(source), [], [], "", "", verify_images)
        overlap = len({p.resolve() for p in base.verification_images} & {p.resolve() for p in calibration})
        verification_from = (f"{verify_images} ({len(base.verification_images)} files, "
                             f"{overlap} also used for calibration)")
    return dataclasses.replace(
        base, calibration_images=tuple(calibration), verification_from=verification_from,
        images_from=f"{calibration_images} (--calibration-images, {len(calibration)} files)")


def _student_dir(source: str | os.PathLike) -> Path:
    """``source``'s student folder (a run's ``student/best`` or the folder itself)."""
    run = RunLayout(Path(source))
    if run.is_run():
        return run.student()
    if (Path(source) / CONFIG_NAME).is_file():
        return Path(source)
    raise SourceError(f"{source}: neither a distillation run ({RunLayout(Path()).student() / CONFIG_NAME}) "
                      f"nor a student folder ({CONFIG_NAME})")


def _folder_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, by suffix, hidden files ignored), sorted; never none."""
    if not Path(folder).is_dir():
        raise SourceError(f"{folder}: not a folder of images")
    found = find_images(Path(folder))
    if not found:
        raise SourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _with_verification(student_dir: Path, calibration: list[Path], verification: list[Path],
                       images_from: str, verification_from: str,
                       verify_images: str | os.PathLike | None) -> ExportSource:
    if verify_images is not None:
        verification = _folder_images(verify_images)
        overlap = len({p.resolve() for p in verification} & {p.resolve() for p in calibration})
        verification_from = (f"{verify_images} (--verify-images, {len(verification)} files, "
                             f"{overlap} also used for calibration)")
    return ExportSource(student_dir, tuple(calibration), tuple(verification), images_from,
                        verification_from, _read_meta(student_dir))


def _read_meta(student_dir: Path) -> dict:
    try:
        return json.loads((student_dir / CONFIG_NAME).read_text())
    except ValueError as exc:
        raise SourceError(f"{student_dir / CONFIG_NAME}: malformed JSON ({exc})") from None
