"""Train MA-AGIQA end to end with the official recipe, on semantic vectors from a label cache.

The official code (wangpuyi/MA-AGIQA ``main.py`` + ``configs/base.yaml``) precomputes the two
mPLUG-Owl2 vectors per image, then trains the whole network (ImageNet ViT-B/8 included):
MSE to MOS, Adam lr 1e-5 / weight decay 1e-5, batch 8, CosineAnnealingLR(T_max=50) stepped
every batch, 30 epochs, images resized to 224 (bicubic), 90-degree rotations with p 0.7 and a
flip with p 0.7, normalised with mean 0.5 / std 0.5; the checkpoint with the best
validation SRCC + PLCC is kept. Our label cache already holds the semantic vectors (they do
not depend on the fusion weights), so a cache made by any teacher with the same MLLM and
prompts serves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from _agiqa.atomic import atomic_write_bytes, atomic_write_json
from edge_runtime.images import load_rgb
from student.layout import SPLITS_NAME
from teacher.cache_read import LabelCache
from teacher.labeler import TEACHER_CONFIG_NAME, WEIGHTS_NAME, read_teacher_config, teacher_view
from teacher.model import MAAGIQA, ours_to_official, revive_quality_branch
from teacher.records import ImageRecord
from teacher.state_dict import read_state_dict

from .config import TEACHER_SPLIT_SEED, TEACHER_TEST_FRACTION, TEACHER_VAL_FRACTION, TeacherTrainConfig
from .data import SPLIT_NAMES, save_splits, split_records
from .metrics import iqa_metrics

__all__ = ["TeacherTrainConfig", "teacher_splits", "train_teacher", "TRAINED_MARKER"]

KEEP_VIEWS_UP_TO = 2048  # images whose views stay in memory across epochs (0.6 MB each at 224 x 224)
TRAINED_MARKER = "train_metrics.json"  # train_teacher writes it last: the teacher folder is complete


def _augment(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """Official RandRotation then RandHorizontalFlip on one (3, H, W) image. The official flip is
    ``np.fliplr`` on a CHW array, which flips the H axis (a vertical flip); we reproduce it."""
    if torch.rand((), generator=g) < p:
        k = int(torch.multinomial(torch.tensor([0.33, 0.33, 0.34]), 1, generator=g)) + 1
        x = torch.rot90(x, k, dims=(1, 2))
    if torch.rand((), generator=g) < p:
        x = x.flip(1)
    return x


class _TeacherData:
    """The train and val images of a teacher run: views made once (official resize and
    normalisation), semantic vectors from the label cache, MOS from the records."""

    def __init__(self, records: list[ImageRecord], cache: LabelCache, tcfg: Any, splits: dict[str, list[str]],
                 batch_size: int, prob_aug: float, device: torch.device) -> None:
        self.vectors = cache.tensors().semantic_vectors  # (N, num_semantic, semantic_dim)
        self.row = {image_id: i for i, image_id in enumerate(cache.image_ids)}
        self.by_id = {r.image_id: r for r in records}
        self.tcfg, self.prob_aug, self.device = tcfg, prob_aug, device
        self.train_ids = [i for i in splits["train"] if i in self.row and self.by_id[i].mos is not None]
        self.val_ids = [i for i in splits["val"] if i in self.row and self.by_id[i].mos is not None]
        if len(self.train_ids) < batch_size or len(self.val_ids) < 3:
            raise ValueError(f"train-teacher needs MOS labels: {len(self.train_ids)} train and {len(self.val_ids)} "
                             "val images have MOS and semantic vectors; use a dataset with MOS (agiqa3k, aigcqa20k, "
                             "csv)")
        # Decoding and the cv2-exact resize cost more than a step of the demo's MANIQA: keep each
        # view in memory when the set is small enough.
        self._kept: dict[str, torch.Tensor] | None = (
            {} if len(self.train_ids) + len(self.val_ids) <= KEEP_VIEWS_UP_TO else None)

    def _view(self, image_id: str) -> torch.Tensor:
        x = self._kept.get(image_id) if self._kept is not None else None
        if x is None:
            x = torch.from_numpy(teacher_view(load_rgb(self.by_id[image_id].path), self.tcfg))
            if self._kept is not None:
                self._kept[image_id] = x
        return x

    def images(self, ids: list[str], g: torch.Generator | None) -> torch.Tensor:
        """(B, 3, H, W) normalised views; augmented (official rotation and flip) when ``g`` is given."""
        views = [self._view(i) for i in ids]
        if g is not None:
            views = [_augment(x, self.prob_aug, g) for x in views]
        return torch.stack(views).to(self.device)

    def semantic(self, ids: list[str]) -> torch.Tensor:
        """(B, num_semantic, semantic_dim) float32 semantic vectors."""
        return self.vectors[[self.row[i] for i in ids]].float().to(self.device)

    def mos(self, ids: list[str]) -> torch.Tensor:
        """(B,) float32 MOS."""
        return torch.tensor([self.by_id[i].mos for i in ids], dtype=torch.float32, device=self.device)


Predict = Callable[[list[str], "torch.Generator | None"], tuple[torch.Tensor, torch.Tensor]]


def _fit(module: torch.nn.Module, predict: Predict, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, data: _TeacherData, *, epochs: int, batch_size: int,
         seed: int, desc: str, quiet: bool, on_best: Callable[[dict[str, Any]], None],
         frozen: torch.nn.Module | None = None) -> list[dict[str, float]]:
    """The epoch loop of both stages: shuffled batches (drop_last, as official) with MSE to MOS,
    the optimizer and scheduler stepped every batch, then validation SRCC and PLCC; ``on_best``
    gets the metrics of every epoch that beats the best SRCC + PLCC so far. ``predict(ids, g)``
    gives (score, MOS), augmented when ``g`` is given; ``frozen`` stays in eval mode. Returns the
    history (per epoch: mean train loss, val SRCC and PLCC)."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    val_mos = np.array([data.by_id[i].mos for i in data.val_ids])
    best_score, history = -np.inf, []
    for epoch in range(epochs):
        module.train()
        if frozen is not None:
            frozen.eval()
        order = torch.randperm(len(data.train_ids), generator=g).tolist()
        losses = []
        for start in tqdm(range(0, len(order) - batch_size + 1, batch_size),
                          desc=f"{desc} {epoch + 1}/{epochs}", disable=quiet):
            score, mos = predict([data.train_ids[j] for j in order[start:start + batch_size]], g)
            loss = torch.nn.functional.mse_loss(score, mos)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        module.eval()
        with torch.inference_mode():
            preds = [predict(data.val_ids[start:start + batch_size], None)[0].float().cpu()
                     for start in range(0, len(data.val_ids), batch_size)]
        metrics = iqa_metrics(torch.cat(preds).numpy(), val_mos)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "val_srcc": metrics["srcc"], "val_plcc": metrics["plcc"]})
        if metrics["srcc"] + metrics["plcc"] > best_score:
            best_score = metrics["srcc"] + metrics["plcc"]
            on_best({"score": best_score, "epoch": epoch + 1, **metrics})
    return history


