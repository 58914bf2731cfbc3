"""``agiqa-distill run``: label (if needed) -> compress -> distil -> evaluate -> report.

Run folder::

    config.json          the resolved RunConfig
    splits.json          image ids per split (seeded); data_index.json: absolute paths per split
    labels/<fp12>/       label cache of this teacher (unless teacher.cache points elsewhere)
    checkpoint/          resumable training state (safetensors + JSON)
    student/best, last   students (safetensors + config.json + compression.safetensors)
    metrics.jsonl        per step and per epoch; metrics.json: final held-out metrics
    plots/*.png          loss curves, student vs teacher, student vs MOS
    MODEL_CARD.md
"""

from __future__ import annotations

import gc
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from edge_runtime.atomic import atomic_write_json, atomic_write_text
from student.compression import LinearCompression, save_compressions
from student.model import StudentConfig, StudentIQA, student_config
from teacher.cache import CacheError, LabelCache, build_label_cache, fingerprint_sha256
from teacher.data import DatasetSpec, ImageRecord, load_records, save_splits, split_records
from teacher.labeler import (Teacher, TeacherConfig, read_teacher_config, save_tiny_teacher,
                             teacher_fingerprint)

from .config import RunConfig
from .demo import make_demo_images
from .report import write_model_card, write_plots
from .train import ImageSet, Split, evaluate, predict, read_checkpoint_meta, train

__all__ = ["run_distillation", "RunResult"]

DEMO_NOTICE = ("This is a PIPELINE DEMO: the teacher is a tiny network with RANDOM weights, so its "
               "scores say nothing about image quality; the figures show how faithfully the student "
               "copies a teacher. For real use, fill in configs/agiqa3k.yaml (MA-AGIQA checkpoint, "
               "mPLUG-Owl2 folder, dataset root) and run: agiqa-distill run --config configs/agiqa3k.yaml")


class RunResult(dict):
    """The final metrics dict (as written to ``metrics.json``) with ``run_dir``."""


def _init_distributed(device_pref: str | None) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = (device_pref or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if wants_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _dataset_spec(cfg: RunConfig, run_dir: Path) -> DatasetSpec:
    if cfg.is_demo:
        root = Path(cfg.data.root) if cfg.data.root else run_dir / "demo_images"
        return DatasetSpec(kind="folder", root=str(root))
    if not cfg.data.root:
        raise ValueError(f"data.root is not set for data.kind={cfg.data.kind!r}; set it in the config "
                         "or with --set data.root=/path/to/dataset")
    return DatasetSpec(kind=cfg.data.kind, root=cfg.data.root, annotations=cfg.data.annotations,
                       mos_column=cfg.data.mos_column, image_column=cfg.data.image_column)


def _teacher_dir(cfg: RunConfig, run_dir: Path, rank: int) -> Path:
    if cfg.teacher.path:
        return Path(cfg.teacher.path)
    if not cfg.is_demo:
        raise ValueError("teacher.path is not set; point it at a teacher folder with teacher.json "
                         "(see configs/agiqa3k.yaml), or use data.kind=demo for the tiny random teacher")
    path = run_dir / "tiny_teacher"
    if rank == 0 and not (path / "teacher.json").is_file():
        save_tiny_teacher(path, seed=cfg.train.seed)
    _barrier()
    return path


def _label(cfg: RunConfig, run_dir: Path, records: list[ImageRecord], teacher_dir: Path,
           tcfg: TeacherConfig, device: torch.device, rank: int, world: int) -> LabelCache:
    """Open the cache of this teacher, labelling whatever is missing first."""
    fingerprint = teacher_fingerprint(tcfg, teacher_dir)
    base = Path(cfg.teacher.cache) if cfg.teacher.cache else run_dir / "labels"
    # One sub-folder per teacher: a new teacher never overwrites another teacher's labels.
    cache_dir = base / fingerprint_sha256(fingerprint)[:12]
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
                      progress=rank == 0, rank=rank, world_size=world)
    del teacher  # a 7B MLLM must leave the GPU before training starts
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _barrier()
    return LabelCache.open(cache_dir, fingerprint=fingerprint)


def _split(ids: list[str], records: dict[str, ImageRecord], tensors: dict[str, torch.Tensor],
           index: dict[str, int], comps: dict[str, LinearCompression], spec, preload: bool) -> Split:
    rows = torch.tensor([index[i] for i in ids], dtype=torch.long)
    semantic = tensors["semantic_vectors"][rows].float()
    targets = {
        "score": tensors["score"][rows].float(),
        "mos": torch.tensor([np.nan if records[i].mos is None else records[i].mos for i in ids],
                            dtype=torch.float32),
        "semantic": torch.stack([comps[f"semantic{s}"].encode(semantic[:, s])
                                 for s in range(semantic.shape[1])], dim=1),
        "quality": comps["quality"].encode(tensors["quality_features"][rows].float()),
        "gate": tensors["gate_weights"][rows].float(),
    }
    return Split(ids, ImageSet([str(records[i].path) for i in ids], spec, preload), targets)


def _with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """A copy whose folders are absolute, so the saved config.json resumes from any folder
    (``data.annotations`` stays as given: a relative one is looked up in the dataset root first)."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    return replace(cfg, out_dir=absolute(cfg.out_dir), data=replace(cfg.data, root=absolute(cfg.data.root)),
                   teacher=replace(cfg.teacher, path=absolute(cfg.teacher.path), cache=absolute(cfg.teacher.cache)))


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; a line cut short by a kill counts as after any step."""
    try:
        return json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return float("inf")


