"""Fixed linear compression of the teacher's wide vectors (4096-d semantic, 784-d quality).

The student predicts each teacher stream in a small space: PCA fitted once on the training
split's teacher vectors, scaled so the kept coordinates have unit average variance. The basis is
stored beside the student (``compression.safetensors``) so a prediction can be mapped back to
the teacher's space (``decode``) for analysis. Only the distiller fits and reads it; the exported
program and the runtime never need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from _agiqa.atomic import atomic_write_bytes

__all__ = ["LinearCompression", "COMPRESSION_NAME"]

COMPRESSION_NAME = "compression.safetensors"


@dataclass
class LinearCompression:
    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (K, D) orthonormal rows
    scale: torch.Tensor  # () divides the projected coordinates

    @classmethod
    def fit(cls, vectors: torch.Tensor, k: int) -> LinearCompression:
        """PCA of ``vectors (N, D)`` to ``min(k, N - 1, D)`` dims (exact SVD, deterministic)."""
        x = vectors.double()
        mean = x.mean(dim=0)
        k = max(1, min(k, x.shape[0] - 1, x.shape[1]))
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        components = vh[:k]
        # Fix each component's sign so the basis does not flip between equal fits.
        signs = torch.sign(components[torch.arange(k), components.abs().argmax(dim=1)])
        components = components * signs[:, None]
        var = (s[:k] ** 2).mean() / max(x.shape[0] - 1, 1)
        scale = var.sqrt().clamp_min(1e-12)
        return cls(mean.float(), components.float(), scale.float())

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(..., K)``."""
        return ((vectors.float() - self.mean) @ self.components.T) / self.scale

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., K)`` -> ``(..., D)`` (the projection of the original onto the kept subspace)."""
        return (codes.float() * self.scale) @ self.components + self.mean

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.components": self.components,
                f"{prefix}.scale": self.scale.reshape(())}


def save_compressions(directory: str | os.PathLike, streams: dict[str, LinearCompression]) -> Path:
    state = {}
    for name, comp in streams.items():
        state.update(comp.state_dict(name))
    path = Path(directory) / COMPRESSION_NAME
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}))
    return path


def load_compressions(directory: str | os.PathLike) -> dict[str, LinearCompression]:
    path = Path(directory) / COMPRESSION_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; this student folder holds no compression basis")
    state = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in state})
    return {n: LinearCompression(state[f"{n}.mean"], state[f"{n}.components"], state[f"{n}.scale"])
            for n in names}
