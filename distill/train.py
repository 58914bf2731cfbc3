"""The distillation loop: plain functions, read top to bottom.

Determinism: the epoch order comes from ``seed + epoch`` and every step reseeds torch with
``(seed, step)``, so the step is the whole training state besides the weights and the
optimizer: a run resumed from any checkpoint replays exactly what an uninterrupted run does
(bitwise on CPU in deterministic mode). Checkpoints are safetensors + JSON, never pickle.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save
from torch.utils.data import DataLoader, Dataset

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from _agiqa.checkpoints import shapes, state_mismatch
from _agiqa.workers import die_with_parent
from edge_runtime.preprocess import PreprocessSpec
from student.layout import BEST, LAST, RunLayout
from student.model import StudentIQA, StudentOutput
from teacher.distributed import DistContext

from .config import RunConfig
from .losses import DistillationLoss, DistillTargets
from .metrics import iqa_metrics

__all__ = ["ImageSet", "Split", "get_lr", "train", "predict", "TrainState", "load_checkpoint",
           "read_checkpoint_meta", "save_checkpoint", "CHECKPOINT_META"]

CHECKPOINT_META = "state.json"  # a checkpoint folder's commit point: written last, read first
CHECKPOINT_TENSORS = "state.safetensors"  # tensors of checkpoints saved before state.json named its file


class ImageSet(Dataset):
    """Images of one split through the shared preprocessing: item = ``(index, (3, H, W) float32)``
    (``(C, H, W)`` for a set made by :meth:`through`).

    ``preload`` decodes everything once into RAM (small sets, the demo); otherwise each item is
    decoded on access (use DataLoader workers for large datasets).
    """

    def __init__(self, paths: list[str], spec: PreprocessSpec, preload: bool) -> None:
        self.paths, self.spec = paths, spec
        self._cache = torch.from_numpy(np.stack([spec.load(p) for p in paths])) if preload else None

    def through(self, fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 64) -> ImageSet:
        """A preloaded copy holding ``fn(images)`` instead of the images, computed once in
        batches of ``batch_size`` (``fn`` maps ``(B, 3, H, W)`` to ``(B, C, H, W)``)."""
        if self._cache is None:
            raise ValueError("ImageSet.through needs a preloaded set")
        mapped = copy.copy(self)
        mapped._cache = torch.cat([fn(chunk) for chunk in self._cache.split(batch_size)])
        return mapped

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def preloaded(self) -> bool:
        return self._cache is not None

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        if self._cache is not None:
            return index, self._cache[index]
        return index, torch.from_numpy(self.spec.load(self.paths[index]))


@dataclass
class Split:
    """One split's images and aligned targets (see :class:`DistillationLoss`)."""

    ids: list[str]
    images: ImageSet
    targets: DistillTargets  # the teacher's labels (vectors compressed) and the MOS, one row per image


@dataclass
class TrainState:
    step: int = 0
    best_val_srcc: float = -2.0
    best_step: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch eval records


def get_lr(step: int, total_steps: int, cfg: RunConfig) -> float:
    """Linear warmup, then cosine decay from ``lr`` to ``min_lr``."""
    t = cfg.train
    warmup = max(1, int(round(t.warmup_fraction * total_steps)))
    if step < warmup:
        return t.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * progress))


class _StepBatches(torch.utils.data.Sampler):
    """This rank's image indices for every step from ``start`` on: a pure function of the step,
    so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int, world: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.total, self.rank, self.world = start, total, rank, world
        self.per_epoch = len(_epoch_batches(n, batch_size, seed, 0))

    def __iter__(self):  # type: ignore[no-untyped-def]
        epoch, batches = -1, []
        for step in range(self.start, self.total):
            if step // self.per_epoch != epoch:  # one permutation per epoch, not per step
                epoch = step // self.per_epoch
                batches = _epoch_batches(self.n, self.batch_size, self.seed, epoch)
            yield batches[step % self.per_epoch][self.rank::self.world].tolist()

    def __len__(self) -> int:
        return self.total - self.start


def _stem_of(model: StudentIQA, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.stem`` as the training loop runs it (train mode, channels-last, no gradient: it
    has no weights), ``(B, 3, H, W)`` on the CPU -> ``(B, C, H, W)`` on the CPU."""
    assert model.stem is not None
    stem = model.stem.train()

    @torch.no_grad()
    def apply(x: torch.Tensor) -> torch.Tensor:
        return stem(x.to(device, memory_format=torch.channels_last)).cpu()
    return apply


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 10_007 + epoch))
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)] or [order]


