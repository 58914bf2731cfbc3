"""The one image preprocessing of the library (numpy + Pillow, no torch).

Training, export calibration, export verification and the device runtime all turn a photo
into a model input with :class:`PreprocessSpec`, and the spec travels inside every student
checkpoint and every exported program's metadata, so train and device cannot drift.

The rule ("squash"): decode with :func:`edge_runtime.images.load_rgb` (EXIF applied, RGB,
JPEG DCT-downscaled to no less than twice the input size when ``jpeg_draft``), resize the
*whole* image to ``input_size`` (aspect ratio not kept: quality judgements need all of the
content, and a crop could cut away the flawed hand) with ``interpolation``, scale to [0, 1],
then ``(x - mean) / std`` per channel, channels first.

``interpolation="cv2_bicubic"`` (the students' default, so a student sees what its teacher saw)
is the resize of the official MA-AGIQA code,
``cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)``, reimplemented in numpy so that the
runtime needs no OpenCV: Keys cubic with A = -0.75, half-pixel centres, replicated border and
*no* antialiasing when downscaling (the official teacher was trained on that aliased view).
tests/teacher/test_official_view.py checks it against ``opencv-python-headless``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .images import load_rgb

__all__ = ["INTERPOLATIONS", "PreprocessSpec", "pillow_resize", "resize_rgb", "resize_cv2_bicubic", "normalize",
           "normalize_table"]

_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "area": Image.Resampling.BOX}
# Pillow's antialiased filters, and OpenCV's INTER_CUBIC (not antialiased) for the official teacher.
INTERPOLATIONS = (*_FILTERS, "cv2_bicubic")


def resize_rgb(rgb: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize an ``(H, W, 3) uint8`` image to ``size = (height, width)``: a Pillow filter
    (antialiased) or ``"cv2_bicubic"`` (:func:`resize_cv2_bicubic`)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {sorted(INTERPOLATIONS)}")
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    if interpolation == "cv2_bicubic":
        return resize_cv2_bicubic(rgb, size)
    return np.asarray(pillow_resize(Image.fromarray(rgb), size, interpolation), dtype=np.uint8)


def pillow_resize(image: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    """Pillow's antialiased resize to ``size = (height, width)``, width first, then height.

    Each pass rounds to uint8, so the order of the two passes changes pixels by 1. One
    ``Image.resize`` call lets Pillow pick the order (Pillow 13 runs the vertical pass first for
    some sizes, older versions always the horizontal one); two calls fix it, so every Pillow
    version and the C++ scorer (``resize_rgb8``, horizontal first) give the same bytes.
    """
    height, width = size
    resample = _FILTERS[interpolation]
    if image.width != width:
        image = image.resize((width, image.height), resample=resample)
    if image.height != height:
        image = image.resize((width, height), resample=resample)
    return image


@functools.lru_cache(maxsize=64)
def _cubic_taps(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output position: the 4 source indices (border replicated), ``(dst_len, 4) int64``,
    and the Keys cubic weights (A = -0.75, half-pixel centres), ``(dst_len, 4) float32``.
    Cached per size (a gallery or dataset repeats a few sizes); the arrays are read-only."""
    pos = (np.arange(dst_len, dtype=np.float64) + 0.5) * (src_len / dst_len) - 0.5
    start = np.floor(pos)
    dist = np.abs((pos - start)[:, None] - np.arange(-1, 3))  # distance to each tap, in [0, 2]
    a = -0.75
    near = ((a + 2) * dist - (a + 3)) * dist * dist + 1  # |d| <= 1
    far = ((a * dist - 5 * a) * dist + 8 * a) * dist - 4 * a  # 1 < |d| < 2
    weights = np.where(dist <= 1, near, np.where(dist < 2, far, 0.0)).astype(np.float32)
    index = np.clip(start.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src_len - 1)
    index.flags.writeable = weights.flags.writeable = False
    return index, weights


