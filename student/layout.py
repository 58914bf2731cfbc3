"""The run folder: every path ``agiqa-distill run`` writes and ``agiqa-export`` reads, named once.

It lives beside the student because a run folder is how a trained student travels: ``distill``
writes it, and ``export`` (which may import only ``student`` and ``edge_runtime``) reads it::

    config.json          the resolved RunConfig
    splits.json          image ids per split (seeded); data_index.json: absolute paths per split
    demo_images/, demo_unlabeled/, teacher_init/, teacher/   demo only: images, the teacher before
                         and after training
    labels/<fp12>/       label cache of this teacher (unless teacher.cache points elsewhere);
                         labels/<fp12>-unlabeled-<hash>/ for data.unlabeled,
                         labels/<fp12>-evaluate-<hash>/ for each folder agiqa-distill evaluate labels
    checkpoint/          resumable training state (safetensors + JSON)
    student/best, last   student folders: config.json, model.safetensors, compression.safetensors
    metrics.jsonl        per step and per epoch; metrics.json: final held-out metrics
    plots/*.png          loss curves, student vs teacher, student vs MOS
    evaluations/<name>-<hash>.json, .png   agiqa-distill evaluate: student vs teacher on a folder
    MODEL_CARD.md

A student folder's own files are ``student.model.CONFIG_NAME`` / ``WEIGHTS_NAME``, and the
distiller's ``distill.compression.COMPRESSION_NAME`` (analysis only: export does not read it).
``RunLayout(Path())`` gives the names relative to a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from _agiqa.atomic import atomic_write_json

from .model import CONFIG_NAME

__all__ = ["RunLayout", "DataIndex", "read_data_index", "write_data_index", "BEST", "LAST", "SPLITS_NAME"]

BEST, LAST = "best", "last"  # student/best: best validation SRCC (exported); student/last: the final step
SPLITS_NAME = "splits.json"  # also in a trained teacher folder: the ids it was trained and validated on


@dataclass(frozen=True)
class RunLayout:
    """The paths inside the run folder ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The resolved RunConfig (``--resume`` reads it back)."""
        return self.root / "config.json"

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_NAME

    @property
    def data_index(self) -> Path:
        """Absolute image paths per split: :func:`read_data_index`."""
        return self.root / "data_index.json"

    @property
    def labels(self) -> Path:
        """Parent of the label caches, one sub-folder per teacher fingerprint."""
        return self.root / "labels"

    @property
    def evaluations(self) -> Path:
        """``agiqa-distill evaluate`` reports: one JSON (and scatter plot) per image folder."""
        return self.root / "evaluations"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    def student(self, which: str = BEST) -> Path:
        """A student folder: ``BEST`` (what export takes) or ``LAST``."""
        return self.root / "student" / which

    @property
    def metrics_log(self) -> Path:
        """Per-step and per-epoch JSON lines."""
        return self.root / "metrics.jsonl"

    @property
    def metrics(self) -> Path:
        """The final held-out metrics."""
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def model_card(self) -> Path:
        return self.root / "MODEL_CARD.md"

    @property
    def demo_images(self) -> Path:
        return self.root / "demo_images"

    @property
    def demo_unlabeled(self) -> Path:
        return self.root / "demo_unlabeled"

    @property
    def teacher_init(self) -> Path:
        """Demo only: the tiny teacher before training."""
        return self.root / "teacher_init"

    @property
    def teacher(self) -> Path:
        """Demo only: the tiny teacher trained against the demo MOS."""
        return self.root / "teacher"

    def is_run(self) -> bool:
        """Whether ``root`` holds a finished student (``student/best/config.json``)."""
        return (self.student(BEST) / CONFIG_NAME).is_file()


@dataclass(frozen=True)
class DataIndex:
    """``data_index.json``: the run's images by absolute path."""

    splits: dict[str, list[Path]]  # "train", "val", "test" -> image paths, in split order
    unlabeled: list[Path]  # images without MOS the teacher labelled (the student's pool, held-out slice included)

    def split(self, name: str) -> list[Path]:
        """The paths of split ``name``; empty when the run has no such split."""
        return self.splits.get(name, [])


def write_data_index(path: str | os.PathLike, splits: dict[str, list[str]], unlabeled: list[str]) -> Path:
    """Write ``data_index.json`` (absolute paths per split, then the unlabeled images)."""
    return atomic_write_json(Path(path), {"splits": splits, "unlabeled": unlabeled})


def read_data_index(path: str | os.PathLike) -> DataIndex:
    """Read ``data_index.json``; a file of another form is a one-line ``ValueError`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        splits = {str(name): [Path(p) for p in paths] for name, paths in data["splits"].items()}
        return DataIndex(splits, [Path(p) for p in data.get("unlabeled", [])])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a data index with 'splits' ({exc})") from None