@torch.inference_mode()
def predict(model: StudentIQA, images: ImageSet, device: torch.device, batch_size: int = 64) -> StudentOutput:
    """Student outputs over a whole split (eval mode), in split order, float32 on CPU."""
    model.eval()
    outs: list[StudentOutput] = []
    loader = DataLoader(images, batch_size=batch_size, shuffle=False)
    for _, x in loader:
        out = model(x.to(device, memory_format=torch.channels_last))
        outs.append(StudentOutput(*(v.float().cpu() for v in out)))
    return StudentOutput(*(torch.cat(v) for v in zip(*outs)))


def evaluate(model: StudentIQA, split: Split, device: torch.device) -> dict[str, Any]:
    score = predict(model, split.images, device).score.numpy()
    result = {"vs_teacher": iqa_metrics(score, split.targets.teacher.score.numpy())}
    mos = split.targets.mos.numpy()
    if np.isfinite(mos).sum() >= 3:
        result["vs_mos"] = iqa_metrics(score, mos)
    return result


# -- checkpoints ------------------------------------------------------------------------------
def _tensor_file_name(step: int, payload: bytes) -> str:
    """A new name for every new state (step and content), so writing it never touches the one the
    commit point names; identical bytes get the same name, so a repeated save is harmless."""
    return f"state-{step:08d}-{hashlib.sha256(payload).hexdigest()[:12]}.safetensors"


def save_checkpoint(directory: Path, model: StudentIQA, optimizer: torch.optim.Optimizer,
                    state: TrainState) -> None:
    """Crash-consistent at every instant: the new tensors go to a new file, then ``state.json``
    (the commit point, an atomic rename) names it, and only then are older tensor files removed.
    A kill anywhere leaves ``state.json`` naming a complete file: the new state or the previous one."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    payload = save(tensors)
    name = _tensor_file_name(state.step, payload)
    atomic_write_bytes(directory / name, payload)
    atomic_write_json(directory / CHECKPOINT_META, {
        "step": state.step, "best_val_srcc": state.best_val_srcc, "best_step": state.best_step,
        "history": state.history, "param_groups": opt["param_groups"], "tensors": name,
        "sha256": hashlib.sha256(payload).hexdigest()})
    # Now nothing names the older files (nor the old fixed name, nor temp files of a killed save).
    for old in [*directory.glob("state-*.safetensors"), *directory.glob(".state*.tmp"),
                directory / CHECKPOINT_TENSORS]:
        if old.name != name:
            old.unlink(missing_ok=True)


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder, its fields type-checked (one-line ``ValueError``)."""
    path = directory / CHECKPOINT_META
    try:
        meta = json.loads(path.read_text())
        return {"step": int(meta["step"]), "sha256": str(meta["sha256"]),
                "best_val_srcc": float(meta["best_val_srcc"]), "best_step": int(meta["best_step"]),
                "history": list(meta["history"]), "param_groups": list(meta["param_groups"]),
                # checkpoints written before kill-safe saving used one fixed file name
                "tensors": _plain_file_name(str(meta.get("tensors", CHECKPOINT_TENSORS)))}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a checkpoint written by agiqa-distill ({type(exc).__name__}: "
                         f"{exc}); delete {directory} to restart training from scratch") from None


