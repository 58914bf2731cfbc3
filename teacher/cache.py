"""Building the teacher's label cache: sharded, resumable, multi-rank labelling, and the merge.

Its format is :mod:`teacher.cache_schema`; :mod:`teacher.cache_read` reads a finished cache.
A run killed at any point resumes: completed shards are verified and kept, the unfinished one is
redone with the same batches, so the result equals an uninterrupted run. Rank ``r`` writes its own
shards and manifest part; rank 0 merges the parts into ``manifest.json``.
"""


from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors
import torch
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from _agiqa.workers import labelling_worker
from edge_runtime.images import ImageLoadError, load_rgb

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
    part_path,
    read_json,
    sha256_hex,
    shard_problem,
)
from .distributed import DistContext
from .records import ImageRecord

__all__ = ["CacheReport", "Labeler", "build_label_cache", "default_workers", "merge_manifests"]



class Labeler(Protocol):
    """The teacher as the cache sees it."""

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description: teacher config, weight hashes, prompts."""
        ...

    def label(self, images: list[np.ndarray]) -> TeacherOutput:
        """``images``: (H, W, 3) uint8 RGB of any sizes. Returns batch-first tensors: score (B,),
        semantic_vectors (B, P, D), quality_features (B, Q), gate_weights (B, E).

        A labeler may also have ``prepare`` (a picklable callable: one image -> its model inputs,
        the CPU part of a label) and ``label_prepared(inputs)`` (``label`` of the images those
        inputs came from); the cache then runs ``prepare`` in its workers."""
        ...


@dataclass
class CacheReport:
    """What one :func:`build_label_cache` call did, for its rank."""

    n_labeled: int  # images of this rank with labels in the cache (kept from before + new)
    n_skipped: int  # images of this rank that could not be decoded
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    seconds: float = 0.0  # wall time of this call
    images_per_s: float = 0.0  # images processed (decoded, then labeled or skipped) by this call per second
    n_reused: int = 0  # images kept from shards completed by an earlier, interrupted run
    rank: int = 0
    world_size: int = 1


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def _check_fingerprints(out: Path, fp_sha: str) -> None:
    parts = sorted(out.glob(PART_GLOB))
    for path in [out / MANIFEST, *parts]:
        if not path.is_file():
            continue
        try:
            theirs = read_json(path).get("fingerprint_sha256")
        except CacheCorruptError:
            if path.name == MANIFEST and parts:
                continue  # a damaged merged manifest is rebuilt from the parts at the end
            raise
        if theirs != fp_sha:
            raise CacheMismatchError(
                f"{out}: built by a different teacher (fingerprint {str(theirs)[:16]} in {path.name}, "
                f"this teacher {fp_sha[:16]}); pass a new --out folder or delete {out}")


def _check_outputs(outputs: Any, n: int) -> dict[str, torch.Tensor]:
    """Validate a labeler's batch output and cast it to the stored dtypes."""
    if not isinstance(outputs, TeacherOutput):
        raise ValueError("labeler.label must return a teacher.cache_schema.TeacherOutput, "
                         f"got {type(outputs).__name__}")
    checked = {}
    for name, (dtype, ndim) in FIELDS.items():
        value = getattr(outputs, name)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"labeler.label returned no tensor for {name!r} (got {type(value).__name__})")
        if value.ndim != ndim or value.shape[0] != n:
            raise ValueError(f"labeler.label returned {name!r} of shape {tuple(value.shape)} for {n} images; "
                             f"expected {ndim} dims with the batch ({n}) first")
        value = value.detach().to("cpu", dtype).contiguous()
        if not torch.isfinite(value).all():
            raise ValueError(f"labeler.label returned non-finite values in {name!r} (stored as {dtype})")
        checked[name] = value
    return checked


