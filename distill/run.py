"""``agiqa-distill run``: images -> teacher -> labels -> splits -> student -> distil -> evaluate/report.

:func:`run_distillation` calls one function per stage, each with typed inputs and outputs; what a
stage needs is resolved once and passed on (the distributed context, the run folder's
:class:`~student.layout.RunLayout`, the teacher's folder, config and fingerprint).

The demo (no arguments) generates its images with a ground-truth MOS (:mod:`distill.demo`),
trains its tiny MA-AGIQA teacher on the train split with :func:`distill.teacher_train.train_teacher`
(the code ``agiqa-distill train-teacher`` runs), then labels, distils and evaluates like a real run.

The run folder's layout is :class:`student.layout.RunLayout` (its module docstring lists it);
the demo's trained teacher is complete once ``teacher/train_metrics.json`` exists.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _agiqa.atomic import atomic_write_json, atomic_write_text
from student.layout import BEST, RunLayout, write_data_index
from student.model import StudentConfig, StudentIQA, student_config
from teacher.cache_schema import TeacherOutput
from teacher.distributed import DistContext, init_distributed
from teacher.records import ImageRecord

from .compression import LinearCompression, save_compressions
from .config import RunConfig, load_resume_config
from .data import DatasetSpec, dataset_spec_for, load_records, save_splits, split_records
from .demo import MOS_FILE, UNLABELED_SIZES, make_demo_images, train_demo_teacher
from .labels import LabelSet, RunImages, TeacherRef, label_run_images
from .losses import DistillTargets
from .metrics import iqa_metrics
from .report import display_path, write_model_card, write_plots, write_scatter
from .train import CHECKPOINT_META, ImageSet, Split, TrainState, predict, read_checkpoint_meta, train

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



@dataclass(frozen=True)
class RunSplits:
    """Image ids per part: the dataset's ``train``/``val``/``test`` (seeded, saved with the run),
    the unlabeled ``holdout`` never trained on, and ``student_train`` (train + the rest of the pool)."""

    splits: dict[str, list[str]]
    holdout: list[str]
    student_train: list[str]

    @property
    def n_unlabeled_trained(self) -> int:
        """Images of the unlabeled pool the student trains on (the pool less the holdout)."""
        return len(self.student_train) - len(self.splits["train"])

    def parts(self) -> dict[str, list[str]]:
        """What the student is trained and evaluated on, by name (empty parts left out)."""
        return {name: ids for name, ids in {**self.splits, "train": self.student_train, HOLDOUT: self.holdout}.items()
                if ids}


@dataclass
class StudentSetup:
    """The student to distil and the data it needs: compressions of the teacher's wide vectors
    (fitted on the student's training images only), the model (score head started at the
    teacher's mean), and the parts as :class:`~distill.train.Split`."""

    config: StudentConfig
    model: StudentIQA
    compressions: dict[str, LinearCompression]
    score_std: float
    parts: dict[str, Split]


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


def unlabeled_holdout(extra: list[ImageRecord], fraction: float, seed: int) -> list[str]:
    """Ids of the seeded slice of the unlabeled pool kept out of training (the split rule of the
    labelled data, so the slice is stable as images are added); none when the slice would hold
    fewer than 5 images (too few for a rank correlation)."""
    if fraction <= 0 or math.ceil(len(extra) * fraction - 1e-9) < 5:
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


# -- the stages, in order ---------------------------------------------------------------------
def start_run(cfg: RunConfig, run: RunLayout, resume: bool) -> tuple[DistContext, int]:
    """The distributed context and torch settings; the saved config and the demo's images.
    Returns the step to resume from (0: from scratch); a damaged checkpoint fails now, not after
    hours of labelling."""
    resume_step = (read_checkpoint_meta(run.checkpoint)["step"]
                   if resume and (run.checkpoint / CHECKPOINT_META).is_file() else 0)
    ctx = init_distributed(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if ctx.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.config, cfg.to_dict())
        if cfg.is_demo:
            print(DEMO_NOTICE, flush=True)
            if not cfg.data.root:
                make_demo_images(run.demo_images, count=cfg.data.demo_images, seed=cfg.train.seed)
            if not cfg.data.unlabeled and cfg.data.demo_unlabeled > 0:  # other views (their MOS is not used)
                make_demo_images(run.demo_unlabeled, count=cfg.data.demo_unlabeled, seed=cfg.train.seed + 1,
                                 sizes=UNLABELED_SIZES)
    ctx.barrier()
    return ctx, resume_step


def gather_images(cfg: RunConfig, run: RunLayout, ctx: DistContext) -> RunImages:
    """Stage 1: the dataset's records and the unlabeled pool's."""
    spec = _dataset_spec(cfg, run.root)
    records = load_records(spec)
    extra, extra_root = _unlabeled_records(cfg, run.root)
    n_mos = sum(r.mos is not None for r in records)
    ctx.say(f"[1/6] images: {len(records)} in {display_path(spec.root)} ({n_mos} with MOS)"
            + (f" + {len(extra)} unlabeled in {display_path(extra_root)}" if extra else ""))
    return RunImages(spec.root, records, extra, extra_root)


def resolve_teacher(cfg: RunConfig, run: RunLayout, images: RunImages, ctx: DistContext,
                    progress: bool) -> TeacherRef:
    """Stage 2: ``teacher.path``, or the demo's own teacher (trained here once)."""
    if cfg.teacher.path:
        ctx.say(f"[2/6] teacher: {cfg.teacher.path}")
        return TeacherRef.read(cfg.teacher.path)
    if not cfg.is_demo:
        raise ValueError("teacher.path is not set; point it at a teacher folder with teacher.json "
                         "(see configs/agiqa3k.yaml), or use data.kind=demo for the demo teacher")
    return TeacherRef.read(train_demo_teacher(cfg, run, images.records, ctx, progress))


def label_images(cfg: RunConfig, run: RunLayout, images: RunImages, teacher: TeacherRef, ctx: DistContext,
                 progress: bool) -> LabelSet:
    """Stage 3: the teacher's labels of every image (cached; a re-run reuses them)."""
    ctx.say(f"[3/6] labelling: the teacher labels {len(images.records) + len(images.extra)} images "
            "(cached; a re-run reuses them)")
    return label_run_images(cfg, run, images, teacher, ctx, progress)


def make_splits(cfg: RunConfig, run: RunLayout, labels: LabelSet, ctx: DistContext) -> RunSplits:
    """The seeded splits of the labelled images (saved with the run) and the unlabeled holdout."""
    splits = split_records(labels.labelled, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed)
    if ctx.is_main:
        save_splits(run.splits, splits, cfg.data.split_seed)
        write_data_index(run.data_index,
                         {name: [str(labels.by_id[i].path) for i in ids] for name, ids in splits.items()},
                         [str(r.path) for r in labels.extra])
    # A seeded slice of the unlabeled pool is never trained on: fidelity where no MOS exists.
    holdout = unlabeled_holdout(labels.extra, cfg.data.unlabeled_holdout, cfg.data.split_seed)
    held = set(holdout)
    student_train = splits["train"] + [r.image_id for r in labels.extra if r.image_id not in held]
    return RunSplits(splits, holdout, student_train)


def build_student(cfg: RunConfig, teacher: TeacherRef, labels: LabelSet, splits: RunSplits) -> StudentSetup:
    """Compressions fitted on the student's training images, the student sized to them (score
    head started at the teacher's mean), and every part as a :class:`Split`."""
    train_rows = labels.rows(splits.student_train)
    semantic = labels.labels.semantic_vectors[train_rows].float()
    comps = {f"semantic{s}": LinearCompression.fit(semantic[:, s], cfg.loss.semantic_components)
             for s in range(semantic.shape[1])}
    comps["quality"] = LinearCompression.fit(labels.labels.quality_features[train_rows].float(),
                                             cfg.loss.quality_components)
    scfg: StudentConfig = replace(student_config(cfg.student.variant), **cfg.student.overrides)
    train_scores = labels.labels.score[train_rows].float()
    scfg = replace(scfg, num_semantic=semantic.shape[1], semantic_dim=comps["semantic0"].dim,
                   quality_dim=comps["quality"].dim, score_range=teacher.config.score_range)
    torch.manual_seed(cfg.train.seed)
    student = StudentIQA(scfg)
    score_std = float(train_scores.std()) if len(train_scores) > 1 else 1.0
    with torch.no_grad():
        student.score_head.weight.mul_(score_std)
        student.score_head.bias.fill_(float(train_scores.mean()))
    preload = cfg.data.num_workers == 0
    parts = {name: _split(ids, labels.by_id, labels.labels, labels.index, comps, student.config.preprocess, preload)
             for name, ids in splits.parts().items()}
    return StudentSetup(scfg, student, comps, score_std, parts)


def distil(cfg: RunConfig, run: RunLayout, setup: StudentSetup, splits: RunSplits, fingerprints: dict[str, Any],
           ctx: DistContext, resume: bool, resume_step: int, progress: bool) -> TrainState:
    """Stage 4: train the student (resumable from ``checkpoint/``); ``metrics.jsonl`` keeps only
    the records up to the checkpoint it resumes from."""
    def save_student(model: StudentIQA, which: str) -> None:
        directory = run.student(which)
        model.save_pretrained(directory, extra={**fingerprints, "run_config": cfg.to_dict()})
        save_compressions(directory, setup.compressions)

    metrics_path = run.metrics_log
    if ctx.is_main:
        kept = [line for line in (metrics_path.read_text().splitlines() if metrics_path.is_file() else [])
                if resume_step and _kept_on_resume(line, resume_step)]
        atomic_write_text(metrics_path, "".join(k + "\n" for k in kept))
    log_file = open(metrics_path, "a") if ctx.is_main else None

    def log(record: dict[str, Any]) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    n_train, n_extra = len(splits.splits["train"]), splits.n_unlabeled_trained
    ctx.say(f"[4/6] distillation: {cfg.student.variant} ({setup.config.backbone}) on {len(splits.student_train)} "
            f"images ({n_train} train + {n_extra} unlabeled"
            + (f"; {len(splits.holdout)} more unlabeled held out" if splits.holdout else "")
            + f"), {cfg.train.epochs} epochs; checkpoint/ makes it resumable")
    try:
        state = train(cfg, run, setup.model, setup.parts["train"], setup.parts["val"],
                      score_std=setup.score_std, ctx=ctx, resume=resume, save_student=save_student,
                      log=log, progress=progress)
    finally:
        if log_file:
            log_file.close()
    ctx.barrier()
    return state


def evaluate_and_report(cfg: RunConfig, run: RunLayout, images: RunImages, labels: LabelSet, splits: RunSplits,
                        setup: StudentSetup, state: TrainState, ctx: DistContext, started: float) -> RunResult:
    """Stages 5 and 6 (main process): the best student on the held-out test split and the
    unlabeled holdout; ``metrics.json``, the plots and the model card."""
    test = setup.parts["test"]
    ctx.say(f"[5/6] evaluation: best student (step {state.best_step}) on {len(test.ids)} held-out test images")
    best = StudentIQA.from_pretrained(run.student(BEST)).to(ctx.device)
    student_scores = predict(best, test.images, ctx.device).score.numpy()
    teacher_scores, mos = test.targets.teacher.score.numpy(), test.targets.mos.numpy()
    has_mos = np.isfinite(mos).sum() >= 3
    metrics = {"vs_teacher": iqa_metrics(student_scores, teacher_scores)}
    if has_mos:
        metrics["vs_mos"] = iqa_metrics(student_scores, mos)
    unlabeled = None
    if HOLDOUT in setup.parts:
        held = setup.parts[HOLDOUT]
        ctx.say(f"      and on {len(held.ids)} held-out unlabeled images (never trained on)")
        unlabeled_scores = predict(best, held.images, ctx.device).score.numpy()
        unlabeled = {"images": display_path(images.extra_root), "n": len(held.ids),
                     "vs_teacher": iqa_metrics(unlabeled_scores, held.targets.teacher.score.numpy())}
    result = RunResult(
        run_dir=str(run.root), test=metrics,
        teacher_vs_mos=iqa_metrics(teacher_scores, mos) if has_mos else None,
        unlabeled_holdout=unlabeled,
        best_step=state.best_step, best_val_srcc=state.best_val_srcc, steps=state.step,
        images={**{k: len(v) for k, v in splits.splits.items()},
                "unlabeled": splits.n_unlabeled_trained, HOLDOUT: len(splits.holdout)},
        skipped_images=labels.skipped, seconds=time.time() - started,
        student={"variant": cfg.student.variant, "backbone": setup.config.backbone,
                 "params": sum(p.numel() for p in best.parameters())},
        demo=cfg.is_demo, teacher_fingerprint=labels.fingerprint, lower_better=setup.config.lower_better)
    atomic_write_json(run.metrics, result.metrics())
    ctx.say("[6/6] report: plots and MODEL_CARD.md")
    plots = write_plots(run.root, run.metrics_log, student_scores, test.targets, best_step=state.best_step)
    if unlabeled is not None:
        plots.append(write_scatter(run.plots / "student_vs_teacher_unlabeled.png",
                                   setup.parts[HOLDOUT].targets.teacher.score.numpy(), unlabeled_scores,
                                   "teacher score", "student score",
                                   f"unlabeled ({unlabeled['images']}, never trained on)"))
    card = write_model_card(run.root, cfg, result.metrics(), DEMO_NOTICE if cfg.is_demo else None)
    result.model_card, result.plots = str(card), [str(p) for p in plots]
    return result


def resume_distillation(run_dir: str | os.PathLike, overrides: list[str] | None = None, *,
                        progress: bool = True) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with its saved config
    (``agiqa-distill run --resume RUN_DIR``); ``overrides`` are ``key=value`` strings."""
    return run_distillation(load_resume_config(run_dir, overrides), resume=True, progress=progress)


def run_distillation(cfg: RunConfig, *, resume: bool = False, progress: bool = True) -> RunResult:
    """The whole job, stage by stage. With ``resume`` the run folder's checkpoint is used."""
    started = time.time()
    cfg = _with_absolute_paths(cfg)
    run = RunLayout(cfg.out_dir)
    ctx, resume_step = start_run(cfg, run, resume)
    images = gather_images(cfg, run, ctx)
    teacher = resolve_teacher(cfg, run, images, ctx, progress)
    labels = label_images(cfg, run, images, teacher, ctx, progress)
    splits = make_splits(cfg, run, labels, ctx)
    setup = build_student(cfg, teacher, labels, splits)
    fingerprints = {"teacher_fingerprint": labels.fingerprint, "teacher_config": teacher.config.to_dict()}
    state = distil(cfg, run, setup, splits, fingerprints, ctx, resume, resume_step, progress)
    # The other ranks of a torchrun job return only where the run is.
    result = (evaluate_and_report(cfg, run, images, labels, splits, setup, state, ctx, started)
              if ctx.is_main else RunResult(run_dir=str(run.root)))
    ctx.barrier()
    ctx.close()
    return result