def _train_quality_branch(maniqa: torch.nn.Module, cfg: TeacherTrainConfig, data: _TeacherData, *,
                          progress: bool) -> list[dict[str, float]]:
    """Stage 1: MANIQA alone against MOS through its own pooled score (sum(score * weight) /
    sum(weight)), AdamW at ``cfg.maniqa_lr`` with a 5 % linear warmup then a cosine, the official
    augmentation; ends on the epoch with the best validation SRCC + PLCC. Returns the history."""
    decay = [p for p in maniqa.parameters() if p.ndim >= 2]  # no decay on norms and biases
    rest = [p for p in maniqa.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=cfg.maniqa_lr)
    total = max(1, len(data.train_ids) // cfg.batch_size * cfg.maniqa_epochs)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, t / total))))
    best_state: dict[str, torch.Tensor] = {}

    def keep(_: dict[str, Any]) -> None:
        best_state.update({k: v.detach().clone() for k, v in maniqa.state_dict().items()})

    history = _fit(maniqa, lambda ids, g: (maniqa(data.images(ids, g)), data.mos(ids)), optimizer, scheduler, data,
                   epochs=cfg.maniqa_epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                   desc="teacher MANIQA epoch", quiet=not progress, on_best=keep)
    if best_state:
        maniqa.load_state_dict(best_state)
    return history


def _frozen_quality_features(maniqa: Any, data: _TeacherData, batch_size: int) -> dict[str, torch.Tensor]:
    """image id -> the fixed quality features of the frozen branch (stage 2 of freeze_maniqa)."""
    maniqa.requires_grad_(False)
    maniqa.eval()
    features: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for ids in (data.train_ids, data.val_ids):
            for start in range(0, len(ids), batch_size):
                chunk = ids[start:start + batch_size]
                features.update(zip(chunk, maniqa.forward_quality_features(data.images(chunk, None)).cpu(),
                                    strict=True))
    return features


def teacher_splits(records: list[ImageRecord], seed: int = TEACHER_SPLIT_SEED) -> dict[str, list[str]]:
    """The official MA-AGIQA split of ``records``: 70 / 10 / 20 % train / val / test."""
    return split_records(records, val_fraction=TEACHER_VAL_FRACTION, test_fraction=TEACHER_TEST_FRACTION,
                         seed=seed)


def _resolve_splits(records: list[ImageRecord], splits: dict[str, list[str]] | None,
                    split_seed: int) -> dict[str, list[str]]:
    if splits is None:
        splits = teacher_splits(records, split_seed)
    elif "test" not in splits:  # train/val only: the teacher never sees the rest, record it as test
        seen = set(splits.get("train", ())) | set(splits.get("val", ()))
        splits = {**splits, "test": [r.image_id for r in records if r.image_id not in seen]}
    if set(splits) != set(SPLIT_NAMES):  # before any work: nothing is written
        raise ValueError(f"splits must have exactly the keys {', '.join(SPLIT_NAMES)} (got {sorted(splits)})")
    return splits


def train_teacher(teacher_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                  records: list[ImageRecord], splits: dict[str, list[str]] | None,
                  out_dir: str | os.PathLike, config: TeacherTrainConfig | None = None, *,
                  split_seed: int = TEACHER_SPLIT_SEED, vit_weights: str | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train a teacher and write a new teacher folder: ``teacher.json``, official-named weights,
    ``splits.json`` and ``train_metrics.json`` (written last: the folder is complete).

    ``teacher_dir`` gives the MLLM, prompts and MANIQA preset; ``cache_dir`` the semantic vectors;
    ``records`` the images and MOS. ``splits`` (``{"train", "val", "test"}`` as
    :func:`distill.data.split_records` makes them) says which images train and which select the
    best epoch; the test images are never used (without ``"test"``: every other record).
    ``None``: :func:`teacher_splits` with ``split_seed``, as ``agiqa-distill train-teacher`` does;
    ``split_seed`` is recorded in ``splits.json`` either way. Returns the best validation metrics.
    """
    cfg = config or TeacherTrainConfig()
    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    splits = _resolve_splits(records, splits, split_seed)
    tcfg = read_teacher_config(teacher_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = _TeacherData(records, LabelCache.open(cache_dir), tcfg, splits, cfg.batch_size, cfg.prob_aug, device)
    fusion = replace(tcfg.fusion, semantic_dim=int(data.vectors.shape[-1]), num_semantic=int(data.vectors.shape[1]))
    torch.manual_seed(cfg.seed)
    model = MAAGIQA(tcfg.maniqa, fusion)
    if vit_weights:
        model.maniqa.vit.load_state_dict(read_state_dict(vit_weights))
    model.to(device)
    save_splits(out_dir / SPLITS_NAME, splits, split_seed)  # what the teacher saw (and did not)

    if not vit_weights:  # from scratch (the demo): a quality branch that trains (in stage 1, MANIQA's pooled
        train_mos = float(np.mean([data.by_id[i].mos for i in data.train_ids]))  # score starts at the mean MOS)
        revive_quality_branch(model, start=train_mos if cfg.maniqa_epochs else 1.0)
        with torch.no_grad():  # and the score starting at the mean MOS (Adam moves a bias by ~lr per step:
            model.fusion.score_head.bias.fill_(train_mos)  # thousands of steps to reach MOS 3 from 0)
    maniqa_history = _train_quality_branch(model.maniqa, cfg, data, progress=progress) if cfg.maniqa_epochs else []
    features = _frozen_quality_features(model.maniqa, data, cfg.batch_size) if cfg.freeze_maniqa else {}

    def predict(ids: list[str], g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, MOS) of ``ids``: the whole model, or the fusion alone on the frozen branch's features."""
        if not features:
            return model(data.images(ids, g), data.semantic(ids)).score, data.mos(ids)
        quality = torch.stack([features[i] for i in ids]).to(device)
        return model.fusion(data.semantic(ids), quality)[0], data.mos(ids)

    best: dict[str, Any] = {"score": -np.inf}  # what train_metrics.json says when no epoch validates

    def save_best(metrics: dict[str, Any]) -> None:
        best.clear()
        best.update(metrics)
        state = {k: v.detach().cpu().contiguous() for k, v in ours_to_official(model.state_dict()).items()}
        atomic_write_bytes(out_dir / WEIGHTS_NAME, save(state))

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    t_max = cfg.t_max or len(data.train_ids) // cfg.batch_size * cfg.epochs  # 0: one cosine over the whole run
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=0)
    history = _fit(model, predict, optimizer, scheduler, data, epochs=cfg.epochs, batch_size=cfg.batch_size,
                   seed=cfg.seed, desc="teacher epoch", on_best=save_best,
                   quiet=not progress or bool(features),  # fusion-only epochs take a fraction of a second
                   frozen=model.maniqa if features else None)
    mllm = (teacher_dir / tcfg.semantic.model_path).resolve()
    # Relative when the MLLM lies beside the new folder (a run folder moves as a whole).
    near = mllm.is_relative_to(out_dir.resolve().parent)
    semantic_cfg = replace(tcfg.semantic, model_path=os.path.relpath(mllm, out_dir.resolve()) if near else str(mllm))
    atomic_write_json(out_dir / TEACHER_CONFIG_NAME,
                      replace(tcfg, weights=WEIGHTS_NAME, fusion=fusion, semantic=semantic_cfg).to_dict())
    best["history"] = history
    if maniqa_history:
        best["maniqa_history"] = maniqa_history
    atomic_write_json(out_dir / TRAINED_MARKER, best)
    return best
