"""The demo image set: real photographs shipped with installed packages, degraded on purpose.

Sources (all on disk with the library's dependencies, nothing downloaded): scikit-learn's
sample photos (``china.jpg``, ``flower.jpg``; scikit-learn comes with executorch) and
matplotlib's ``grace_hopper.jpg``. Each image is a random view (crop, flip) of one photo with one
degradation of random strength: none, Gaussian blur, noise, JPEG compression, or scrambled
content (tiles shuffled: sharp pixels, broken semantics, the failure AIGC images show).
Deterministic for a seed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from edge_runtime.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["demo_photos", "make_demo_images", "DEGRADATIONS"]

DEGRADATIONS = ("sharp", "blur", "noise", "jpeg", "scramble")


def demo_photos() -> list[tuple[str, np.ndarray]]:
    """The real photographs available on this install, as ``(name, (H, W, 3) uint8)``."""
    paths = []
    try:
        import sklearn.datasets

        base = Path(sklearn.datasets.__file__).parent / "images"
        paths += [base / "china.jpg", base / "flower.jpg"]
    except ImportError:  # scikit-learn is an executorch dependency, but stay usable without it
        pass
    import matplotlib

    paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    photos = [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in paths if p.is_file()]
    if not photos:
        raise FileNotFoundError("no demo photographs found in scikit-learn or matplotlib; "
                                "point data.root at your own images instead")
    return photos


def _degrade(image: Image.Image, kind: str, strength: float, rng: np.random.Generator) -> Image.Image:
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=0.5 + 4.5 * strength))
    if kind == "noise":
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0.0, 4.0 + 46.0 * strength, arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(round(40 - 38 * strength)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "scramble":
        grid = 2 + int(round(4 * strength))
        arr = np.asarray(image)
        h, w = (arr.shape[0] // grid) * grid, (arr.shape[1] // grid) * grid
        tiles = [arr[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid]
                 for i in range(grid) for j in range(grid)]
        order = rng.permutation(len(tiles))
        rows = [np.concatenate([tiles[order[i * grid + j]] for j in range(grid)], axis=1) for i in range(grid)]
        return Image.fromarray(np.concatenate(rows, axis=0))
    return image


def make_demo_images(out_dir: str | os.PathLike, count: int = 240, seed: int = 0,
                     size: tuple[int, int] = (256, 320)) -> Path:
    """Write ``count`` demo images (PNG, ``size = (H, W)``) and ``demo.json`` describing each.

    Idempotent: a folder whose ``demo.json`` matches (count, seed, size) is left as it is.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "demo.json"
    key = {"count": count, "seed": seed, "size": list(size)}
    if manifest_path.is_file():
        import json

        if json.loads(manifest_path.read_text()).get("key") == key:
            return out_dir
    rng = np.random.default_rng(seed)
    photos = demo_photos()
    entries = []
    for index in range(count):
        name, photo = photos[index % len(photos)]
        ph, pw = photo.shape[:2]
        frac = rng.uniform(0.45, 1.0)
        ch, cw = int(ph * frac), int(pw * frac)
        top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        view = Image.fromarray(photo[top:top + ch, left:left + cw])
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        view = view.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        kind = DEGRADATIONS[int(rng.integers(0, len(DEGRADATIONS)))]
        strength = float(rng.uniform(0.0, 1.0))
        image = _degrade(view, kind, strength, rng)
        filename = f"{index:04d}_{name}_{kind}.png"
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write_bytes(out_dir / filename, buf.getvalue())
        entries.append({"file": filename, "photo": name, "degradation": kind,
                        "strength": round(strength, 4)})
    atomic_write_json(manifest_path, {"key": key, "images": entries})
    return out_dir
