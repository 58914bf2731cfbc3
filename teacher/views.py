"""The teacher's image views as they travel from labelling workers to the device.

A view is a resized ``uint8`` image plus a per-channel table of what each grey level becomes
(``edge_runtime.preprocess.normalize_table``, or a CLIP processor's rescale and normalize).
Workers that feed a GPU send the ``uint8`` levels (a quarter of the bytes of float32 pixels) and
the lookup runs on the device, where it costs nothing; it gives the float32 values the CPU path
computes, value for value, because a lookup does no arithmetic of its own.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["lookup_levels", "to_device"]


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``: through pinned memory and a non-blocking copy for CUDA."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def lookup_levels(levels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C) uint8`` levels and a ``(C, 256) float32`` table -> ``(B, C, H, W) float32``
    with ``out[b, c, y, x] = table[c, levels[b, y, x, c]]``, on the levels' device."""
    if levels.dtype != torch.uint8 or levels.dim() != 4:
        raise ValueError(f"levels must be (B, H, W, C) uint8, got {levels.dtype} {tuple(levels.shape)}")
    channels = levels.shape[-1]
    if tuple(table.shape) != (channels, 256):
        raise ValueError(f"table must be ({channels}, 256), got {tuple(table.shape)}")
    offsets = torch.arange(channels, device=levels.device, dtype=torch.int64) * 256
    index = levels.permute(0, 3, 1, 2).to(torch.int64) + offsets.view(1, channels, 1, 1)
    return table.to(levels.device, torch.float32).flatten().take(index)