def _plain_file_name(name: str) -> str:
    """``state.json`` names a file inside its own folder, nothing else (a tampered one is refused)."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"'tensors' must name a file in the checkpoint folder, got {name!r}")
    return name


def load_checkpoint(directory: Path, model: StudentIQA, optimizer: torch.optim.Optimizer) -> TrainState:
    """Restore what :func:`save_checkpoint` wrote; a damaged or foreign checkpoint is a one-line
    ``ValueError`` naming the file (never an unpickle, never a traceback)."""
    fix = f"delete {directory} to restart training from scratch"
    meta = read_checkpoint_meta(directory)
    meta_path, tensor_path = directory / CHECKPOINT_META, directory / meta["tensors"]
    payload = tensor_path.read_bytes() if tensor_path.is_file() else b""
    if hashlib.sha256(payload).hexdigest() != meta["sha256"]:
        raise ValueError(f"{tensor_path}: missing or does not match {meta_path} (corrupt checkpoint); {fix}")
    try:
        tensors = load(payload)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{tensor_path}: not a safetensors file ({exc}); checkpoints are "
                         f"safetensors only, never pickle; {fix}") from None
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    problems = state_mismatch(shapes(model.state_dict()), shapes(weights))
    if problems:
        raise ValueError(f"{tensor_path}: weights do not fit this run's student ({problems.summary(1)}); {fix}")
    model.load_state_dict(weights)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{tensor_path}: optimizer state does not fit this run ({exc}); {fix}") from None
    return TrainState(meta["step"], meta["best_val_srcc"], meta["best_step"], meta["history"])


# -- the loop ---------------------------------------------------------------------------------
def train(cfg: RunConfig, run: RunLayout, model: StudentIQA, train_split: Split, val_split: Split,
          *, score_std: float, ctx: DistContext, resume: bool,
          save_student: Callable[[StudentIQA, str], None],
          log: Callable[[dict[str, Any]], None], progress: bool = True) -> TrainState:
    """Distil into ``model`` on ``ctx.device``; saves ``student/best`` and ``student/last`` via
    ``save_student`` and the resumable state in ``run.checkpoint``."""
    rank, world, device = ctx.rank, ctx.world, ctx.device
    t = cfg.train
    if t.batch_size % world:
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the {world} DDP ranks")
    # Channels-last runs the depthwise convolutions of mobile backbones ~1.5x faster on CPU.
    model.to(device, memory_format=torch.channels_last)
    criterion = DistillationLoss(cfg.loss, score_std)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)
    ckpt_dir = run.checkpoint
    state = TrainState()
    if resume and (ckpt_dir / CHECKPOINT_META).is_file():
        state = load_checkpoint(ckpt_dir, model, optimizer)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(train_split.ids)
    steps_per_epoch = len(_epoch_batches(n, t.batch_size, t.seed, 0))
    total = steps_per_epoch * t.epochs
    use_amp = t.amp and device.type == "cuda"
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=state.step, desc="distill", unit="step",
               disable=not progress or rank != 0, dynamic_ncols=True)
    started = time.time()
    consistent = True  # weights, optimizer and state.step describe the same moment
    # A contrast stem has no weights: for images held in RAM it runs once per image here instead
    # of at every step, where it took about a fifth of a demo step (a flip commutes with it: its
    # window and border mass are symmetric).
    stem_applied = model.stem is not None and train_split.images.preloaded
    images = train_split.images.through(_stem_of(model, device)) if stem_applied else train_split.images
    # Workers decode images ahead of the loop when the split is not preloaded in RAM.
    loader = DataLoader(images, num_workers=cfg.data.num_workers, worker_init_fn=die_with_parent(),
                        batch_sampler=_StepBatches(n, t.batch_size, t.seed, state.step, total, rank, world),
                        persistent_workers=False)
    try:
        for batch, x in loader:
            epoch = state.step // steps_per_epoch
            torch.manual_seed(t.seed * 1_000_003 + state.step)  # dropout and flips of this step
            x = x.to(device, memory_format=torch.channels_last)
            if t.hflip:
                flip = torch.rand(len(batch)) < 0.5
                x[flip.to(device)] = x[flip.to(device)].flip(-1)
            targets = train_split.targets.rows(batch).to(device)
            lr = get_lr(state.step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = train_model(x, stem_applied=stem_applied)
            losses = criterion(type(out)(*(o.float() for o in out)), targets)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            consistent = False
            optimizer.step()
            state.step += 1
            bar.update(1)
            record = {"step": state.step, "epoch": epoch, "lr": lr, "grad_norm": float(grad_norm),
                      **{f"loss/{k}": float(v.detach()) for k, v in losses.items()}}
            bar.set_postfix(loss=f"{record['loss/total']:.3f}")
            if rank == 0:
                log(record)
            end_of_epoch = state.step % steps_per_epoch == 0
            if end_of_epoch and rank == 0:
                metrics = evaluate(model, val_split, device)
                srcc = metrics["vs_teacher"]["srcc"]
                entry = {"step": state.step, "epoch": epoch + 1, "val": metrics}
                state.history.append(entry)
                log({"step": state.step, "epoch": epoch + 1,
                     **{f"val/{k}": v for k, v in metrics["vs_teacher"].items()}})
                if np.isfinite(srcc) and srcc > state.best_val_srcc:
                    state.best_val_srcc, state.best_step = srcc, state.step
                    save_student(model, BEST)
                bar.set_postfix(loss=f"{record['loss/total']:.3f}", val_srcc=f"{srcc:.3f}")
            if rank == 0 and (end_of_epoch or (t.checkpoint_every and state.step % t.checkpoint_every == 0)):
                save_checkpoint(ckpt_dir, model, optimizer, state)
            consistent = True
            ctx.barrier()
    except KeyboardInterrupt:
        # Save only a consistent state; otherwise the last checkpoint (<= 1 epoch old) stands.
        if rank == 0 and consistent:
            save_checkpoint(ckpt_dir, model, optimizer, state)
        bar.close()
        raise
    bar.close()
    if rank == 0:
        save_student(model, LAST)
        if state.best_step < 0:
            save_student(model, BEST)
        log({"step": state.step, "train_seconds": time.time() - started})
    return state
