"""Safe image decoding shared by labeling, training, export calibration and the device runtime.

Every image that enters the library comes through :func:`load_rgb`, so a photo is decoded the
same way everywhere: EXIF orientation applied, any mode (grayscale, palette, RGBA, CMYK,
16-bit) turned into 8-bit RGB, and every failure (zero-byte, not an image, truncated,
decompression bomb) raised as one :class:`ImageLoadError` whose message names the file and why.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "ImageLoadError", "MAX_IMAGE_PIXELS", "find_images", "load_image",
           "load_rgb", "to_rgb_array", "to_rgb_image"]

def _image_suffixes() -> frozenset[str]:
    """The photo formats a folder scan picks up: the common ones, plus AVIF where this Pillow
    decodes it (Pillow >= 11.3 built with libavif; ``PIL.features.check("avif")``)."""
    suffixes = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
    try:
        from PIL import features

        if features.check("avif"):
            suffixes.add(".avif")
    except (ImportError, ValueError):  # an older Pillow has no such feature name
        pass
    return frozenset(suffixes)


# What counts as an image file when a folder is scanned (scoring, calibration, datasets).
IMAGE_SUFFIXES = _image_suffixes()

# Refuse anything above ~179 MP (Pillow's own error threshold is 2x its warning threshold of
# 89 MP). Phones shoot 12-200 MP; 179 MP decoded as RGB is ~0.5 GB, the most we accept.
MAX_IMAGE_PIXELS = 2 * 89_478_485


class ImageLoadError(ValueError):
    """An image could not be decoded. ``reason`` is short and human readable."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def find_images(folder: str | os.PathLike,
                on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, by suffix), sorted.

    Symlinked folders are followed, each real folder once: a link back to a folder already
    being scanned (a loop) is skipped, and reported to ``on_skip(path, reason)``, or by one
    warning per scan when no ``on_skip`` is given. Hidden files and folders (.DS_Store,
    .ipynb_checkpoints, ...) are never images.
    """
    folder = Path(folder)
    found: list[Path] = []
    loops: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink: a loop or a twin
            loops.append((Path(root), f"symlink to a folder already scanned "
                                      f"({os.path.realpath(root)}), skipped"))
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in files if not name.startswith(".")
                     and Path(name).suffix.lower() in IMAGE_SUFFIXES
                     and os.path.isfile(os.path.join(root, name)))
    for path, reason in loops:
        if on_skip is not None:
            on_skip(path, reason)
    if loops and on_skip is None:
        warnings.warn(f"{loops[0][0]}: {loops[0][1]}"
                      + (f" (and {len(loops) - 1} more)" if len(loops) > 1 else ""), stacklevel=2)
    return sorted(found)


def to_rgb_image(image: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to an 8-bit ``RGB`` PIL image.

    16-bit and float modes are rescaled to 8 bits (not clipped: a 16-bit PNG would otherwise
    turn almost white); alpha is composited over white, the usual viewer background. An
    ``RGB`` image is returned as it is (no copy).
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        # 16-bit grayscale PNGs decode as "I" or "I;16" with values in [0, 65535].
        arr = arr / 257.0 if arr.max(initial=0) > 255 else arr
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    # CMYK, YCbCr, LAB, HSV, L, 1 all have a direct conversion in Pillow.
    return image if image.mode == "RGB" else image.convert("RGB")


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to an ``(H, W, 3) uint8`` RGB array (writable,
    its own memory): :func:`to_rgb_image`, then one copy out of Pillow."""
    return np.array(to_rgb_image(image), dtype=np.uint8)


def load_rgb(path: str | os.PathLike, *, min_size: tuple[int, int] | None = None,
             data: bytes | None = None) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, 3) uint8`` RGB array, EXIF orientation applied.

    ``data``: the file's bytes, already read (e.g. to hash them): decoded instead of reading
    ``path`` again, which then only names the file in errors.

    ``min_size=(h, w)`` lets JPEG decoding use DCT scaling (Pillow's ``draft``): the decoder
    returns the smallest power-of-two reduction that is still at least ``2 * min_size`` (two
    times, so the later antialiased resize still has real pixels to average). A 12 MP photo
    scored at 224 px decodes at 1/8 size, several times faster. Training, export calibration
    and the device all call this with the same ``min_size`` so they see identical pixels.

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated, or too large.
    """
    return np.array(load_image(path, min_size=min_size, data=data), dtype=np.uint8)


def load_image(path: str | os.PathLike, *, min_size: tuple[int, int] | None = None,
               data: bytes | None = None) -> Image.Image:
    """:func:`load_rgb` as an ``RGB`` PIL image (the same pixels): for a resize that stays in
    Pillow, which saves the copies into and out of numpy (a gallery's multi-megapixel photos).

    Raises:
        ImageLoadError: the file is missing, empty, not an image, truncated, or too large.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise ImageLoadError(path, "file not found")
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 89 MP and MAX_IMAGE_PIXELS; we decide with our own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(
                        path,
                        f"image too large ({width}x{height} = {width * height:,} pixels > "
                        f"{MAX_IMAGE_PIXELS:,}); downscale it before scoring",
                    )
                if min_size is not None and image.format == "JPEG":
                    # Orientation may swap the axes, so ask for the larger side in both.
                    side = 2 * max(min_size)
                    image.draft("RGB", (side, side))
                image.load()
                ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when upright
                rgb = to_rgb_image(image)
                # Pixels Pillow memory-mapped from the file (readonly) must not outlive it.
                return rgb.copy() if rgb.readonly else rgb
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"decompression bomb refused ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated JPEG/PNG data surfaces as OSError ("image file is truncated").
        raise ImageLoadError(path, f"corrupt or truncated image data ({exc})") from None
