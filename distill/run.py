"""``agiqa-distill run``: images -> teacher -> label -> distil -> evaluate -> report.

The demo (no arguments) generates its images with a ground-truth MOS (:mod:`distill.demo`),
trains its tiny MA-AGIQA teacher on the train split with :func:`distill.teacher_train.train_teacher`
(the code ``agiqa-distill train-teacher`` runs), then labels, distils and evaluates like a real run.

The run folder's layout is :class:`student.layout.RunLayout` (its module docstring lists it);
the demo's trained teacher is complete once ``teacher/train_metrics.json`` exists.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from _agiqa.atomic import atomic_write_json, atomic_write_text
from student.layout import BEST, RunLayout, write_data_index
from student.model import StudentConfig, StudentIQA, student_config
from teacher.cache import fingerprint_sha256
from teacher.labeler import (
    TEACHER_CONFIG_NAME,
    read_teacher_config,
    save_tiny_teacher,
)
from teacher.model import TeacherOutput
from teacher.records import ImageRecord

from .compression import LinearCompression, save_compressions
from .config import RunConfig, load_resume_config
from .data import DatasetSpec, dataset_spec_for, load_records, save_splits, split_records
from .demo import MOS_FILE, make_demo_images
from .labels import folder_tag, label_cache_dir, label_records
from .losses import DistillTargets
from .metrics import iqa_metrics
from .report import display_path, write_model_card, write_plots, write_scatter
from .teacher_train import TRAINED_MARKER, train_teacher
from .train import CHECKPOINT_META, ImageSet, Split, predict, read_checkpoint_meta, train

__all__ = ["run_distillation", "resume_distillation", "RunResult", "unlabeled_holdout"]

DEMO_NOTICE = ("This is a DEMO on generated images: three photographs and procedural scenes, degraded (blur, "
               "noise, JPEG, scrambled tiles) with a MOS derived from the degradation. Its teacher is a tiny MA-AGIQA "
               "trained here for two minutes on the train split, not the paper's model. For real use, fill in "
               "configs/agiqa3k.yaml (MA-AGIQA checkpoint, mPLUG-Owl2 folder, dataset root) and run: "
               "agiqa-distill run --config configs/agiqa3k.yaml")
UNLABELED_PREFIX = "unlabeled/"  # image ids of data.unlabeled never collide with the dataset's
HOLDOUT = "unlabeled_holdout"  # the part of the unlabeled pool evaluated on, never trained on


@dataclass
class RunResult:
    """What :func:`run_distillation` returns. On rank 0 (and in a single process) every field
    but ``model_card``/``plots`` is also written to ``metrics.json``; on the other ranks of a
    ``torchrun`` job only ``run_dir`` is set and the rest stays None (see :attr:`evaluated`)."""

    run_dir: str
    # Held-out test split, best checkpoint: {"vs_teacher": iqa_metrics, "vs_mos": iqa_metrics}
    # ("vs_mos" only when the test split has MOS); iqa_metrics = {"srcc", "krcc", "plcc", "rmse", "n"}.
    test: dict[str, dict[str, float]] | None = None
    teacher_vs_mos: dict[str, float] | None = None  # None when the test split has no MOS
    # data.unlabeled_holdout of the unlabeled pool, never trained on: {"images": folder, "n",
    # "vs_teacher": iqa_metrics}; None without unlabeled images
    unlabeled_holdout: dict[str, Any] | None = None
    best_step: int | None = None
    best_val_srcc: float | None = None
    steps: int | None = None
    images: dict[str, int] | None = None  # per split, "unlabeled" (trained on) and "unlabeled_holdout"
    skipped_images: int | None = None  # images the teacher could not read
    seconds: float | None = None  # wall time of the whole run
    student: dict[str, Any] | None = None  # {"variant", "backbone", "params"}
    demo: bool | None = None
    teacher_fingerprint: str | None = None
    lower_better: bool | None = None
    model_card: str | None = None
    plots: list[str] | None = None

    @property
    def evaluated(self) -> bool:
        """True on the process that evaluated and reported (rank 0)."""
        return self.test is not None

    def metrics(self) -> dict[str, Any]:
        """The fields written to ``metrics.json`` (all but ``model_card`` and ``plots``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model_card", "plots")}


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


def _say(text: str) -> None:
    """One line per phase on rank 0 (progress bars are separate and optional)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(text, flush=True)


def _dataset_spec(cfg: RunConfig, run_dir: Path) -> DatasetSpec:
    if cfg.is_demo:
        root = Path(cfg.data.root) if cfg.data.root else RunLayout(run_dir).demo_images
        if (root / MOS_FILE).is_file():  # generated by distill.demo: MOS from the degradation
            return DatasetSpec(kind="csv", root=str(root), annotations=str(root / MOS_FILE))
        return DatasetSpec(kind="folder", root=str(root))
    if not cfg.data.root:
        raise ValueError(f"data.root is not set for data.kind={cfg.data.kind!r}; set it in the config "
                         "or with --set data.root=/path/to/dataset")
    return DatasetSpec(kind=cfg.data.kind, root=cfg.data.root, annotations=cfg.data.annotations,
                       mos_column=cfg.data.mos_column, image_column=cfg.data.image_column)


def _unlabeled_records(cfg: RunConfig, run_dir: Path) -> tuple[list[ImageRecord], Path | None]:
    """``data.unlabeled`` (or the demo's extra views) as records with prefixed ids and no MOS:
    distillation data the teacher labels; any MOS they carry is not used."""
    if cfg.data.unlabeled:
        spec = dataset_spec_for(cfg.data.unlabeled, cfg.data.unlabeled_kind)
    elif cfg.is_demo and cfg.data.demo_unlabeled > 0:
        spec = DatasetSpec(kind="folder", root=str(RunLayout(run_dir).demo_unlabeled))
    else:
        return [], None
    records = [ImageRecord(UNLABELED_PREFIX + r.image_id, r.path, UNLABELED_PREFIX + r.relpath)
               for r in load_records(spec)]
    return records, Path(spec.root)


def _train_demo_teacher(cfg: RunConfig, run_dir: Path, records: list[ImageRecord], device: torch.device,
                        rank: int, world: int, progress: bool) -> Path:
    """The demo's teacher folder: the tiny MA-AGIQA trained on the train split against the demo
    MOS by ``train_teacher``, once; a re-run finds ``teacher/train_metrics.json`` and reuses it."""
    run = RunLayout(run_dir)
    trained, init = run.teacher, run.teacher_init
    if (trained / TRAINED_MARKER).is_file():
        _say(f"[2/6] teacher: reusing the trained demo teacher in {display_path(trained)}")
        return trained
    if rank == 0 and not (init / TEACHER_CONFIG_NAME).is_file():
        save_tiny_teacher(init, seed=cfg.train.seed, maniqa="demo")  # random; its MLLM gives the semantic vectors
    _barrier()
    splits = split_records(records, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                           seed=cfg.data.split_seed)
    fit_ids = set(splits["train"]) | set(splits["val"])  # the teacher never sees the test images
    tcfg = read_teacher_config(init)
    cache = label_records(cfg, label_cache_dir(cfg, run_dir, tcfg, init), [r for r in records if r.image_id in fit_ids],
                          init, tcfg, device, rank, world, progress)
    t = cfg.teacher.train
    stages = (f"{t.maniqa_epochs} epochs of its MANIQA branch, then {t.epochs} of the fusion" if t.maniqa_epochs
              else f"{t.epochs} epochs")
    _say(f"[2/6] teacher: training the tiny MA-AGIQA against the demo MOS on {len(splits['train'])} train "
         f"images ({stages}; validation on {len(splits['val'])}; test images never seen)")
    if rank == 0:
        train_config = replace(t, device=t.device or cfg.teacher.device or str(device))
        best = train_teacher(init, cache.out_dir, records, splits, trained, train_config,
                             split_seed=cfg.data.split_seed, progress=progress)
        _say(f"      teacher vs MOS on validation: SRCC {best['srcc']:.3f}, PLCC {best['plcc']:.3f} "
             f"(best epoch {best['epoch']})")
    _barrier()
    return trained


def _teacher_dir(cfg: RunConfig, run_dir: Path, records: list[ImageRecord], device: torch.device,
                 rank: int, world: int, progress: bool) -> Path:
    if cfg.teacher.path:
        _say(f"[2/6] teacher: {cfg.teacher.path}")
        return Path(cfg.teacher.path)
    if not cfg.is_demo:
        raise ValueError("teacher.path is not set; point it at a teacher folder with teacher.json "
                         "(see configs/agiqa3k.yaml), or use data.kind=demo for the demo teacher")
    return _train_demo_teacher(cfg, run_dir, records, device, rank, world, progress)


def unlabeled_holdout(extra: list[ImageRecord], fraction: float, seed: int) -> list[str]:
    """Ids of the seeded slice of the unlabeled pool kept out of training (the split rule of the
    labelled data, so the slice is stable as images are added); none for fewer than 10 images."""
    if fraction <= 0 or len(extra) < 10:
        return []
    return split_records(extra, val_fraction=0.0, test_fraction=fraction, seed=seed)["test"]


def _split(ids: list[str], records: dict[str, ImageRecord], labels: TeacherOutput,
           index: dict[str, int], comps: dict[str, LinearCompression], spec, preload: bool) -> Split:
    rows = torch.tensor([index[i] for i in ids], dtype=torch.long)
    teacher = TeacherOutput(*(v[rows].float() for v in labels))
    semantic = torch.stack([comps[f"semantic{s}"].encode(teacher.semantic_vectors[:, s])
                            for s in range(teacher.semantic_vectors.shape[1])], dim=1)
    teacher = teacher._replace(semantic_vectors=semantic,
                               quality_features=comps["quality"].encode(teacher.quality_features))
    mos = torch.tensor([np.nan if records[i].mos is None else records[i].mos for i in ids], dtype=torch.float32)
    return Split(ids, ImageSet([str(records[i].path) for i in ids], spec, preload), DistillTargets(teacher, mos))


def _with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """A copy whose folders are absolute, so the saved config.json resumes from any folder
    (``data.annotations`` stays as given: a relative one is looked up in the dataset root first)."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    return replace(cfg, out_dir=absolute(cfg.out_dir),
                   data=replace(cfg.data, root=absolute(cfg.data.root), unlabeled=absolute(cfg.data.unlabeled)),
                   teacher=replace(cfg.teacher, path=absolute(cfg.teacher.path), cache=absolute(cfg.teacher.cache)))


def _kept_on_resume(line: str, resume_step: int) -> bool:
    """Whether a ``metrics.jsonl`` line stays when training resumes from ``resume_step``: records up
    to that step, not a line cut short by a kill, and not the closing ``train_seconds`` record of a
    process that finished training (the resumed one writes its own)."""
    try:
        record = json.loads(line)
        return record.get("step", 0) <= resume_step and "train_seconds" not in record
    except (ValueError, AttributeError):
        return False


def resume_distillation(run_dir: str | os.PathLike, overrides: list[str] | None = None, *,
                        progress: bool = True) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with its saved config
    (``agiqa-distill run --resume RUN_DIR``); ``overrides`` are ``key=value`` strings."""
    return run_distillation(load_resume_config(run_dir, overrides), resume=True, progress=progress)


def run_distillation(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> RunResult:
    """The whole job. With ``resume`` the run folder's saved config and checkpoint are used."""
    cfg = _with_absolute_paths(cfg)
    run_dir = Path(cfg.out_dir)
    run = RunLayout(run_dir)
    started = time.time()
    # Read a damaged checkpoint now, not after hours of labelling.
    resume_step = (read_checkpoint_meta(run.checkpoint)["step"]
                   if resume and (run.checkpoint / CHECKPOINT_META).is_file() else 0)
    rank, world, device = _init_distributed(cfg.train.device)
    if cfg.train.device:
        device = torch.device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.config, cfg.to_dict())
        if cfg.is_demo:
            print(DEMO_NOTICE, flush=True)
            if not cfg.data.root:
                make_demo_images(run.demo_images, count=cfg.data.demo_images, seed=cfg.train.seed)
            if not cfg.data.unlabeled and cfg.data.demo_unlabeled > 0:  # other views (their MOS is not used)
                make_demo_images(run.demo_unlabeled, count=cfg.data.demo_unlabeled, seed=cfg.train.seed + 1)
    _barrier()

    # 1. images and splits (deterministic for the seed, saved with the run)
    spec = _dataset_spec(cfg, run_dir)
    records = load_records(spec)
    extra, extra_root = _unlabeled_records(cfg, run_dir)
    n_mos = sum(r.mos is not None for r in records)
    _say(f"[1/6] images: {len(records)} in {display_path(spec.root)} ({n_mos} with MOS)"
         + (f" + {len(extra)} unlabeled in {display_path(extra_root)}" if extra else ""))

    # 2. the teacher (the demo trains its own), 3. its labels
    teacher_dir = _teacher_dir(cfg, run_dir, records, device, rank, world, progress)
    tcfg = read_teacher_config(teacher_dir)
    _say(f"[3/6] labelling: the teacher labels {len(records) + len(extra)} images (cached; a re-run reuses them)")
    cache = label_records(cfg, label_cache_dir(cfg, run_dir, tcfg, teacher_dir), records, teacher_dir, tcfg, device,
                          rank, world, progress)
    labels = cache.tensors()
    index = {image_id: row for row, image_id in enumerate(cache.image_ids)}
    if extra:
        extra_dir = label_cache_dir(cfg, run_dir, tcfg, teacher_dir, folder_tag("unlabeled", extra_root))
        extra_cache = label_records(cfg, extra_dir, extra, teacher_dir, tcfg, device, rank, world, progress)
        index.update({i: len(index) + row for row, i in enumerate(extra_cache.image_ids)})
        labels = TeacherOutput(*(torch.cat([ours, theirs]) for ours, theirs in zip(labels, extra_cache.tensors())))
        extra = [r for r in extra if r.image_id in extra_cache]
    by_id = {r.image_id: r for r in records + extra}
    labelled = [r for r in records if r.image_id in cache]
    splits = split_records(labelled, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed)
    if rank == 0:
        save_splits(run.splits, splits, cfg.data.split_seed)
        write_data_index(run.data_index, {name: [str(by_id[i].path) for i in ids] for name, ids in splits.items()},
                         [str(r.path) for r in extra])
    # A seeded slice of the unlabeled pool is never trained on: fidelity where no MOS exists.
    holdout = unlabeled_holdout(extra, cfg.data.unlabeled_holdout, cfg.data.split_seed)
    student_train = splits["train"] + [r.image_id for r in extra if r.image_id not in set(holdout)]

    # compression of the teacher's wide vectors, fitted on the student's training images only
    train_rows = torch.tensor([index[i] for i in student_train])
    semantic = labels.semantic_vectors[train_rows].float()
    comps = {f"semantic{s}": LinearCompression.fit(semantic[:, s], cfg.loss.semantic_components)
             for s in range(semantic.shape[1])}
    comps["quality"] = LinearCompression.fit(labels.quality_features[train_rows].float(),
                                             cfg.loss.quality_components)

    # the student, sized to the compressed streams, its score head started at the teacher's mean
    scfg: StudentConfig = replace(student_config(cfg.student.variant), **cfg.student.overrides)
    train_scores = labels.score[train_rows].float()
    scfg = replace(scfg, num_semantic=semantic.shape[1], semantic_dim=comps["semantic0"].dim,
                   quality_dim=comps["quality"].dim, score_range=tcfg.score_range)
    torch.manual_seed(cfg.train.seed)
    student = StudentIQA(scfg)
    score_std = float(train_scores.std()) if len(train_scores) > 1 else 1.0
    with torch.no_grad():
        student.score_head.weight.mul_(score_std)
        student.score_head.bias.fill_(float(train_scores.mean()))
    preload = cfg.data.num_workers == 0
    parts = {name: _split(ids, by_id, labels, index, comps, student.config.preprocess, preload)
             for name, ids in {**splits, "train": student_train, HOLDOUT: holdout}.items() if ids}
    fingerprints = {"teacher_fingerprint": fingerprint_sha256(cache.fingerprint),
                    "teacher_config": tcfg.to_dict()}

    def save_student(model: StudentIQA, which: str) -> None:
        directory = run.student(which)
        model.save_pretrained(directory, extra={**fingerprints, "run_config": cfg.to_dict()})
        save_compressions(directory, comps)

    # 4. distil (metrics.jsonl keeps only records up to the checkpoint we resume from)
    metrics_path = run.metrics_log
    if rank == 0:
        kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.is_file() else [])
                if resume_step and _kept_on_resume(line, resume_step)]
        atomic_write_text(metrics_path, "".join(k + "\n" for k in kept))
    log_file = open(metrics_path, "a") if rank == 0 else None

    def log(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    _say(f"[4/6] distillation: {cfg.student.variant} ({scfg.backbone}) on {len(student_train)} images "
         f"({len(splits['train'])} train + {len(extra) - len(holdout)} unlabeled"
         + (f"; {len(holdout)} more unlabeled held out" if holdout else "") + f"), {cfg.train.epochs} epochs; "
         f"checkpoint/ makes it resumable")
    try:
        state = train(cfg, run_dir, student, parts["train"], parts["val"], score_std=score_std,
                      device=device, resume=resume, save_student=save_student, log=log, progress=progress)
    finally:
        if log_file:
            log_file.close()
    _barrier()

    # 5. held-out evaluation of the best student, 6. plots and the model card
    result = RunResult(run_dir=str(run_dir))  # the other ranks return only where the run is
    if rank == 0:
        test = parts["test"]
        _say(f"[5/6] evaluation: best student (step {state.best_step}) on {len(test.ids)} held-out test images")
        best = StudentIQA.from_pretrained(run.student(BEST)).to(device)
        student_scores = predict(best, test.images, device).score.numpy()
        teacher_scores, mos = test.targets.teacher.score.numpy(), test.targets.mos.numpy()
        has_mos = np.isfinite(mos).sum() >= 3
        metrics = {"vs_teacher": iqa_metrics(student_scores, teacher_scores)}
        if has_mos:
            metrics["vs_mos"] = iqa_metrics(student_scores, mos)
        unlabeled = None
        if HOLDOUT in parts:
            held = parts[HOLDOUT]
            _say(f"      and on {len(held.ids)} held-out unlabeled images (never trained on)")
            unlabeled_scores = predict(best, held.images, device).score.numpy()
            unlabeled = {"images": display_path(extra_root), "n": len(held.ids),
                         "vs_teacher": iqa_metrics(unlabeled_scores, held.targets.teacher.score.numpy())}
        result = RunResult(
            run_dir=str(run_dir), test=metrics,
            teacher_vs_mos=iqa_metrics(teacher_scores, mos) if has_mos else None,
            best_step=state.best_step, best_val_srcc=state.best_val_srcc, steps=state.step,
            unlabeled_holdout=unlabeled,
            images={**{k: len(v) for k, v in splits.items()}, "unlabeled": len(extra) - len(holdout),
                    HOLDOUT: len(holdout)},
            skipped_images=len(cache.skipped), seconds=time.time() - started,
            student={"variant": cfg.student.variant, "backbone": scfg.backbone,
                     "params": sum(p.numel() for p in best.parameters())},
            demo=cfg.is_demo, teacher_fingerprint=fingerprints["teacher_fingerprint"],
            lower_better=scfg.lower_better)
        atomic_write_json(run.metrics, result.metrics())
        _say("[6/6] report: plots and MODEL_CARD.md")
        plots = write_plots(run_dir, metrics_path, student_scores, test.targets, best_step=state.best_step)
        if unlabeled is not None:
            plots.append(write_scatter(run.plots / "student_vs_teacher_unlabeled.png",
                                       parts[HOLDOUT].targets.teacher.score.numpy(), unlabeled_scores,
                                       "teacher score", "student score",
                                       f"unlabeled ({unlabeled['images']}, never trained on)"))
        card = write_model_card(run_dir, cfg, result.metrics(), DEMO_NOTICE if cfg.is_demo else None)
        result.model_card, result.plots = str(card), [str(p) for p in plots]
    _barrier()
    if dist.is_initialized():
        dist.destroy_process_group()
    return result
