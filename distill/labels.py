"""The teacher's labels of a run: where each label set lives, and labelling what is missing.

One sub-folder per teacher (and per extra image set) under the run's ``labels/`` (or
``teacher.cache``): a new teacher never overwrites another teacher's labels. Used by the run's
labelling stage and by ``agiqa-distill evaluate`` (which labels a folder the user names).
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path

import torch
import torch.distributed as dist

from student.layout import RunLayout
from teacher.cache import CacheError, LabelCache, build_label_cache, fingerprint_sha256
from teacher.labeler import Teacher, TeacherConfig, teacher_fingerprint
from teacher.records import ImageRecord

from .config import RunConfig

__all__ = ["label_cache_dir", "label_records", "folder_tag"]


def folder_tag(kind: str, folder: Path) -> str:
    """A cache-folder suffix for an extra image set: its kind and a hash of its absolute path."""
    return f"-{kind}-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]


def label_cache_dir(cfg: RunConfig, run_dir: Path, tcfg: TeacherConfig, teacher_dir: Path, tag: str = "") -> Path:
    """The label cache of this teacher (and image set ``tag``) for the run in ``run_dir``."""
    base = Path(cfg.teacher.cache) if cfg.teacher.cache else RunLayout(run_dir).labels
    return base / (fingerprint_sha256(teacher_fingerprint(tcfg, teacher_dir))[:12] + tag)


def label_records(cfg: RunConfig, cache_dir: Path, records: list[ImageRecord], teacher_dir: Path,
                  tcfg: TeacherConfig, device: torch.device, rank: int, world: int, progress: bool) -> LabelCache:
    """Open the cache of this teacher in ``cache_dir``, labelling whatever is missing first."""
    fingerprint = teacher_fingerprint(tcfg, teacher_dir)
    try:
        cache = LabelCache.open(cache_dir, fingerprint=fingerprint)
        if all(r.image_id in cache or r.relpath in dict(cache.skipped) for r in records):
            return cache
    except CacheError:
        pass
    teacher = Teacher.from_pretrained(teacher_dir, device=cfg.teacher.device or device,
                                      trust_remote_code=cfg.teacher.trust_remote_code,
                                      allow_pickle=cfg.teacher.allow_pickle)
    build_label_cache(records, teacher, cache_dir, batch_size=cfg.teacher.batch_size,
                      progress=progress and rank == 0, rank=rank, world_size=world)
    del teacher  # a 7B MLLM must leave the GPU before training starts
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if dist.is_initialized():
        dist.barrier()
    return LabelCache.open(cache_dir, fingerprint=fingerprint)