def run_distillation(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> RunResult:
    """The whole job. With ``resume`` the run folder's saved config and checkpoint are used."""
    cfg = _with_absolute_paths(cfg)
    run_dir = Path(cfg.out_dir)
    # Read a damaged checkpoint now, not after hours of labelling.
    ckpt_state = run_dir / "checkpoint" / "state.json"
    resume_step = read_checkpoint_meta(ckpt_state.parent)["step"] if resume and ckpt_state.is_file() else 0
    rank, world, device = _init_distributed(cfg.train.device)
    if cfg.train.device:
        device = torch.device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        if cfg.is_demo:
            print(DEMO_NOTICE, flush=True)
            if not cfg.data.root:
                make_demo_images(run_dir / "demo_images", count=cfg.data.demo_images, seed=cfg.train.seed)
    _barrier()
    started = time.time()

    # 1. data and splits (deterministic for the seed, saved with the run)
    records = load_records(_dataset_spec(cfg, run_dir))
    teacher_dir = _teacher_dir(cfg, run_dir, rank)
    tcfg = read_teacher_config(teacher_dir)
    cache = _label(cfg, run_dir, records, teacher_dir, tcfg, device, rank, world)
    by_id = {r.image_id: r for r in records}
    labelled = [r for r in records if r.image_id in cache]
    splits = split_records(labelled, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed)
    if rank == 0:
        save_splits(run_dir / "splits.json", splits, cfg.data.split_seed)
        atomic_write_json(run_dir / "data_index.json", {"splits": {
            name: [str(by_id[i].path) for i in ids] for name, ids in splits.items()}})

    # 2. compression of the teacher's wide vectors, fitted on the train split only
    tensors = cache.tensors()
    index = {image_id: row for row, image_id in enumerate(cache.image_ids)}
    train_rows = torch.tensor([index[i] for i in splits["train"]])
    semantic = tensors["semantic_vectors"][train_rows].float()
    comps = {f"semantic{s}": LinearCompression.fit(semantic[:, s], cfg.loss.semantic_components)
             for s in range(semantic.shape[1])}
    comps["quality"] = LinearCompression.fit(tensors["quality_features"][train_rows].float(),
                                             cfg.loss.quality_components)

    # 3. the student, sized to the compressed streams, its score head started at the teacher's mean
    scfg: StudentConfig = replace(student_config(cfg.student.variant), **cfg.student.overrides)
    train_scores = tensors["score"][train_rows].float()
    scfg = replace(scfg, num_semantic=semantic.shape[1], semantic_dim=comps["semantic0"].dim,
                   quality_dim=comps["quality"].dim, score_range=tcfg.score_range)
    torch.manual_seed(cfg.train.seed)
    student = StudentIQA(scfg)
    score_std = float(train_scores.std()) if len(train_scores) > 1 else 1.0
    with torch.no_grad():
        student.score_head.weight.mul_(score_std)
        student.score_head.bias.fill_(float(train_scores.mean()))
    preload = cfg.data.num_workers == 0
    parts = {name: _split(ids, by_id, tensors, index, comps, scfg.preprocess, preload)
             for name, ids in splits.items()}
    fingerprints = {"teacher_fingerprint": fingerprint_sha256(cache.fingerprint),
                    "teacher_config": tcfg.to_dict()}

    def save_student(model: StudentIQA, which: str) -> None:
        directory = run_dir / "student" / which
        model.save_pretrained(directory, extra={**fingerprints, "run_config": cfg.to_dict()})
        save_compressions(directory, comps)

    # 4. distil (metrics.jsonl keeps only records up to the checkpoint we resume from)
    metrics_path = run_dir / "metrics.jsonl"
    if rank == 0:
        kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.is_file() else [])
                if resume_step and _logged_step(line) <= resume_step]
        atomic_write_text(metrics_path, "".join(k + "\n" for k in kept))
    log_file = open(metrics_path, "a") if rank == 0 else None

    def log(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    try:
        state = train(cfg, run_dir, student, parts["train"], parts["val"], score_std=score_std,
                      device=device, resume=resume, save_student=save_student, log=log, progress=progress)
    finally:
        if log_file:
            log_file.close()
    _barrier()

    # 5. held-out evaluation of the best student, plots and the model card
    result = RunResult(run_dir=str(run_dir))
    if rank == 0:
        best = StudentIQA.from_pretrained(run_dir / "student" / "best").to(device)
        test = parts["test"]
        metrics = evaluate(best, test, device)
        mos = test.targets["mos"].numpy()
        from .metrics import iqa_metrics

        teacher_vs_mos = iqa_metrics(test.targets["score"].numpy(), mos) if np.isfinite(mos).sum() >= 3 else None
        result.update({
            "test": metrics, "teacher_vs_mos": teacher_vs_mos, "best_step": state.best_step,
            "best_val_srcc": state.best_val_srcc, "steps": state.step,
            "images": {k: len(v) for k, v in splits.items()},
            "skipped_images": len(cache.skipped), "seconds": time.time() - started,
            "student": {"variant": cfg.student.variant, "backbone": scfg.backbone,
                        "params": sum(p.numel() for p in best.parameters())},
            "demo": cfg.is_demo, "teacher_fingerprint": fingerprints["teacher_fingerprint"],
        })
        atomic_write_json(run_dir / "metrics.json", dict(result))
        predictions = predict(best, test.images, device)
        write_plots(run_dir, metrics_path, predictions["score"].numpy(), test.targets)
        write_model_card(run_dir, cfg, dict(result), DEMO_NOTICE if cfg.is_demo else None)
    _barrier()
    if dist.is_initialized():
        dist.destroy_process_group()
    return result
