"""The module that is exported: a student reduced to ``image -> (score, gate_weights)``.

:class:`EdgeStudent` runs the student's own ``forward`` (its head is already written with
ops the XNNPACK delegate takes whole, see :meth:`student.model.StudentIQA.forward_head`) on a
copy in which the modules of :data:`EXPORT_SWAPS` are replaced. That table is the one place
that says what the exported program computes differently from the eager student:

* ``nn.Hardsigmoid`` (decomposed into ops that carry int64 scalar constants, whose dtype
  casts stay outside the delegate) becomes ``hardtanh(x + 3, 0, 6) / 6`` on float tensors.

The parity test checks the copy against the eager student.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EdgeStudent", "EXPORT_SWAPS", "FloatHardsigmoid", "OUTPUT_NAMES", "expert_names",
           "swap_modules"]

OUTPUT_NAMES = ("score", "gate_weights")


def expert_names(num_semantic: int) -> list[str]:
    """Names of the gate's experts, in ``gate_weights`` column order."""
    return [f"semantic_{i}" for i in range(num_semantic)] + ["quality"]


class FloatHardsigmoid(nn.Module):
    """``hardsigmoid(x) = relu6(x + 3) / 6``, written with float constants only."""

    summary = "hardtanh(x + 3, 0, 6) / 6 (float constants)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x + 3.0, 0.0, 6.0) * (1.0 / 6.0)


# Module type -> its export-friendly replacement (a module class built without arguments,
# with a ``summary`` for the export report). Add a row when a backbone brings a module whose
# ops the delegate does not take whole; the eager student keeps the original.
EXPORT_SWAPS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Hardsigmoid: FloatHardsigmoid,
}


def swap_modules(module: nn.Module, table: dict[type[nn.Module], type[nn.Module]]) -> dict[type, int]:
    """Replace, in place, every submodule of ``module`` whose type is a key of ``table`` by a new
    instance of its value; returns how many of each type were replaced (types never met: absent)."""
    swapped: dict[type, int] = {}
    for name, child in list(module.named_children()):
        replacement = table.get(type(child))
        if replacement is not None:
            setattr(module, name, replacement())
            swapped[type(child)] = swapped.get(type(child), 0) + 1
        else:
            for kind, count in swap_modules(child, table).items():
                swapped[kind] = swapped.get(kind, 0) + count
    return swapped


class EdgeStudent(nn.Module):
    """``(B, 3, H, W)`` normalised image -> ``(score (B,), gate_weights (B, E))``.

    Holds a deep copy of the student with :data:`EXPORT_SWAPS` applied, so the caller's model
    is never modified.
    """

    # int8 export quantizes the backbone (module path prefix in this wrapper) with the recipe's
    # activations. The two stream heads' linears (most of the head's weights: a quarter of the
    # demo student's int8 program while fp32) get int8 weights with dynamic activations and fp32
    # outputs, always: static int8 outputs would give the score ~256 levels (ties in a gallery
    # ranking). The experts, gate and score head stay fp32 (quantized too, a random tiny
    # student's near-tied scores lost their order).
    INT8_SCOPE = "student.backbone"
    INT8_DYNAMIC_SCOPE = ("student.semantic_head", "student.quality_head")

    def __init__(self, student: nn.Module,
                 swaps: dict[type[nn.Module], type[nn.Module]] = EXPORT_SWAPS) -> None:
        super().__init__()
        self.student = copy.deepcopy(student).eval()
        self.swaps = dict(swaps)
        self.swapped = swap_modules(self.student, self.swaps)
        self.config = student.config

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.student(x)
        return out.score, out.gate_weights

    def describe_changes(self) -> list[str]:
        """What the copy swapped, for the export report."""
        return [f"{count} nn.{kind.__name__} -> {getattr(self.swaps[kind], 'summary', self.swaps[kind].__name__)}"
                for kind, count in self.swapped.items()]
