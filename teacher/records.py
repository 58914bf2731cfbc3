"""What the teacher labels: an image record, and decoding records one by one.

Datasets (their layouts, readers and splits) are read by the distiller (:mod:`distill.data`),
which hands the teacher a list of :class:`ImageRecord`; the teacher needs only the record and a
decode that skips unreadable files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.images import ImageLoadError, load_rgb

__all__ = ["ImageRecord", "iter_images"]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset."""

    image_id: str  # stable unique id: the path relative to the dataset root, posix form
    path: Path  # absolute path of the image file
    relpath: str  # dataset-relative posix path (equal to image_id)
    mos: float | None = None  # mean opinion score, None when the dataset has no labels
    prompt: str | None = None  # text prompt of a generated image, None when unknown


def iter_images(records: Iterable[ImageRecord], *, min_size: tuple[int, int] | None = None
                ) -> Iterator[tuple[ImageRecord, np.ndarray | None, str | None]]:
    """Decode each record with :func:`load_rgb`: yields ``(record, (H, W, 3) uint8, None)``,
    or ``(record, None, reason)`` for a file that cannot be decoded, so the caller skips it and
    counts it. ``min_size`` is passed to :func:`load_rgb` (JPEG DCT-scaled decoding)."""
    for record in records:
        try:
            image = load_rgb(record.path, min_size=min_size)
        except ImageLoadError as exc:
            yield record, None, exc.reason
        else:
            yield record, image, None