def default_workers() -> int:
    """Labelling workers by default: min(4, the CPUs this process may use)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus)


def _identity(item: Any) -> Any:  # DataLoader's collate_fn: keep numpy arrays as they are
    return item


class _Prepared(torch.utils.data.Dataset):
    """Records -> (record, model inputs or None, sha256 of the file or None, skip reason or None).

    The file is read once: hashed, then decoded from the same bytes; ``prepare`` (the labeler's
    picklable per-image CPU work, or none) runs here too, so DataLoader workers do all of it."""

    def __init__(self, records: Sequence[ImageRecord], prepare: Any) -> None:
        self.records, self.prepare = records, prepare

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[ImageRecord, Any, str | None, str | None]:
        record = self.records[index]
        try:
            data = record.path.read_bytes()
        except OSError:
            data = None  # load_rgb names the reason (missing, a folder, ...)
        try:
            image = load_rgb(record.path, data=data)
        except ImageLoadError as exc:
            return record, None, None, exc.reason
        assert data is not None
        return record, image if self.prepare is None else self.prepare(image), sha256_hex(data), None


def _prepared(records: Sequence[ImageRecord], labeler: Labeler, num_workers: int, batch_size: int
              ) -> Iterator[tuple[ImageRecord, Any, str | None, str | None]]:
    """:class:`_Prepared` of ``records`` in order; with ``num_workers`` > 0 in DataLoader worker
    processes that keep about two batches ahead of the model."""
    dataset = _Prepared(records, getattr(labeler, "prepare", None))
    workers = min(num_workers, len(records))
    if workers == 0:
        return (dataset[i] for i in range(len(dataset)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_identity, worker_init_fn=labelling_worker(),
                                         prefetch_factor=max(2, -(-2 * batch_size // workers)))
    return _received_ahead(iter(loader), depth=2 * batch_size)


def _received_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` in order, up to ``depth`` of them taken ahead by one thread. Taking an item from a
    DataLoader worker (reading its pipe, unpickling the arrays) then overlaps the model, while the
    main thread waits for the device (which releases the GIL), instead of following it."""
    end = object()

    def take() -> Any:
        return next(items, end)

    with ThreadPoolExecutor(1, thread_name_prefix="agiqa-label-receive") as pool:
        pending = deque(pool.submit(take) for _ in range(depth))
        try:
            while (item := pending.popleft().result()) is not end:
                pending.append(pool.submit(take))
                yield item
        finally:  # the caller stopped early or failed: take nothing more
            for future in pending:
                future.cancel()


def _label_shard(out: Path, name: str, items: Iterator[tuple[ImageRecord, Any, str | None, str | None]],
                 n: int, labeler: Labeler, batch_size: int, bar: tqdm) -> dict[str, Any]:
    """Label the next ``n`` prepared records of ``items`` in batches; write the shard; return its
    part entry."""
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in FIELDS}
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[ImageRecord, Any, str]] = []
    run = labeler.label_prepared if hasattr(labeler, "prepare") else labeler.label

    def flush() -> None:
        outputs = _check_outputs(run([inputs for _, inputs, _ in pending]), len(pending))
        for key, value in outputs.items():
            if rows[key] and value.shape[1:] != rows[key][0].shape[1:]:
                raise ValueError(f"labeler.label returned {key!r} rows of shape {tuple(value.shape[1:])} "
                                 f"after {tuple(rows[key][0].shape[1:])}; a teacher's shapes must not change")
            rows[key].append(value)
        for record, _, digest in pending:
            images.append({"image_id": record.image_id, "relpath": record.relpath,
                           "row": len(images), "sha256": digest})
        bar.update(len(pending))
        pending.clear()

    for _ in range(n):
        record, inputs, digest, reason = next(items)
        if inputs is None:
            skipped.append({"image_id": record.image_id, "relpath": record.relpath, "reason": reason or "?"})
            bar.update(1)
            continue
        pending.append((record, inputs, digest or ""))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    entry: dict[str, Any] = {"file": None, "sha256": None, "rows": len(images), "fields": None,
                             "images": images, "skipped": skipped}
    if images:
        tensors = {k: torch.cat(v) for k, v in rows.items()}
        # One metadata key: safetensors writes its metadata map in no fixed order.
        data = save_safetensors(tensors, metadata={FORMAT: json.dumps(
            {"image_ids": [i["image_id"] for i in images]})})
        atomic_write_bytes(out / name, data)
        entry.update(file=name, sha256=sha256_hex(data),
                     fields={k: list(t.shape[1:]) for k, t in tensors.items()})
    return entry


