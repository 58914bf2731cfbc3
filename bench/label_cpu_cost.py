"""CPU cost of labelling one image, step by step, on one thread (what feeds the GPU).

    python bench/label_cpu_cost.py --make-from PHOTO_DIR [PHOTO_DIR ...] --images /tmp/jpeg1024
    python bench/label_cpu_cost.py --images /tmp/jpeg1024

``--make-from`` first writes SIDE x SIDE JPEGs (quality 90, centre square, Lanczos) of the photos
under the given folders (of a folder holding one picture in several sizes, only the largest)
into ``--images``. Each step is timed per image (best of ``--reps``), and the median over the
images is printed, in ms, in a process that keeps freed memory as the labelling workers do
(``_agiqa.workers.keep_freed_memory``). A teacher on a GPU gets its views from the workers as ``uint8`` levels
and normalises them on the device (``SquareInputs(levels=True)``); a CPU teacher gets float32.

- ``decode``: ``load_rgb`` of the file, as the labeller decodes it (no DCT downscale);
- ``hash``: sha256 of the file bytes; ``hash_reread`` reads the file again first (as before);
- ``view224``: MANIQA's official view as uint8 levels (cv2-exact bicubic to 224);
  ``view224_float``: normalised too (``teacher_view``, the CPU teacher's);
  ``view224_cv2``: ``cv2.resize`` alone, for scale (if OpenCV is installed);
- ``view448``: mPLUG-Owl2's CLIP view as uint8 levels (``clip_levels`` of the square-padded image);
  ``view448_float``: its pixel values (``clip_pixel_values``, the CPU teacher's);
  ``view448_processor``: the transformers processor's own path;
- ``total``: decode + hash + view224 + view448, the per-image CPU work of one label;
- ``worker``: one item of the labeller's worker dataset as it runs (read, hash, decode, both
  level views), ``worker_cpu_teacher`` with float32 views;
- ``lookup``: both views' level lookups, done here on the CPU; on a GPU teacher it runs there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _agiqa.workers import keep_freed_memory
from edge_runtime.images import load_rgb
from edge_runtime.preprocess import normalize_table, resize_rgb
from teacher.cache import _Prepared
from teacher.labeler import TeacherConfig, TeacherInputs, teacher_view
from teacher.maniqa import MANIQA_MEAN, MANIQA_STD
from teacher.records import ImageRecord
from teacher.semantic import SquareInputs, clip_level_table, clip_levels, clip_pixel_values, expand_to_square
from teacher.views import lookup_levels

REPO = Path(__file__).resolve().parents[1]


def make_jpegs(sources: list[Path], out: Path, side: int) -> list[Path]:
    """SIDE x SIDE JPEGs of the photos under ``sources`` (largest file of each folder of sizes)."""
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[Path, list[Path]] = {}
    for root in sources:
        for path in sorted(root.rglob("*")):
            if (path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and path.is_file()
                    and not path.name.startswith("screenshot")):
                # KDE wallpapers: Name/contents/images/WxH.jpg, one picture in many sizes
                key = path.parent.parent.parent if path.parent.name == "images" else path
                groups.setdefault(key, []).append(path)
    written = []
    for index, paths in enumerate(groups.values()):
        best = max(paths, key=lambda p: int(np.prod(Image.open(p).size)))
        image = Image.open(best).convert("RGB")
        width, height = image.size
        short = min(width, height)
        box = ((width - short) // 2, (height - short) // 2, (width + short) // 2, (height + short) // 2)
        target = out / f"{index:03d}.jpg"
        image.resize((side, side), Image.Resampling.LANCZOS, box=box).save(target, quality=90)
        written.append(target)
    return written


def clip_processor(side: int = 448):
    """mPLUG-Owl2's image processor (its preprocessor_config.json: CLIP mean/std, bicubic, 448)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                 resample=3)


def median_ms(step: Callable[[Path], object], paths: list[Path], reps: int) -> float:
    best = []
    for path in paths:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step(path)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    return round(1000 * float(np.median(best)), 2)


def measure(paths: list[Path], reps: int) -> dict[str, float]:
    config = TeacherConfig.from_dict(json.loads((REPO / "configs" / "teacher_mplug_owl2.json").read_text()))
    processor = clip_processor()
    data = {p: p.read_bytes() for p in paths}
    rgb = {p: load_rgb(p) for p in paths}

    def square(path: Path) -> Image.Image:
        return expand_to_square(Image.fromarray(rgb[path]), processor.image_mean)

    def view448_processor(path: Path) -> torch.Tensor:
        return processor.preprocess([square(path).convert("RGB")], return_tensors="pt")["pixel_values"]

    def worker(levels: bool) -> Callable[[Path], object]:
        prepare = TeacherInputs(config, SquareInputs(tuple(processor.image_mean), processor, levels))
        items = {p: _Prepared([ImageRecord(p.name, p, p.name)], prepare) for p in paths}
        return lambda p: items[p][0]

    view_table = torch.from_numpy(normalize_table(MANIQA_MEAN, MANIQA_STD))
    clip_table = torch.from_numpy(clip_level_table(processor))
    levels = {p: (torch.from_numpy(resize_rgb(rgb[p], config.view_size, config.interpolation))[None],
                  torch.from_numpy(clip_levels(square(p), processor))[None]) for p in paths}
    steps: dict[str, Callable[[Path], object]] = {
        "decode": load_rgb,
        "hash": lambda p: hashlib.sha256(data[p]).hexdigest(),
        "hash_reread": lambda p: hashlib.sha256(p.read_bytes()).hexdigest(),
        "view224": lambda p: resize_rgb(rgb[p], config.view_size, config.interpolation),
        "view224_float": lambda p: teacher_view(rgb[p], config),
        "view448": lambda p: clip_levels(square(p), processor),
        "view448_float": lambda p: clip_pixel_values([square(p)], processor),
        "view448_processor": view448_processor,
        "worker": worker(levels=True),
        "worker_cpu_teacher": worker(levels=False),
        "lookup": lambda p: (lookup_levels(levels[p][0], view_table), lookup_levels(levels[p][1], clip_table)),
    }
    try:
        import cv2

        steps["view224_cv2"] = lambda p: cv2.resize(rgb[p], (224, 224), interpolation=cv2.INTER_CUBIC)
    except ImportError:
        pass
    result = {name: median_ms(step, paths, reps) for name, step in steps.items()}
    result["total"] = round(sum(result[k] for k in ("decode", "hash", "view224", "view448")), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of JPEGs (written by --make-from)")
    parser.add_argument("--make-from", type=Path, nargs="*", default=None, help="photo folders to make JPEGs of")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if args.make_from:
        make_jpegs(args.make_from, args.images, args.side)
    paths = sorted(args.images.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"{args.images}: no .jpg files; make them with --make-from PHOTO_DIR")
    torch.set_num_threads(1)
    keep_freed_memory()  # as the labelling workers run (see _agiqa.workers)
    sizes = sorted({Image.open(p).size for p in paths})
    print(json.dumps({"images": len(paths), "sizes": [list(s) for s in sizes[:3]], "threads": 1,
                      "ms_per_image": measure(paths, args.reps)}, indent=2))


if __name__ == "__main__":
    main()
