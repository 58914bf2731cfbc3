"""The one image preprocessing of the library (numpy + Pillow, no torch).

Training, export calibration, export verification and the device runtime all turn a photo
into a model input with :class:`PreprocessSpec`, and the spec travels inside every student
checkpoint and every exported program's metadata, so train and device cannot drift.

The rule ("squash"): decode with :func:`edge_runtime.images.load_rgb` (EXIF applied, RGB,
JPEG DCT-downscaled to no less than twice the input size), resize the *whole* image to
``input_size`` with Pillow's antialiased filter (aspect ratio not kept: quality judgements
need all of the content, and a crop could cut away the flawed hand), scale to [0, 1], then
``(x - mean) / std`` per channel, channels first.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .images import load_rgb

__all__ = ["PreprocessSpec", "resize_rgb", "normalize"]

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "area": Image.Resampling.BOX}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an ``(H, W, 3) uint8`` image to ``size = (height, width)`` (antialiased)."""
    if interpolation not in _FILTERS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {sorted(_FILTERS)}")
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), resample=_FILTERS[interpolation])
    return np.asarray(resized, dtype=np.uint8)


def normalize(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32``: ``(x / 255 - mean) / std``."""
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input. Serialised into checkpoints and .pte metadata."""

    input_size: tuple[int, int] = (224, 224)  # (height, width) of the model input
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean on the [0, 1] scale
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel std on the [0, 1] scale
    resize: str = "squash"  # whole image to input_size, aspect ratio not kept (see module doc)
    interpolation: str = "bilinear"  # Pillow filter, antialiased when downscaling
    jpeg_draft: bool = True  # JPEG DCT downscale to >= 2x input_size before resizing
    layout: str = field(default="NCHW", init=False)  # model input layout, float32

    def __post_init__(self) -> None:
        if self.resize != "squash":
            raise ValueError(f"unknown resize rule {self.resize!r}; only 'squash' is defined")
        if self.interpolation not in _FILTERS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {sorted(_FILTERS)}")
        # JSON round trips give lists; keep the frozen dataclass hashable and comparable.
        for name in ("input_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB -> ``(3, h, w) float32`` model input."""
        return normalize(resize_rgb(rgb, self.input_size, self.interpolation), self.mean, self.std)

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode ``path`` and preprocess it: ``(3, h, w) float32``. Raises ``ImageLoadError``."""
        return self(self.decode(path))

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """Decode ``path`` to ``(H, W, 3) uint8`` exactly as the model's input path does."""
        return load_rgb(path, min_size=self.input_size if self.jpeg_draft else None)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        data = {k: v for k, v in data.items() if k != "layout"}
        unknown = set(data) - {f for f in cls.__dataclass_fields__ if f != "layout"}
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        return cls(**data)
