"""The demo image set: real photographs shipped with installed packages and procedural scenes,
degraded on purpose, each with a ground-truth MOS derived from its degradation.

Sources (all on disk or generated, nothing downloaded): scikit-learn's sample photos
(``china.jpg``, ``flower.jpg``; scikit-learn comes with executorch), matplotlib's
``grace_hopper.jpg``, and (``SCENE_SHARE`` of the images) procedural scenes with natural-image
statistics from :mod:`distill.scenes` (fractal textures, dead-leaves occlusion, shapes and
gradients, text), so the demo's models see content of every kind, not three photographs.
Each image is a random view (crop, flip) of one source with one
degradation of random strength in [0, 1]: none (``sharp``), Gaussian blur, noise, JPEG
compression, or scrambled content (tiles shuffled: sharp pixels, broken semantics, the failure
AIGC images show). As a camera would produce them, degradations are applied to the crop at the
photo's native resolution, then the view is resized to the output size. Blur and noise are
specified in output pixels (a radius of 2 output pixels is a radius of 2 / scale native pixels),
so equal strengths look equally strong whatever the crop's scale.

Ground truth (:func:`demo_mos`), on a 1-5 scale like AGIQA-3k's::

    MOS = 5 - 4 * severity        severity in [0, 1]
    sharp     severity 0                      (MOS 5)
    blur      severity = strength             (MOS 5 .. 1)
    noise     severity = strength
    jpeg      severity = strength
    scramble  severity = 0.6 + 0.4 * strength (MOS 2.6 .. 1: at its worst as bad as the heaviest blur)

Deterministic for a seed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from _agiqa.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from student.layout import RunLayout
from teacher.distributed import DistContext
from teacher.labeler import TEACHER_CONFIG_NAME, save_tiny_teacher
from teacher.records import ImageRecord

from .config import RunConfig
from .data import split_records
from .labels import TeacherRef, label_cache_dir, label_records
from .report import display_path
from .scenes import make_scene
from .teacher_train import TRAINED_MARKER, train_teacher

__all__ = ["demo_photos", "demo_mos", "make_demo_images", "train_demo_teacher", "DEGRADATIONS", "MOS_RANGE",
           "MOS_FILE", "MANIFEST_FILE", "UNLABELED_SIZES"]

DEGRADATIONS = ("sharp", "blur", "noise", "jpeg", "scramble")
MOS_RANGE = (1.0, 5.0)  # worst, best; higher is better
MOS_FILE = "mos.csv"  # columns path, mos: readable as data.kind=csv
MANIFEST_FILE = "demo.json"  # every image's photo, degradation and strength, and the generator key
_SCRAMBLE_FLOOR = 0.6  # the mildest scramble (4 tiles) is already a bad image
SCENE_SHARE = 0.75  # of the demo's images are views of procedural scenes (content of every kind)
VIEWS_PER_SCENE = 8  # views (crop, flip, degradation) per scene on average


def demo_mos(kind: str, strength: float) -> float:
    """The demo's ground-truth MOS (1-5, higher is better) for a degradation ``kind`` of
    ``strength`` in [0, 1]; the table is in the module docstring."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; valid: {', '.join(DEGRADATIONS)}")
    strength = float(np.clip(strength, 0.0, 1.0))
    severity = {"sharp": 0.0, "scramble": _SCRAMBLE_FLOOR + (1 - _SCRAMBLE_FLOOR) * strength}.get(kind, strength)
    worst, best = MOS_RANGE
    return best - (best - worst) * severity


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


# The demo's unlabeled pool, at the resolutions and aspect ratios of real photos (long side 512
# to 640, 4:3, 3:4, 16:9): the teacher sees each whole image resized to 224 x 224 without
# antialiasing, so what a degradation looks like to it depends on the image's size, and a student
# distilled on 256 x 320 images alone copies it poorly on larger ones (real photos of 512 px: SRCC
# to the teacher 0.77 -> 0.84; README, step 5 of "How the demo learns quality").
UNLABELED_SIZES = ((288, 512), (480, 640), (640, 480), (360, 640))


