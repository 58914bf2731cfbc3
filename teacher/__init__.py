"""The teacher: MA-AGIQA (MANIQA + an MLLM's semantic vectors, fused by a gated MoE) as labels.

Where to start::

    from teacher import ImageRecord, LabelCache, Teacher, build_label_cache, read_teacher_config
    teacher = Teacher.from_config(read_teacher_config("my_teacher"), root="my_teacher")
    records = [ImageRecord(p.name, p.resolve(), p.name) for p in sorted(Path("photos").glob("*.jpg"))]
    build_label_cache(records, teacher, "cache/")  # resumable, sharded; datasets: distill.data
    labels = LabelCache.open("cache/")  # scores, gate weights, semantic vectors per image

The modules, one idea each: ``labeler`` (the teacher folder, its views and fingerprint),
``model`` (MA-AGIQA's fusion and its official checkpoints), ``maniqa`` (the quality branch),
``state_dict`` (checkpoint files of any common format as state dicts), ``semantic`` (prompts ->
semantic vectors with any Hugging Face MLLM), ``mplug_owl2`` (the paper's MLLM, ported), the
label cache in three (``cache_schema``: its format and errors, no model code; ``cache``: building
and merging; ``cache_read``: reading), ``records`` (image lists), ``distributed`` (rank, world and
device of a labelling or training job, resolved once), ``tiny_mllm`` (small random MLLMs for tests
and the demo). Names are imported on first use: ``import teacher`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_HOMES = {
    "Teacher": "labeler", "TeacherConfig": "labeler", "TeacherInputs": "labeler",
    "read_teacher_config": "labeler", "save_tiny_teacher": "labeler", "teacher_fingerprint": "labeler",
    "MAAGIQA": "model", "FusionConfig": "model", "TeacherOutput": "cache_schema", "CheckpointError": "model",
    "load_official_checkpoint": "model", "read_state_dict": "state_dict",
    "Maniqa": "maniqa", "ManiqaConfig": "maniqa", "create_maniqa": "maniqa", "load_maniqa_weights": "maniqa",
    "SemanticConfig": "semantic", "SemanticEncoder": "semantic",
    "MplugOwl2": "mplug_owl2", "load_mplug_owl2": "mplug_owl2",
    "LabelCache": "cache_read", "build_label_cache": "cache", "CacheError": "cache_schema",
    "ImageRecord": "records", "iter_images": "records",
    "DistContext": "distributed", "init_distributed": "distributed",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'teacher' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
