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
from teacher.maniqa import read_state_dict
from teacher.model import MAAGIQA, ours_to_official, revive_quality_branch
from teacher.records import ImageRecord

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


def _train_quality_branch(maniqa: torch.nn.Module, cfg: TeacherTrainConfig, train_ids: list[str],
                          val_ids: list[str], batch: Any, *, progress: bool) -> list[dict[str, float]]:
    """Stage 1: MANIQA alone against MOS through its own pooled score (sum(score * weight) /
    sum(weight)), AdamW at ``cfg.maniqa_lr`` with a 5 % linear warmup then a cosine, the official
    augmentation; keeps the epoch with the best validation SRCC + PLCC. Returns the history."""
    from tqdm.auto import tqdm

    decay = [p for p in maniqa.parameters() if p.ndim >= 2]  # no decay on norms and biases
    rest = [p for p in maniqa.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=cfg.maniqa_lr)
    total = max(1, len(train_ids) // cfg.batch_size * cfg.maniqa_epochs)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, t / total))))
    g = torch.Generator().manual_seed(cfg.seed)
    best_score, best_state, history = -np.inf, None, []
    for epoch in range(cfg.maniqa_epochs):
        maniqa.train()
        order = torch.randperm(len(train_ids), generator=g).tolist()
        losses = []
        steps = range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)
        for start in tqdm(steps, desc=f"teacher MANIQA epoch {epoch + 1}/{cfg.maniqa_epochs}", disable=not progress):
            x, _, mos = batch([train_ids[j] for j in order[start:start + cfg.batch_size]], g)
            loss = torch.nn.functional.mse_loss(maniqa(x), mos)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        maniqa.eval()
        preds, targets = [], []
        with torch.inference_mode():
            for start in range(0, len(val_ids), cfg.batch_size):
                x, _, mos = batch(val_ids[start:start + cfg.batch_size], None)
                preds.append(maniqa(x).float().cpu())
                targets.append(mos.cpu())
        metrics = iqa_metrics(torch.cat(preds).numpy(), torch.cat(targets).numpy())
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "val_srcc": metrics["srcc"], "val_plcc": metrics["plcc"]})
        if metrics["srcc"] + metrics["plcc"] > best_score:
            best_score = metrics["srcc"] + metrics["plcc"]
            best_state = {k: v.detach().clone() for k, v in maniqa.state_dict().items()}
    if best_state is not None:
        maniqa.load_state_dict(best_state)
    return history


