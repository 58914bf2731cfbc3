"""Reading a finished label cache: :class:`LabelCache` (verified shards, rows by image id).

Its format is :mod:`teacher.cache_schema`; a damaged or lost ``manifest.json`` is merged again
from the finished part manifests by :func:`teacher.cache.merge_manifests`, never relabelled.
"""

from __future__ import annotations

import warnings
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from .cache import merge_manifests
from .cache_schema import (
    BUILD_COMMAND,
    FIELDS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PART_GLOB,
    CacheCorruptError,
    CacheCorruptWarning,
    CacheError,
    CacheMismatchError,
    CacheMissingError,
    TeacherOutput,
    fingerprint_sha256,
    read_json,
    sha256_hex,
)

__all__ = ["LabelCache"]


def _rebuild_manifest(out: Path, problem: str, error: CacheError) -> dict[str, Any]:
    """``manifest.json`` merged again from finished part manifests and their verified shards
    (labelling a dataset with a 7B teacher takes hours; the merge takes seconds). Raises
    ``error`` when the parts cannot give it (unfinished, damaged or absent)."""
    try:
        path = merge_manifests(out)  # checks that every rank finished and every shard's sha256
    except (CacheError, KeyError, TypeError):
        raise error from None
    warnings.warn(f"{path}: was {problem}; rebuilt it from the part manifests and their verified shards",
                  CacheCorruptWarning, stacklevel=3)
    return read_json(path)


class LabelCache:
    """A finished label cache, loaded in memory. Build one with :meth:`open`."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any], tensors: TeacherOutput) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.image_ids: list[str] = [i["image_id"] for i in manifest["images"]]
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._tensors = tensors

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.manifest["fingerprint"]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(relpath, reason) of every image the teacher could not decode."""
        return [(s["relpath"], s["reason"]) for s in self.manifest["skipped"]]

    @classmethod
    def open(cls, out_dir: str | Path, *, fingerprint: dict[str, Any] | str | None = None,
             verify: bool = True) -> LabelCache:
        """Load the cache in ``out_dir``. ``fingerprint`` (dict or its sha256) must match the teacher
        that built it; ``verify`` checks every shard's sha256.

        Raises:
            CacheMissingError: no ``manifest.json`` (never built, or unfinished).
            CacheMismatchError: built by a different teacher than ``fingerprint``.
            CacheCorruptError: a shard is missing, modified, truncated or unreadable.
        """
        out = Path(out_dir)
        path = out / MANIFEST
        if not path.is_file():
            n_parts = len(list(out.glob(PART_GLOB))) if out.is_dir() else 0
            hint = (f" ({n_parts} rank parts found: rerun the same label command to finish, or "
                    f"merge_manifests)" if n_parts else "")
            missing = CacheMissingError(f"{out}: no {MANIFEST}: the label cache is missing or unfinished"
                                        f"{hint}; build it with `{BUILD_COMMAND}`")
            manifest = _rebuild_manifest(out, "missing", missing)
        else:
            try:
                manifest = read_json(path)
            except CacheCorruptError as exc:
                manifest = _rebuild_manifest(out, "unreadable", exc)
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{path}: not a label cache of format {FORMAT} v{FORMAT_VERSION}; relabel "
                             f"with `{BUILD_COMMAND}`")
        if fingerprint is not None:
            expected = fingerprint if isinstance(fingerprint, str) else fingerprint_sha256(fingerprint)
            if expected != manifest["fingerprint_sha256"]:
                raise CacheMismatchError(
                    f"{out}: built by a different teacher (fingerprint {manifest['fingerprint_sha256'][:16]}, "
                    f"expected {expected[:16]}); pass a new --out folder or delete {out} and relabel")
        fix = f"rerun the label command with --out {out} to relabel it"
        loaded: dict[str, dict[str, torch.Tensor]] = {}
        for name, info in sorted(manifest["shards"].items()):
            shard = out / name
            if not shard.is_file():
                raise CacheCorruptError(f"{shard}: shard file is missing; {fix}")
            data = shard.read_bytes()
            if verify and sha256_hex(data) != info["sha256"]:
                raise CacheCorruptError(f"{shard}: content hash does not match the manifest (truncated or "
                                        f"modified); {fix}")
            try:
                tensors = load_safetensors(data)
            except Exception as exc:  # safetensors raises its own SafetensorError and others
                raise CacheCorruptError(f"{shard}: unreadable safetensors ({exc}); {fix}") from None
            bad = [k for k in FIELDS if k not in tensors or tensors[k].shape[0] != info["rows"]]
            if bad:
                raise CacheCorruptError(f"{shard}: tensors {bad} missing or not {info['rows']} rows; {fix}")
            loaded[name] = tensors
        return cls(out, manifest, _gather(manifest, loaded))

    def tensors(self) -> TeacherOutput:
        """All labels stacked in ``image_ids`` order: score (N,) float32, semantic_vectors (N, P, D)
        float16, quality_features (N, Q) float32, gate_weights (N, E) float32. Shared, not copied."""
        return self._tensors

    def get(self, image_id: str) -> TeacherOutput:
        """One image's labels: score (), semantic_vectors (P, D), quality_features (Q,), gate_weights (E,)."""
        if image_id not in self._index:
            raise KeyError(f"{image_id!r} is not in the label cache {self.out_dir} (skipped, or not in "
                           f"the labeled dataset)")
        i = self._index[image_id]
        return TeacherOutput(*(v[i] for v in self._tensors))

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index


def _gather(manifest: dict[str, Any], loaded: dict[str, dict[str, torch.Tensor]]) -> TeacherOutput:
    """Stack the shards' rows in the manifest's image order."""
    names = sorted(loaded)
    starts = dict(zip(names, accumulate([0] + [manifest["shards"][n]["rows"] for n in names])))
    bad = [i["image_id"] for i in manifest["images"]
           if i["shard"] not in starts or not 0 <= i["row"] < manifest["shards"][i["shard"]]["rows"]]
    if bad:
        raise CacheCorruptError(f"{bad[0]}: its shard row does not "
                                f"exist ({len(bad)} images); delete the cache and relabel with `{BUILD_COMMAND}`")
    index = torch.tensor([starts[i["shard"]] + i["row"] for i in manifest["images"]], dtype=torch.long)
    return TeacherOutput(**{key: torch.cat([loaded[n][key] for n in names]).index_select(0, index) if names
                            else torch.empty((0,) * ndim, dtype=dtype) for key, (dtype, ndim) in FIELDS.items()})