def _degrade(image: Image.Image, kind: str, strength: float, scale: float,
             rng: np.random.Generator) -> Image.Image:
    """Degrade a native-resolution crop; ``scale`` = output pixels per native pixel."""
    if kind == "blur":  # radius 0.4 .. 3 output pixels
        return image.filter(ImageFilter.GaussianBlur(radius=(0.4 + 2.6 * strength) / scale))
    if kind == "noise":  # std 3 .. 40 grey levels in the output; downscaling averages noise away
        sigma = (3.0 + 37.0 * strength) / min(scale, 1.0)
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0.0, sigma, arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "jpeg":  # quality 40 .. 2
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(round(40 - 38 * strength)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "scramble":  # 2 x 2 .. 6 x 6 tiles
        grid = 2 + int(round(4 * strength))
        arr = np.asarray(image)
        h, w = (arr.shape[0] // grid) * grid, (arr.shape[1] // grid) * grid
        tiles = [arr[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid]
                 for i in range(grid) for j in range(grid)]
        order = rng.permutation(len(tiles))
        rows = [np.concatenate([tiles[order[i * grid + j]] for j in range(grid)], axis=1) for i in range(grid)]
        return Image.fromarray(np.concatenate(rows, axis=0))
    return image


def _scene_pool(seed: int, n: int, size: tuple[int, int], photos: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """``n`` procedural scenes (:mod:`distill.scenes`) a quarter larger than the output size, so
    views of them are cropped and slightly downscaled like the photographs' views."""
    rng = np.random.default_rng([seed, 7919])  # its own stream: the pool does not shift the views' draws
    native = (int(size[0] * 1.25), int(size[1] * 1.25))
    pool = []
    for i in range(n):
        kind, image = make_scene(rng, native, photos)
        pool.append((f"scene{i:03d}-{kind}", image))
    return pool


def _demo_view(index: int, rng: np.random.Generator, photos: list[tuple[str, np.ndarray]],
               scenes: list[tuple[str, np.ndarray]], scene_share: float, size: tuple[int, int],
               sizes: Sequence[tuple[int, int]] | None, out_dir: Path) -> tuple[dict, Callable[[], None]]:
    """Draw and degrade demo image ``index`` (every draw from ``rng``, in the generator's order):
    its manifest entry, and the function that resizes, encodes and writes it (no draws)."""
    if sizes:  # drawn only then, so a single-size set keeps its images
        size = tuple(sizes[int(rng.integers(len(sizes)))])
    from_scene = scenes and rng.random() < scene_share
    name, photo = scenes[int(rng.integers(len(scenes)))] if from_scene else photos[index % len(photos)]
    ph, pw = photo.shape[:2]
    frac = rng.uniform(0.7, 1.0) if from_scene else rng.uniform(0.45, 1.0)
    ch, cw = int(ph * frac), int(pw * frac)
    top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    view = Image.fromarray(photo[top:top + ch, left:left + cw])
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # Scrambling a scene of random shapes leaves it as plausible as before: only photographs
    # (whose content has an order to break) are scrambled.
    kinds = DEGRADATIONS[:-1] if from_scene else DEGRADATIONS
    kind = kinds[int(rng.integers(0, len(kinds)))]
    strength = float(rng.uniform(0.0, 1.0))
    scale = float(np.sqrt(size[0] * size[1] / (ch * cw)))
    degraded = _degrade(view, kind, strength, scale, rng)
    filename = f"{index:04d}_{name}_{kind}.png"

    def write() -> None:
        image = degraded.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)  # 5x faster to write than the default 6; same pixels
        atomic_write_bytes(out_dir / filename, buf.getvalue())

    entry = {"file": filename, "photo": name, "degradation": kind,
             "strength": round(strength, 4), "mos": round(demo_mos(kind, strength), 4)}
    return entry, write


def make_demo_images(out_dir: str | os.PathLike, count: int = 240, seed: int = 0,
                     size: tuple[int, int] = (256, 320), scene_share: float = SCENE_SHARE,
                     sizes: Sequence[tuple[int, int]] | None = None) -> Path:
    """Write ``count`` demo images (PNG, ``size = (H, W)``), ``demo.json`` describing each and
    ``mos.csv`` (``path,mos``) with their ground-truth MOS. A ``scene_share`` of them are views of
    procedural scenes (each scene gives about ``VIEWS_PER_SCENE`` views), the rest views of the
    photographs. ``sizes``: instead of ``size``, each image one of these ``(H, W)``, drawn per
    image (:data:`UNLABELED_SIZES`: the resolutions and aspect ratios of real photos).

    Idempotent: a folder whose ``demo.json`` matches (count, seed, size(s), scene_share) is left as it is.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_FILE
    key = {"count": count, "seed": seed, "size": list(size), "scene_share": scene_share, "version": 4}
    if sizes:
        key["size"] = [list(s) for s in sizes]
    if manifest_path.is_file() and (out_dir / MOS_FILE).is_file():
        if json.loads(manifest_path.read_text()).get("key") == key:
            return out_dir
    rng = np.random.default_rng(seed)
    photos = demo_photos()
    largest = (max(h for h, _ in sizes), max(w for _, w in sizes)) if sizes else size
    scenes = _scene_pool(seed, n=round(count * scene_share / VIEWS_PER_SCENE), size=largest,
                         photos=[p for _, p in photos])
    entries = []
    # Resizing, PNG encoding and writing release the GIL: two threads do them while this loop
    # draws and degrades the next views (the draws stay in one stream, in order; same files).
    with ThreadPoolExecutor(2, thread_name_prefix="agiqa-demo-write") as pool:
        pending: deque[Future] = deque()
        for index in range(count):
            entry, write = _demo_view(index, rng, photos, scenes, scene_share, size, sizes, out_dir)
            entries.append(entry)
            pending.append(pool.submit(write))
            if len(pending) > 8:  # a few images in flight, not the whole set in memory
                pending.popleft().result()
        for future in pending:
            future.result()  # re-raises a failed write

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "mos"])
    writer.writerows([e["file"], e["mos"]] for e in entries)
    atomic_write_text(out_dir / MOS_FILE, text.getvalue())
    atomic_write_json(manifest_path, {"key": key, "mos_scale": list(MOS_RANGE), "images": entries})
    return out_dir


def train_demo_teacher(cfg: RunConfig, run: RunLayout, records: list[ImageRecord], ctx: DistContext,
                       progress: bool) -> Path:
    """The demo's teacher folder: the tiny MA-AGIQA trained on the train split against the demo
    MOS by ``train_teacher``, once; a re-run finds ``teacher/train_metrics.json`` and reuses it."""
    trained, init = run.teacher, run.teacher_init
    if (trained / TRAINED_MARKER).is_file():
        ctx.say(f"[2/6] teacher: reusing the trained demo teacher in {display_path(trained)}")
        return trained
    if ctx.is_main and not (init / TEACHER_CONFIG_NAME).is_file():
        save_tiny_teacher(init, seed=cfg.train.seed, maniqa="demo")  # random; its MLLM gives the semantic vectors
    ctx.barrier()
    splits = split_records(records, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                           seed=cfg.data.split_seed)
    fit_ids = set(splits["train"]) | set(splits["val"])  # the teacher never sees the test images
    untrained = TeacherRef.read(init)
    cache = label_records(cfg, label_cache_dir(cfg, run, untrained), [r for r in records if r.image_id in fit_ids],
                          untrained, ctx, progress)
    t = cfg.teacher.train
    stages = (f"{t.maniqa_epochs} epochs of its MANIQA branch, then {t.epochs} of the fusion" if t.maniqa_epochs
              else f"{t.epochs} epochs")
    ctx.say(f"[2/6] teacher: training the tiny MA-AGIQA against the demo MOS on {len(splits['train'])} train "
            f"images ({stages}; validation on {len(splits['val'])}; test images never seen)")
    if ctx.is_main:
        train_config = replace(t, device=t.device or cfg.teacher.device or str(ctx.device))
        best = train_teacher(init, cache.out_dir, records, splits, trained, train_config,
                             split_seed=cfg.data.split_seed, progress=progress)
        ctx.say(f"      teacher vs MOS on validation: SRCC {best['srcc']:.3f}, PLCC {best['plcc']:.3f} "
                f"(best epoch {best['epoch']})")
    ctx.barrier()
    return trained
