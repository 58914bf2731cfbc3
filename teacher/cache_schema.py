"""The label cache's schema: what a cache folder holds, its field dtypes, names and errors.

No model code (no MANIQA, timm or transformers): a reader of labels needs only this and torch.
The cache is built and merged by :mod:`teacher.cache` and read by :mod:`teacher.cache_read`.

Layout of a cache folder::

    labels-r000-00000.safetensors      shard 0 of rank 0: rows of every ``TeacherOutput`` field, under
                                       its name: score (N,) float32, semantic_vectors (N, P, D)
                                       float16, quality_features (N, Q) float32, gate_weights (N, E) float32
    manifest.part-000-of-001.json      rank 0's progress, rewritten after every shard
    manifest.json                      the merged manifest, written once every rank has finished

``manifest.json`` holds the teacher fingerprint (dict and sha256), library versions, every image
(image_id, relpath, shard, row, sha256 of the file bytes), the skipped images with reasons and
every shard's sha256. A run killed at any point resumes: completed shards are verified and kept,
the unfinished one is redone with the same batches, so the result equals an uninterrupted run.
A damaged or lost ``manifest.json`` is merged again from the finished parts and their verified
shards, never relabelled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

__all__ = ["BUILD_COMMAND", "FIELDS", "FORMAT", "FORMAT_VERSION", "MANIFEST", "PART_GLOB", "CacheCorruptError",
           "CacheCorruptWarning", "CacheError", "CacheMismatchError", "CacheMissingError", "TeacherOutput",
           "fingerprint_sha256", "part_path", "read_json", "sha256_hex", "shard_problem"]


class TeacherOutput(NamedTuple):
    """The teacher's labels: the one schema, and the one set of names, from the teacher to the losses.

    :meth:`MAAGIQA.forward` and ``Teacher.label`` return it; the label cache stores each field as a
    safetensors tensor under the field's name (``FIELDS`` below gives the stored dtypes)
    and ``LabelCache.tensors``/``get`` return it; the distiller's targets hold it, with the two
    vector fields in the student's compressed space; the student's ``StudentOutput`` predicts the
    same fields under the same names.
    """

    score: torch.Tensor  # (B,) predicted MOS
    semantic_vectors: torch.Tensor  # (B, S, D) the MLLM vectors the fusion consumed
    quality_features: torch.Tensor  # (B, 784) MANIQA per-patch score x weight
    gate_weights: torch.Tensor  # (B, E) gate over [semantic..., quality] experts (raw: no softmax officially)


FORMAT = "agiqa-edge/label-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Stored dtype and number of dims (batch dim included) of every TeacherOutput field, in field
# order; a field's safetensors key is its name.
FIELDS: dict[str, tuple[torch.dtype, int]] = {
    "score": (torch.float32, 1),  # (B,) teacher quality score
    "semantic_vectors": (torch.float16, 3),  # (B, P, D) MLLM semantic features, one per prompt
    "quality_features": (torch.float32, 2),  # (B, Q) MANIQA quality features
    "gate_weights": (torch.float32, 2),  # (B, E) MoE gate weights
}
BUILD_COMMAND = "agiqa-distill label DATASET --out DIR"
PART_GLOB = "manifest.part-*-of-*.json"


class CacheError(RuntimeError):
    """A label cache cannot be used. The message is one line: the folder or file, and the fix."""


class CacheMissingError(CacheError, FileNotFoundError):
    """No finished cache at that folder."""


class CacheMismatchError(CacheError):
    """The cache was built by a different teacher (fingerprint) or for a different plan."""


class CacheCorruptError(CacheError):
    """A shard or manifest is damaged (hash mismatch, truncated, unreadable)."""


class CacheCorruptWarning(UserWarning):
    """A damaged shard found while resuming; its images are labeled again."""


def fingerprint_sha256(fingerprint: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a teacher fingerprint."""
    if not isinstance(fingerprint, dict):
        raise ValueError(f"labeler fingerprint must be a dict, got {type(fingerprint).__name__}")
    try:
        text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"labeler fingerprint is not JSON-serialisable ({exc}); use str/int/float/list/dict") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data`` (shards and image files are named by it in the manifest)."""
    return hashlib.sha256(data).hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    """A manifest (or part) as a dict; :class:`CacheCorruptError` in one line when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheCorruptError(f"{path}: unreadable ({exc}); delete {path.parent} and relabel "
                                f"with `{BUILD_COMMAND}`") from None
    if not isinstance(data, dict):
        raise CacheCorruptError(f"{path}: not a JSON object; delete {path.parent} and relabel "
                                f"with `{BUILD_COMMAND}`")
    return data


def part_path(out: Path, rank: int, world_size: int) -> Path:
    """Rank ``rank``'s progress manifest in the cache folder ``out``."""
    return out / f"manifest.part-{rank:03d}-of-{world_size:03d}.json"


def shard_problem(out: Path, entry: dict[str, Any]) -> str | None:
    """Why a shard on disk does not match its manifest entry, or None when it does."""
    path = out / entry["file"]
    if not path.is_file():
        return "shard file is missing"
    actual = sha256_hex(path.read_bytes())
    if actual != entry["sha256"]:
        return (f"content hash {actual[:16]} does not match the manifest's {entry['sha256'][:16]} "
                f"(truncated or modified)")
    return None
