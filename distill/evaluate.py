"""``agiqa-distill evaluate RUN IMAGES``: how faithfully a run's student copies its teacher on a
folder the user names (their own gallery), where no MOS exists.

The run's own teacher labels the folder (into the run's label caches, so a second evaluation of
the same folder is quick), the run's best student scores it, and the report names the images:
``RUN/evaluations/<folder>-<hash>.json`` and a scatter plot beside it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from _agiqa.atomic import atomic_write_json
from student.layout import BEST, RunLayout
from student.model import StudentIQA
from teacher.distributed import DistContext
from teacher.labeler import TEACHER_CONFIG_NAME

from .config import ConfigError, load_resume_config
from .data import dataset_spec_for, load_records
from .labels import TeacherRef, folder_tag, label_cache_dir, label_records
from .metrics import iqa_metrics
from .report import write_scatter
from .teacher_train import TRAINED_MARKER
from .train import ImageSet, predict

__all__ = ["FolderFidelity", "evaluate_folder"]


@dataclass
class FolderFidelity:
    """Student vs teacher on one image folder (what ``evaluate_folder`` returns and writes)."""

    run_dir: str
    images: str  # the folder, absolute
    n: int  # images both scored
    skipped: int  # files the teacher could not read
    vs_teacher: dict[str, float]  # iqa_metrics: srcc, krcc, plcc, rmse, n
    report: str  # the JSON written
    plot: str  # the scatter plot written
    scores: list[dict[str, Any]]  # per image: {"image": path relative to the folder, "student", "teacher"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_teacher(run_dir: Path, teacher_path: str | None) -> Path:
    if teacher_path:
        return Path(teacher_path)
    trained = RunLayout(run_dir).teacher  # the demo trains its own
    if not (trained / TRAINED_MARKER).is_file() or not (trained / TEACHER_CONFIG_NAME).is_file():
        raise ConfigError(f"{trained}: the run has no trained teacher; finish the run first "
                          f"(agiqa-distill run --resume {run_dir})")
    return trained


def evaluate_folder(run_dir: str | os.PathLike, images: str | os.PathLike, *, device: str | None = None,
                    progress: bool = True) -> FolderFidelity:
    """Label ``images`` with the run's teacher (cached) and score them with its best student."""
    run_dir, images = Path(run_dir).resolve(), Path(images).resolve()
    cfg = load_resume_config(run_dir)
    run = RunLayout(run_dir)
    if not (run.student(BEST) / "config.json").is_file():
        raise ConfigError(f"{run.student(BEST)}: no trained student; finish the run first "
                          f"(agiqa-distill run --resume {run_dir})")
    if not images.is_dir():
        raise ConfigError(f"{images}: not a folder of images; pass the folder to evaluate on")
    torch_device = torch.device(device or cfg.train.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    teacher = TeacherRef.read(_run_teacher(run_dir, cfg.teacher.path))
    records = load_records(dataset_spec_for(images, "folder"))
    cache = label_records(cfg, label_cache_dir(cfg, run, teacher, folder_tag("evaluate", images)), records, teacher,
                          DistContext(device=torch_device), progress)
    rows = {image_id: row for row, image_id in enumerate(cache.image_ids)}
    scored = [r for r in records if r.image_id in rows]
    if len(scored) < 3:
        raise ConfigError(f"{images}: {len(scored)} readable images; fidelity needs at least 3")
    teacher_scores = cache.tensors().score[torch.tensor([rows[r.image_id] for r in scored])].float().numpy()
    student = StudentIQA.from_pretrained(run.student(BEST)).to(torch_device)
    student_scores = predict(student, ImageSet([str(r.path) for r in scored], student.config.preprocess,
                                               preload=False), torch_device).score.numpy()
    name = images.name + folder_tag("", images)[1:]  # "<folder>-<hash>": two folders of one name never collide
    report, plot = run.evaluations / f"{name}.json", run.evaluations / f"{name}.png"
    result = FolderFidelity(run_dir=str(run_dir), images=str(images), n=len(scored), skipped=len(records) - len(scored),
                            vs_teacher=iqa_metrics(student_scores, teacher_scores), report=str(report),
                            plot=str(plot),
                            scores=[{"image": r.relpath, "student": float(s), "teacher": float(t)}
                                    for r, s, t in zip(scored, student_scores, teacher_scores)])
    write_scatter(plot, teacher_scores, student_scores, "teacher score", "student score", f"images of {images.name}")
    atomic_write_json(report, result.to_dict())
    return result
