"""The distillation objective: a module returning a dict of named, separately logged losses."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from student.model import StudentOutput
from teacher.cache_schema import TeacherOutput

from .config import LOSS_NAMES, LossConfig

__all__ = ["DistillationLoss", "DistillTargets"]


class DistillTargets(NamedTuple):
    """What the student learns from, row-aligned with its images (a split, or one batch)."""

    teacher: TeacherOutput  # teacher labels; semantic_vectors (N, S, Ds), quality_features (N, Dq) compressed
    mos: torch.Tensor  # (N,) ground-truth MOS, NaN where unknown

    def rows(self, index: torch.Tensor | list[int]) -> DistillTargets:
        """The targets of rows ``index``, in that order."""
        return DistillTargets(TeacherOutput(*(v[index] for v in self.teacher)), self.mos[index])

    def to(self, device: torch.device | str) -> DistillTargets:
        return DistillTargets(TeacherOutput(*(v.to(device) for v in self.teacher)), self.mos.to(device))


def _vector_kd(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE + (1 - cosine) over the last dim; both matter: MSE for magnitude, cosine for direction."""
    mse = F.mse_loss(pred, target)
    cos = 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-6).mean()
    return mse + cos


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """RankNet-style logistic loss over all ordered pairs of the batch with distinct targets."""
    diff_pred = (pred[:, None] - pred[None, :]) * scale
    sign = torch.sign(target[:, None] - target[None, :])
    mask = sign != 0
    if not mask.any():
        return pred.sum() * 0.0
    return F.softplus(-sign[mask] * diff_pred[mask]).mean()


class DistillationLoss(nn.Module):
    """Student outputs + :class:`DistillTargets` -> named losses {"score", "mos", "semantic",
    "quality", "gate", "rank", "total"} (the names of the ``loss`` config's weights). Targets:

    - ``teacher.score`` (B,) teacher score; ``mos`` (B,) with NaN where unknown
    - ``teacher.semantic_vectors`` (B, S, Ds), ``teacher.quality_features`` (B, Dq): in the compressed space
    - ``teacher.gate_weights`` (B, E) teacher gate weights (raw, as the official gate has no softmax)

    Scores are compared after dividing by ``score_std`` (the train split's teacher score std)
    so the loss weights mean the same for any score scale.
    """

    def __init__(self, config: LossConfig, score_std: float) -> None:
        super().__init__()
        self.config = config
        self.score_std = float(max(score_std, 1e-8))

    def forward(self, out: StudentOutput, targets: DistillTargets) -> dict[str, torch.Tensor]:
        cfg, inv, teacher, mos = self.config, 1.0 / self.score_std, targets.teacher, targets.mos
        losses: dict[str, torch.Tensor] = {}
        losses["score"] = F.mse_loss(out.score * inv, teacher.score * inv)
        known = torch.isfinite(mos)
        if known.any():
            losses["mos"] = F.mse_loss(out.score[known] * inv, mos[known] * inv)
        else:
            losses["mos"] = out.score.sum() * 0.0
        losses["semantic"] = _vector_kd(out.semantic_vectors, teacher.semantic_vectors)
        losses["quality"] = _vector_kd(out.quality_features, teacher.quality_features)
        t = cfg.gate_temperature
        teacher_gate = F.softmax(teacher.gate_weights.float() / t, dim=-1)
        student_log_gate = F.log_softmax(out.gate_logits / t, dim=-1)
        losses["gate"] = F.kl_div(student_log_gate, teacher_gate, reduction="batchmean") * t * t
        losses["rank"] = pairwise_rank_loss(out.score, teacher.score, scale=inv)
        losses["total"] = sum(getattr(cfg, name) * losses[name] for name in LOSS_NAMES)
        return losses
