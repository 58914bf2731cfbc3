"""The module that is exported: a student reduced to ``image -> (score, gate_weights)``.

:class:`EdgeStudent` computes exactly what :meth:`student.model.StudentIQA.forward` computes
for those two outputs, but spells the head with ops the XNNPACK delegate takes whole, so no
node of the program runs outside the delegate:

* ``semantic[:, i]`` (``select``, not lowered) becomes a column slice of the semantic head;
* ``stack`` + ``flatten`` before the gate becomes one ``cat`` (same memory order);
* ``(gate.unsqueeze(-1) * experts).sum(1)`` (``sum``, not lowered) becomes an explicit
  weighted sum of sliced gate columns;
* ``squeeze(-1)`` (not lowered) becomes ``reshape(-1)`` (a ``view_copy``, lowered);
* ``nn.Hardsigmoid`` (decomposed into ops that carry int64 scalar constants, whose dtype
  casts stay outside) becomes ``relu6(x + 3) / 6`` on float tensors.

The parity test checks the rewrite against the eager student.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EdgeStudent", "OUTPUT_NAMES", "expert_names"]

OUTPUT_NAMES = ("score", "gate_weights")


def expert_names(num_semantic: int) -> list[str]:
    """Names of the gate's experts, in ``gate_weights`` column order."""
    return [f"semantic_{i}" for i in range(num_semantic)] + ["quality"]


class _Hardsigmoid(nn.Module):
    """``hardsigmoid(x) = relu6(x + 3) / 6``, written with float constants only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def _swap_hardsigmoid(module: nn.Module) -> int:
    """Replace every ``nn.Hardsigmoid`` below ``module`` in place; returns how many."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Hardsigmoid):
            setattr(module, name, _Hardsigmoid())
            swapped += 1
        else:
            swapped += _swap_hardsigmoid(child)
    return swapped


class EdgeStudent(nn.Module):
    """``(B, 3, H, W)`` normalised image -> ``(score (B,), gate_weights (B, E))``.

    Holds a deep copy of the student, so the caller's model is never modified.
    """

    # int8 export quantizes only the backbone (module path prefix in this wrapper). The head
    # is a few tiny linears: in fp32 it costs nothing measurable, and it keeps the score
    # continuous (an int8 score output has ~256 levels, so a gallery ranking gets ties).
    INT8_SCOPE = "student.backbone"

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = copy.deepcopy(student).eval()
        self.hardsigmoid_swapped = _swap_hardsigmoid(self.student)
        self.config = student.config

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, cfg = self.student, self.student.config
        pooled = s.forward_features(x)
        semantic = s.semantic_head(pooled)  # (B, S * Ds), stream i = columns [i*Ds, (i+1)*Ds)
        d = cfg.semantic_dim
        streams = [semantic[:, i * d:(i + 1) * d] for i in range(cfg.num_semantic)]
        streams.append(s.quality_head(pooled))
        experts = [expert(stream) for expert, stream in zip(s.experts, streams)]  # E x (B, W)
        gate_weights = s.gate(torch.cat(experts, dim=1)).softmax(dim=-1)  # (B, E)
        mixture = experts[0] * gate_weights[:, 0:1]
        for i in range(1, len(experts)):
            mixture = mixture + experts[i] * gate_weights[:, i:i + 1]
        score = s.score_head(mixture).reshape(-1)
        return score, gate_weights

    def describe_changes(self) -> list[str]:
        """What the wrapper rewrote, for the export report."""
        changes = ["head: select->slice, stack+flatten->cat, weighted sum->explicit adds, "
                   "squeeze->reshape (all XNNPACK-lowerable)"]
        if self.hardsigmoid_swapped:
            changes.append(f"backbone: {self.hardsigmoid_swapped} nn.Hardsigmoid -> "
                           "hardtanh(x + 3, 0, 6) / 6 (float constants)")
        return changes