@functools.lru_cache(maxsize=64)
def _cv2_bicubic_plan(src_size: tuple[int, int], size: tuple[int, int], channels: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The gathers of :func:`resize_cv2_bicubic` for one size pair, cached: the source rows the
    output needs ``(R,)``, each output row's 4 taps among them ``(4, height)``, the flat source
    columns of the 4 column taps ``(4 * width * C,)`` (tap-major), and both axes' weights,
    ``(4, width * C)`` and ``(4, height, 1)`` float32."""
    (src_height, src_width), (height, width) = src_size, size
    x_index, x_weights = _cubic_taps(src_width, width)
    y_index, y_weights = _cubic_taps(src_height, height)
    rows, row_of = np.unique(y_index, return_inverse=True)
    # Rows as (R, W*C): tap k of output column x, channel c is flat column x_index[x, k] * C + c.
    columns = (x_index[:, :, None] * channels + np.arange(channels)).transpose(1, 0, 2).reshape(-1)
    column_weights = np.repeat(x_weights.T, channels, axis=1)
    plan = (rows, row_of.reshape(height, 4).T.copy(), columns, column_weights, y_weights.T[:, :, None].copy())
    for array in plan:
        array.flags.writeable = False
    return plan


def resize_cv2_bicubic(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)`` for ``(H, W, C) uint8``.

    What the official MA-AGIQA code ran: opencv-python on x86-64 routes INTER_CUBIC on uint8
    through Intel IPP, which filters in float32 (exact Keys weights, rows first, round to
    nearest at the end) rather than OpenCV's own 11-bit fixed point. This reproduces the IPP
    result for all but ~1 pixel value in 10^5, which is off by 1 (a float32 tie at .5); an
    OpenCV built without IPP (e.g. on ARM) differs from it by 1 on ~3% of values.

    Vectorised, one pass per axis over only the source rows the output needs: the 4 column taps
    in one gather per block of rows, then per tap one multiply-add. The float32 arithmetic is
    fixed (each product rounded, taps added in order -1, 0, 1, 2, rows before columns), because
    the rounding of each step is part of matching OpenCV on .5 boundaries; a matrix product
    would sum in another order (or fused) and move values across them.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"resize_cv2_bicubic expects an (H, W, C) uint8 image, got {rgb.dtype} {rgb.shape}")
    height, width = size
    src_height, src_width, channels = rgb.shape
    if (src_height, src_width) == (height, width):
        return rgb.copy()
    rows, row_of, columns, column_weights, row_weights = _cv2_bicubic_plan(
        (src_height, src_width), (height, width), channels)
    flat = np.ascontiguousarray(rgb).reshape(src_height, src_width * channels)
    # Rows first, a block of source rows at a time: the 4 taps' gather (uint8) and products
    # (float32) stay in cache, and no image-sized temporary is allocated per call (those cost page
    # faults, as much as the arithmetic, whenever the allocator hands them back to the system).
    horizontal = np.empty((len(rows), width * channels), np.float32)
    block = min(_ROW_BLOCK, len(rows))
    gathered = np.empty((block, columns.size), np.uint8)
    products = np.empty((block, 4, width * channels), np.float32)
    for start in range(0, len(rows), block):
        count = min(block, len(rows) - start)
        np.take(flat[rows[start:start + count]], columns, axis=1, out=gathered[:count])
        np.multiply(gathered[:count].reshape(count, 4, -1), column_weights, out=products[:count])
        _sum_of_taps(np.moveaxis(products[:count], 1, 0), out=horizontal[start:start + count])
    vertical = np.empty((height, width * channels), np.float32)
    _sum_of_taps([horizontal[row_of[k]] * row_weights[k] for k in range(4)], out=vertical)
    np.rint(vertical, out=vertical)
    np.clip(vertical, 0, 255, out=vertical)
    return vertical.astype(np.uint8).reshape(height, width, channels)


_ROW_BLOCK = 64  # source rows per block of the horizontal pass (about 0.7 MB of products at 224)


def _sum_of_taps(products, out: np.ndarray) -> np.ndarray:
    """The 4 float32 products added in order into ``out``: ``((p0 + p1) + p2) + p3``."""
    first, second, third, fourth = products
    np.add(first, second, out=out)
    out += third
    out += fourth
    return out


def normalize(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32``: ``(x / 255 - mean) / std``."""
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """:func:`normalize` of each of the 256 grey levels, per channel: ``(3, 256) float32``, so that
    ``table[c, rgb[..., c]]`` is ``normalize(rgb)[c]`` value for value (the same float32 steps, for
    one element at a time). A labeller ships ``uint8`` views and looks them up on its device."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, 3)
    return np.ascontiguousarray(normalize(levels, mean, std)[:, 0, :])


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its input. Serialised into checkpoints and .pte metadata."""

    input_size: tuple[int, int] = (224, 224)  # (height, width) of the model input
    # Per-channel normalisation on the [0, 1] scale. No default: the model says (a student's
    # comes from its backbone), so no input is silently normalised for another backbone.
    mean: tuple[float, float, float] = field(kw_only=True)
    std: tuple[float, float, float] = field(kw_only=True)
    resize: str = "squash"  # whole image to input_size, aspect ratio not kept (see module doc)
    interpolation: str = "bilinear"  # Pillow filter (antialiased when downscaling) or "cv2_bicubic"
    jpeg_draft: bool = True  # JPEG DCT downscale to >= 2x input_size before resizing
    layout: str = field(default="NCHW", init=False)  # model input layout, float32

    def __post_init__(self) -> None:
        if self.resize != "squash":
            raise ValueError(f"unknown resize rule {self.resize!r}; only 'squash' is defined")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {sorted(INTERPOLATIONS)}")
        # JSON round trips give lists; keep the frozen dataclass hashable and comparable.
        for name in ("input_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B); got {list(self.mean)}, {list(self.std)}")

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
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        data = {k: v for k, v in data.items() if k != "layout"}
        unknown = set(data) - {f for f in cls.__dataclass_fields__ if f != "layout"}
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        missing = [name for name in ("mean", "std") if name not in data]
        if missing:
            raise ValueError(f"preprocessing lacks {' and '.join(missing)} (the model's input normalisation)")
        return cls(**data)
