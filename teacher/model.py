"""MA-AGIQA (Wang et al. 2024): MANIQA quality features + MLLM semantic vectors, fused by a MoE.

Follows the public code (wangpuyi/MA-AGIQA, ``models/MA_AGIQA.py``):

    quality_features = fc_score(x) * fc_weight(x)          (B, 784)  one value per 8x8 patch
    expert 0 (semantic content) = ReLU(Linear(4096, 784))  then Dropout   ("fc4096_784_a2")
    expert 1 (coherence)        = ReLU(Linear(4096, 784))  then Dropout   ("fc4096_784_b2")
    expert 2 (quality)          = Linear(784, 784)                         ("fc784_784")
    gate_weights = Linear(3 * 784, 3)(concat(experts))     no softmax     ("gating")
    score        = Linear(784, 1)(sum_i gate_i * expert_i)                 ("output_fc")

Expert order follows the official data loader: ``tensor_1`` is the semantic-content vector,
``tensor_2`` the coherence vector. The official gate has no softmax; ``gate_softmax=False``
keeps that (checkpoint fidelity) and ``True`` normalises it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from _agiqa.checkpoints import shapes, state_mismatch

from .cache_schema import TeacherOutput
from .maniqa import Maniqa, ManiqaConfig, create_maniqa
from .state_dict import read_state_dict

__all__ = ["FusionConfig", "MoEFusion", "MAAGIQA", "TeacherOutput", "official_to_ours",
           "ours_to_official", "load_official_checkpoint", "CheckpointError", "revive_quality_branch"]


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (missing or unexpected keys, wrong shapes)."""


@dataclass
class FusionConfig:
    semantic_dim: int = 4096  # hidden size of the MLLM (mPLUG-Owl2 / LLaMA-2-7B: 4096)
    num_semantic: int = 2  # semantic vectors per image: [semantic content, coherence]
    quality_dim: int = 784  # MANIQA patches of a 224 crop: 28 x 28
    dropout: float = 0.1  # after the semantic experts' ReLU, as the official code
    gate_softmax: bool = False  # official: raw linear gate; True: softmax-normalised gate


class MoEFusion(nn.Module):
    """The MA-AGIQA mixture of experts over semantic vectors and the quality feature."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        width = config.quality_dim
        self.semantic_experts = nn.ModuleList(
            nn.Sequential(nn.Linear(config.semantic_dim, width), nn.ReLU(), nn.Dropout(config.dropout))
            for _ in range(config.num_semantic))
        self.quality_expert = nn.Linear(config.quality_dim, width)
        self.gate = nn.Linear((config.num_semantic + 1) * width, config.num_semantic + 1)
        self.score_head = nn.Linear(width, 1)

    def forward(self, semantic_vectors: torch.Tensor, quality_features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S, D)``, ``(B, 784)`` -> ``score (B,)``, ``gate_weights (B, S + 1)``."""
        if semantic_vectors.shape[1:] != (self.config.num_semantic, self.config.semantic_dim):
            raise ValueError(f"semantic_vectors must be (B, {self.config.num_semantic}, "
                             f"{self.config.semantic_dim}), got {tuple(semantic_vectors.shape)}")
        semantic_vectors = semantic_vectors.to(self.quality_expert.weight.dtype)
        experts = [e(semantic_vectors[:, i]) for i, e in enumerate(self.semantic_experts)]
        experts.append(self.quality_expert(quality_features))
        gate_weights = self.gate(torch.cat(experts, dim=1))
        if self.config.gate_softmax:
            gate_weights = gate_weights.softmax(dim=-1)
        mixture = torch.bmm(gate_weights.unsqueeze(1), torch.stack(experts, dim=1)).squeeze(1)
        return self.score_head(mixture).squeeze(-1), gate_weights


class MAAGIQA(nn.Module):
    """MANIQA branch + MoE fusion. Inputs are precomputed semantic vectors, as in the paper's code."""

    def __init__(self, maniqa: ManiqaConfig | str = "base", fusion: FusionConfig | None = None) -> None:
        super().__init__()
        self.maniqa: Maniqa = create_maniqa(maniqa)
        self.fusion = MoEFusion(fusion or FusionConfig())

    def forward(self, images: torch.Tensor, semantic_vectors: torch.Tensor) -> TeacherOutput:
        """``images (B, 3, 224, 224)`` normalised (x - 0.5) / 0.5; ``semantic_vectors (B, S, D)``."""
        quality_features = self.maniqa.forward_quality_features(images)
        score, gate_weights = self.fusion(semantic_vectors, quality_features)
        return TeacherOutput(score, semantic_vectors, quality_features, gate_weights)


def revive_quality_branch(model: MAAGIQA, start: float = 1.0) -> None:
    """For a randomly initialised MA-AGIQA: a random ``fc_score`` ends in a ReLU that is dead for
    every patch more often than not, which zeroes the quality branch (and its gradient); a
    positive bias ``start`` keeps the branch alive (the mean MOS: MANIQA's pooled score starts there)."""
    with torch.no_grad():
        model.maniqa.fc_score[3].bias.fill_(start)


# -- the official checkpoint ------------------------------------------------------------------
# Layers built in the official MA_AGIQA.__init__ that its forward never calls (left-overs of
# earlier fusion variants). Their keys are dropped when loading, and nothing else is.
UNUSED_OFFICIAL_PREFIXES = ("fc39_784.", "encoder_layer.", "fc_output.", "fc4096_784_a.",
                            "fc4096_784_b.", "quality.", "fc784x3_1.", "fc4096_1024_a.",
                            "fc4096_1024_b.")
_FUSION_RENAMES = [  # (official regex, ours); the MANIQA branch keeps its official names.
    (r"^fc4096_784_a2\.0\.", "fusion.semantic_experts.0.0."),
    (r"^fc4096_784_b2\.0\.", "fusion.semantic_experts.1.0."),
    (r"^fc784_784\.", "fusion.quality_expert."),
    (r"^gating\.", "fusion.gate."),
    (r"^output_fc\.", "fusion.score_head."),
]


def official_to_ours(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an official MA-AGIQA state dict to this module's names; returns (state, skipped keys)."""
    renamed, skipped = {}, []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(UNUSED_OFFICIAL_PREFIXES):
            skipped.append(key)
            continue
        for pattern, repl in _FUSION_RENAMES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, repl, key)] = value
                break
        else:
            renamed[f"maniqa.{key}"] = value
    return renamed, skipped


def ours_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`official_to_ours` (used to write checkpoints the official code reads)."""
    inverse = [(re.escape(ours), official.strip("^").replace("\\.", ".")) for official, ours in _FUSION_RENAMES]
    out = {}
    for key, value in state.items():
        for pattern, repl in inverse:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            out[key.removeprefix("maniqa.")] = value
    return out


def load_official_checkpoint(model: MAAGIQA, path: str | os.PathLike, *, allow_pickle: bool = False
                             ) -> list[str]:
    """Load an official MA-AGIQA state dict (``torch.save(net.state_dict())``, or safetensors).

    Skips exactly the layers the official forward never uses and fails on anything else that is
    missing, unexpected or of the wrong shape. Returns the skipped keys.
    """
    state, skipped = official_to_ours(read_state_dict(path, allow_pickle=allow_pickle))
    problems = state_mismatch(shapes(model.state_dict()), shapes(state))
    if problems:
        raise CheckpointError(f"{path}: not an MA-AGIQA checkpoint for this teacher config ({problems.summary()}); "
                              "check the teacher preset (maniqa size, MLLM hidden size) matches the weights")
    model.load_state_dict(state)
    return skipped