def build_label_cache(records: Sequence[ImageRecord], labeler: Labeler, out_dir: str | Path, *,
                      batch_size: int = 8, shard_size: int = 64, progress: bool = True,
                      ctx: DistContext | None = None, num_workers: int | None = None) -> CacheReport:
    """Label ``records`` with ``labeler`` into the cache folder ``out_dir``; resumes a killed run.

    Rank ``r`` of ``world_size`` (``ctx``; default :meth:`DistContext.from_env`) labels
    ``sorted(records)[r::world_size]`` into its own shards of ``shard_size`` images (a multiple
    of ``batch_size``, so batches are identical on resume) and its manifest part. When every
    rank has finished (after a barrier if a process group is initialised), rank 0 merges the
    parts into ``manifest.json``.

    ``num_workers`` processes (default :func:`default_workers`; 0 = this process) read, hash and
    decode the files and, for a labeler with a ``prepare`` (e.g. :class:`teacher.labeler.Teacher`:
    both views), prepare the model inputs, a few batches ahead of the model, which then runs
    ``label_prepared`` on them; the labels are the same whatever the number.

    Raises:
        CacheMismatchError: ``out_dir`` holds labels of a different teacher or dataset plan.
        ValueError: bad sizes, duplicate image ids, or a labeler output of the wrong form.
    """
    if batch_size < 1 or shard_size < 1 or shard_size % batch_size:
        raise ValueError(f"shard_size={shard_size} must be a positive multiple of batch_size={batch_size}")
    ctx = ctx or DistContext.from_env()
    rank, world_size = ctx.rank, ctx.world
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = labeler.fingerprint()
    fp_sha = fingerprint_sha256(fingerprint)
    _check_fingerprints(out, fp_sha)
    ordered = sorted(records, key=lambda r: r.image_id)
    if len({r.image_id for r in ordered}) != len(ordered):
        raise ValueError("build_label_cache: duplicate image ids in records; load them with load_records")
    mine = ordered[rank::world_size]
    plan = {"n_total": len(ordered), "n_records": len(mine), "batch_size": batch_size, "shard_size": shard_size,
            "ids_sha256": sha256_hex(json.dumps([r.image_id for r in mine]).encode())}
    my_part = part_path(out, rank, world_size)
    old = read_json(my_part) if my_part.is_file() else {"plan": plan, "shards": {}}
    if old["plan"] != plan:
        raise CacheMismatchError(f"{my_part}: started for a different dataset or batch/shard size "
                                 f"({old['plan']['n_records']} images, shard {old['plan']['shard_size']}); "
                                 f"pass a new --out folder or delete {out}")
    shards: dict[str, dict[str, Any]] = {}
    for key, entry in old["shards"].items():
        problem = shard_problem(out, entry) if entry["file"] else None
        if problem:
            warnings.warn(f"{out / entry['file']}: {problem}; labeling its {entry['rows']} images again",
                          CacheCorruptWarning, stacklevel=2)
        else:
            shards[key] = entry
    chunks = [mine[i:i + shard_size] for i in range(0, len(mine), shard_size)]
    part = {"format": FORMAT, "format_version": FORMAT_VERSION, "rank": rank, "world_size": world_size,
            "fingerprint": fingerprint, "fingerprint_sha256": fp_sha, "versions": _versions(),
            "plan": plan, "complete": False, "shards": shards}
    todo = [i for i in range(len(chunks)) if str(i) not in shards]
    if todo:
        (out / MANIFEST).unlink(missing_ok=True)  # stale from here on; rewritten by the merge
    atomic_write_json(my_part, part)
    n_reused = sum(len(e["images"]) + len(e["skipped"]) for e in shards.values())
    start = time.perf_counter()
    workers = default_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers={workers} must be >= 0 (0: prepare the images in this process)")
    # One stream over every shard still to do: the workers start once and run across shard ends.
    items = _prepared([r for i in todo for r in chunks[i]], labeler, workers, batch_size)
    with tqdm(total=len(mine), initial=n_reused, unit="img", desc=f"labeling (rank {rank}/{world_size})",
              disable=not progress, dynamic_ncols=True) as bar:
        for index in todo:
            name = f"labels-r{rank:03d}-{index:05d}.safetensors"
            shards[str(index)] = _label_shard(out, name, items, len(chunks[index]), labeler, batch_size, bar)
            atomic_write_json(my_part, part)  # progress survives a kill from here on
    del items  # the workers stop
    seconds = time.perf_counter() - start
    part["complete"] = True
    atomic_write_json(my_part, part)

    ctx.barrier()
    if ctx.is_main:
        if _unfinished_ranks(out, world_size):
            print(f"{out}: other ranks are still labeling; run merge_manifests('{out}') once they finish")
        else:
            merge_manifests(out)
    ctx.barrier()  # every rank returns with manifest.json in place
    entries = [shards[str(i)] for i in range(len(chunks))]
    skipped = [(s["relpath"], s["reason"]) for e in entries for s in e["skipped"]]
    n_labeled = sum(len(e["images"]) for e in entries)
    n_new = len(mine) - n_reused
    reasons = "; ".join(f"{n}x {why}" for why, n in Counter(r for _, r in skipped).most_common())
    print(f"label cache {out} (rank {rank}/{world_size}): labelled {n_labeled} ({n_reused} kept from "
          f"an earlier run), skipped {len(skipped)}" + (f" [{reasons}]" if reasons else ""))
    return CacheReport(n_labeled, len(skipped), skipped, seconds, n_new / seconds if seconds > 0 else 0.0,
                       n_reused, rank, world_size)


