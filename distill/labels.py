"""The teacher's labels of a run: the teacher resolved once, where each label set lives,
labelling what is missing, and the merge of the dataset's labels with the unlabeled pool's.

One sub-folder per teacher (and per extra image set) under the run's ``labels/`` (or
``teacher.cache``): a new teacher never overwrites another teacher's labels. Used by the run's
labelling stage, the demo teacher's training and ``agiqa-distill evaluate``.
"""

from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from student.layout import RunLayout
from teacher.cache import build_label_cache
from teacher.cache_read import LabelCache
from teacher.cache_schema import CacheError, TeacherOutput, fingerprint_sha256
from teacher.distributed import DistContext
from teacher.labeler import Teacher, TeacherConfig, read_teacher_config, teacher_fingerprint
from teacher.records import ImageRecord

from .config import RunConfig

__all__ = ["TeacherRef", "RunImages", "LabelSet", "label_cache_dir", "label_records", "label_run_images",
           "folder_tag"]


@dataclass(frozen=True)
class TeacherRef:
    """A teacher folder, its config and its fingerprint (hashing its files), resolved once."""

    path: Path
    config: TeacherConfig
    fingerprint: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> TeacherRef:
        path = Path(path)
        config = read_teacher_config(path)
        return cls(path, config, teacher_fingerprint(config, path))

    @property
    def sha256(self) -> str:
        return fingerprint_sha256(self.fingerprint)


@dataclass(frozen=True)
class RunImages:
    """The run's images: the dataset's (``records``, some with MOS) and the unlabeled pool's
    (``extra``, ids prefixed, from ``extra_root``)."""

    root: str
    records: list[ImageRecord]
    extra: list[ImageRecord]
    extra_root: Path | None


@dataclass(frozen=True)
class LabelSet:
    """The teacher's labels of a run's images, dataset and unlabeled pool merged: row
    ``index[image_id]`` of every field of ``labels``. ``labelled`` and ``extra`` keep only the
    images the teacher could read."""

    labels: TeacherOutput
    index: dict[str, int]
    by_id: dict[str, ImageRecord]
    labelled: list[ImageRecord]
    extra: list[ImageRecord]
    skipped: int  # dataset images the teacher could not read
    fingerprint: str  # sha256 of the teacher's fingerprint, as the caches store it

    def rows(self, ids: list[str]) -> torch.Tensor:
        return torch.tensor([self.index[i] for i in ids], dtype=torch.long)


def folder_tag(kind: str, folder: Path) -> str:
    """A cache-folder suffix for an extra image set: its kind and a hash of its absolute path."""
    return f"-{kind}-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]


def label_cache_dir(cfg: RunConfig, run: RunLayout, teacher: TeacherRef, tag: str = "") -> Path:
    """The label cache of this teacher (and image set ``tag``) for the run."""
    base = Path(cfg.teacher.cache) if cfg.teacher.cache else run.labels
    return base / (teacher.sha256[:12] + tag)


def label_records(cfg: RunConfig, cache_dir: Path, records: list[ImageRecord], teacher: TeacherRef,
                  ctx: DistContext, progress: bool) -> LabelCache:
    """Open the cache of this teacher in ``cache_dir``, labelling whatever is missing first."""
    try:
        cache = LabelCache.open(cache_dir, fingerprint=teacher.fingerprint)
        if all(r.image_id in cache or r.relpath in dict(cache.skipped) for r in records):
            return cache
    except CacheError:
        pass
    labeler = Teacher.from_pretrained(teacher.path, device=cfg.teacher.device or ctx.device,
                                      trust_remote_code=cfg.teacher.trust_remote_code,
                                      allow_pickle=cfg.teacher.allow_pickle)
    build_label_cache(records, labeler, cache_dir, batch_size=cfg.teacher.batch_size,
                      progress=progress and ctx.is_main, ctx=ctx)
    del labeler  # a 7B MLLM must leave the GPU before training starts
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    ctx.barrier()
    return LabelCache.open(cache_dir, fingerprint=teacher.fingerprint)


def label_run_images(cfg: RunConfig, run: RunLayout, images: RunImages, teacher: TeacherRef,
                     ctx: DistContext, progress: bool) -> LabelSet:
    """Label the dataset and the unlabeled pool (each its own cache) and merge them."""
    cache = label_records(cfg, label_cache_dir(cfg, run, teacher), images.records, teacher, ctx, progress)
    labels = cache.tensors()
    index = {image_id: row for row, image_id in enumerate(cache.image_ids)}
    extra = images.extra
    if extra:
        extra_dir = label_cache_dir(cfg, run, teacher, folder_tag("unlabeled", images.extra_root))
        extra_cache = label_records(cfg, extra_dir, extra, teacher, ctx, progress)
        index.update({i: len(index) + row for row, i in enumerate(extra_cache.image_ids)})
        labels = TeacherOutput(*(torch.cat([ours, theirs]) for ours, theirs in zip(labels, extra_cache.tensors())))
        extra = [r for r in extra if r.image_id in extra_cache]
    return LabelSet(labels=labels, index=index, by_id={r.image_id: r for r in images.records + extra},
                    labelled=[r for r in images.records if r.image_id in cache], extra=extra,
                    skipped=len(cache.skipped), fingerprint=fingerprint_sha256(cache.fingerprint))