def teacher_splits(records: list[ImageRecord], seed: int = TEACHER_SPLIT_SEED) -> dict[str, list[str]]:
    """The official MA-AGIQA split of ``records``: 70 / 10 / 20 % train / val / test."""
    return split_records(records, val_fraction=TEACHER_VAL_FRACTION, test_fraction=TEACHER_TEST_FRACTION,
                         seed=seed)


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
    from tqdm.auto import tqdm

    cfg = config or TeacherTrainConfig()
    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    if splits is None:
        splits = teacher_splits(records, split_seed)
    elif "test" not in splits:  # train/val only: the teacher never sees the rest, record it as test
        seen = set(splits.get("train", ())) | set(splits.get("val", ()))
        splits = {**splits, "test": [r.image_id for r in records if r.image_id not in seen]}
    if set(splits) != set(SPLIT_NAMES):  # before any work: nothing is written
        raise ValueError(f"splits must have exactly the keys {', '.join(SPLIT_NAMES)} (got {sorted(splits)})")
    tcfg = read_teacher_config(teacher_dir)
    cache = LabelCache.open(cache_dir)
    vectors = cache.tensors().semantic_vectors
    row = {image_id: i for i, image_id in enumerate(cache.image_ids)}
    by_id = {r.image_id: r for r in records}
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fusion = replace(tcfg.fusion, semantic_dim=int(vectors.shape[-1]), num_semantic=int(vectors.shape[1]))
    torch.manual_seed(cfg.seed)
    model = MAAGIQA(tcfg.maniqa, fusion)
    if vit_weights:
        model.maniqa.vit.load_state_dict(read_state_dict(vit_weights))
    model.to(device)

    train_ids = [i for i in splits["train"] if i in row and by_id[i].mos is not None]
    val_ids = [i for i in splits["val"] if i in row and by_id[i].mos is not None]
    if len(train_ids) < cfg.batch_size or len(val_ids) < 3:
        raise ValueError(f"train-teacher needs MOS labels: {len(train_ids)} train and {len(val_ids)} val "
                         "images have MOS and semantic vectors; use a dataset with MOS (agiqa3k, aigcqa20k, csv)")
    save_splits(out_dir / SPLITS_NAME, splits, split_seed)  # what the teacher saw (and did not)

    kept: dict[str, torch.Tensor] = {}  # image id -> view, for sets small enough to hold in memory
    keep_views = len(train_ids) + len(val_ids) <= KEEP_VIEWS_UP_TO

    def view(image_id: str) -> torch.Tensor:
        # The labeler's own view of an image (official resize + normalisation). Decoding and the
        # cv2-exact resize cost more than a step of the demo's MANIQA: make each view once.
        x = kept.get(image_id)
        if x is None:
            x = torch.from_numpy(teacher_view(load_rgb(by_id[image_id].path), tcfg))
            if keep_views:
                kept[image_id] = x
        return x

    def batch(ids: list[str], g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = [view(i) for i in ids]
        if g is not None:
            images = [_augment(x, cfg.prob_aug, g) for x in images]
        return torch.stack(images).to(device), semantic_of(ids), mos_of(ids)

    def semantic_of(ids: list[str]) -> torch.Tensor:
        return vectors[[row[i] for i in ids]].float().to(device)

    def mos_of(ids: list[str]) -> torch.Tensor:
        return torch.tensor([by_id[i].mos for i in ids], dtype=torch.float32, device=device)

    train_mos = float(np.mean([by_id[i].mos for i in train_ids]))
    if not vit_weights:  # from scratch (the demo): a quality branch that trains (in stage 1, MANIQA's pooled
        revive_quality_branch(model, start=train_mos if cfg.maniqa_epochs else 1.0)  # score starts at the mean
        with torch.no_grad():  # MOS), and the score starting at the mean MOS (Adam moves a bias by ~lr per
            model.fusion.score_head.bias.fill_(train_mos)  # step: thousands of steps to reach MOS 3 from 0)
    maniqa_history: list[dict[str, float]] = []
    if cfg.maniqa_epochs:  # stage 1: the quality branch alone, against MOS, through MANIQA's own pooled score
        maniqa_history = _train_quality_branch(model.maniqa, cfg, train_ids, val_ids, batch, progress=progress)
    features: dict[str, torch.Tensor] = {}  # image id -> fixed quality features (stage 2 of freeze_maniqa)
    if cfg.freeze_maniqa:
        model.maniqa.requires_grad_(False)
        model.maniqa.eval()
        with torch.inference_mode():
            for ids in (train_ids, val_ids):
                for start in range(0, len(ids), cfg.batch_size):
                    chunk = ids[start:start + cfg.batch_size]
                    features.update(zip(chunk, model.maniqa.forward_quality_features(batch(chunk, None)[0]).cpu(),
                                        strict=True))

    def predict(ids: list[str], g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, MOS) of ``ids``: the whole model, or the fusion alone on the frozen branch's features."""
        if not features:
            x, semantic, mos = batch(ids, g)
            return model(x, semantic).score, mos
        quality = torch.stack([features[i] for i in ids]).to(device)
        return model.fusion(semantic_of(ids), quality)[0], mos_of(ids)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_ids) // cfg.batch_size
    t_max = cfg.t_max or steps_per_epoch * cfg.epochs  # 0: one cosine over the whole run
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=0)
    g = torch.Generator().manual_seed(cfg.seed)
    best: dict[str, Any] = {"score": -np.inf}
    history: list[dict[str, float]] = []  # per epoch: mean train loss, val SRCC and PLCC
    for epoch in range(cfg.epochs):
        losses = []
        model.train()
        if features:
            model.maniqa.eval()
        order = torch.randperm(len(train_ids), generator=g).tolist()
        steps = range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)  # drop_last, as official
        quiet = not progress or bool(features)  # fusion-only epochs take a fraction of a second
        for start in tqdm(steps, desc=f"teacher epoch {epoch + 1}/{cfg.epochs}", disable=quiet):
            score, mos = predict([train_ids[j] for j in order[start:start + cfg.batch_size]], g)
            loss = torch.nn.functional.mse_loss(score, mos)
            losses.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        preds = []
        with torch.inference_mode():
            for start in range(0, len(val_ids), cfg.batch_size):
                preds.append(predict(val_ids[start:start + cfg.batch_size], None)[0].float().cpu())
        metrics = iqa_metrics(torch.cat(preds).numpy(), np.array([by_id[i].mos for i in val_ids]))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "val_srcc": metrics["srcc"], "val_plcc": metrics["plcc"]})
        if metrics["srcc"] + metrics["plcc"] > best["score"]:
            best = {"score": metrics["srcc"] + metrics["plcc"], "epoch": epoch + 1, **metrics}
            state = {k: v.detach().cpu().contiguous() for k, v in ours_to_official(model.state_dict()).items()}
            atomic_write_bytes(out_dir / WEIGHTS_NAME, save(state))
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