def _unfinished_ranks(out: Path, world_size: int) -> list[int]:
    return [r for r in range(world_size) if not (p := part_path(out, r, world_size)).is_file()
            or not read_json(p).get("complete")]


def merge_manifests(out_dir: str | Path, *, verify: bool = True) -> Path:
    """Merge the finished per-rank manifest parts of ``out_dir`` into ``manifest.json``.

    ``verify`` checks every shard's sha256 first. Returns the manifest path.
    """
    out = Path(out_dir)
    parts = [read_json(p) for p in sorted(out.glob(PART_GLOB))]
    if not parts:
        raise CacheMissingError(f"{out}: no manifest parts to merge: the cache is missing or unfinished; "
                                f"build it with `{BUILD_COMMAND}`")
    worlds = sorted({p["world_size"] for p in parts})
    if len(worlds) > 1:
        raise CacheError(f"{out}: holds parts of runs with world sizes {worlds}; delete the folder and "
                         f"relabel with one world size")
    world_size = worlds[0]
    unfinished = _unfinished_ranks(out, world_size)
    if unfinished:
        raise CacheError(f"{out}: ranks {unfinished} of {world_size} have not finished; rerun the labeling "
                         f"for them (it resumes), then merge")
    if len({p["fingerprint_sha256"] for p in parts}) > 1:
        raise CacheMismatchError(f"{out}: ranks were labeled by different teachers; delete {out} and relabel")
    by_rank = {p["rank"]: p for p in parts}
    images, skipped, shards, fields = [], [], {}, None
    for rank in range(world_size):
        part = by_rank[rank]
        for key in sorted(part["shards"], key=int):
            entry = part["shards"][key]
            skipped.extend(entry["skipped"])
            if not entry["file"]:
                continue
            problem = shard_problem(out, entry) if verify else None
            if problem:
                raise CacheCorruptError(f"{out / entry['file']}: {problem}; rerun the label command with the "
                                        f"same --out to relabel it")
            if fields is not None and entry["fields"] != fields:
                raise CacheError(f"{out / entry['file']}: tensor shapes {entry['fields']} differ from {fields}; "
                                 f"delete {out} and relabel")
            fields = entry["fields"]
            shards[entry["file"]] = {"sha256": entry["sha256"], "rows": entry["rows"], "rank": rank}
            images.extend({**image, "shard": entry["file"]} for image in entry["images"])
    images.sort(key=lambda i: i["image_id"])
    skipped.sort(key=lambda s: s["image_id"])
    first = by_rank[0]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "fingerprint": first["fingerprint"], "fingerprint_sha256": first["fingerprint_sha256"],
        "versions": first["versions"], "world_size": world_size,
        "batch_size": first["plan"]["batch_size"], "shard_size": first["plan"]["shard_size"],
        "fields": {k: {"dtype": str(dtype).removeprefix("torch."), "shape": (fields or {}).get(k)}
                   for k, (dtype, _) in FIELDS.items()},
        "n_images": len(images), "n_skipped": len(skipped),
        "images": images, "skipped": skipped, "shards": shards,
    }
    return atomic_write_json(out / MANIFEST, manifest)
