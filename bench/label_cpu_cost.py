"""CPU cost of labelling one image, step by step, on one thread (what feeds the GPU).

    python bench/label_cpu_cost.py --make-from PHOTO_DIR [PHOTO_DIR ...] --images /tmp/jpeg1024
    python bench/label_cpu_cost.py --images /tmp/jpeg1024

``--make-from`` first writes SIDE x SIDE JPEGs (quality 90, centre square, Lanczos) of the photos
under the given folders (of a folder holding one picture in several sizes, only the largest)
into ``--images``. Each step is timed per image (best of ``--reps``), and the median over the
images is printed, in ms:

- ``decode``: ``load_rgb`` of the file, as the labeller decodes it (no DCT downscale);
- ``hash``: sha256 of the file bytes; ``hash_reread`` reads the file again first (as before);
- ``view224``: MANIQA's official view (``teacher_view``: cv2-exact bicubic to 224, normalise);
  ``view224_cv2``: ``cv2.resize`` alone, for scale (if OpenCV is installed);
- ``view448``: mPLUG-Owl2's CLIP view as the labeller makes it (``clip_pixel_values`` on the
  square-padded image); ``view448_processor``: the transformers processor's own path;
- ``total``: decode + hash + view224 + view448, the per-image CPU work of one label.
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

from edge_runtime.images import load_rgb
from teacher.labeler import TeacherConfig, teacher_view
from teacher.semantic import expand_to_square

try:
    from teacher.semantic import clip_pixel_values
except ImportError:  # a checkout from before it: only the processor's path is measured
    clip_pixel_values = None

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

    def view448(path: Path) -> torch.Tensor:
        return clip_pixel_values([expand_to_square(Image.fromarray(rgb[path]), processor.image_mean)], processor)

    def view448_processor(path: Path) -> torch.Tensor:
        square = expand_to_square(Image.fromarray(rgb[path]).convert("RGB"), processor.image_mean)
        return processor.preprocess([square], return_tensors="pt")["pixel_values"]

    steps: dict[str, Callable[[Path], object]] = {
        "decode": load_rgb,
        "hash": lambda p: hashlib.sha256(data[p]).hexdigest(),
        "hash_reread": lambda p: hashlib.sha256(p.read_bytes()).hexdigest(),
        "view224": lambda p: teacher_view(rgb[p], config),
        "view448": view448 if clip_pixel_values is not None else view448_processor,
        "view448_processor": view448_processor,
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
    sizes = sorted({Image.open(p).size for p in paths})
    print(json.dumps({"images": len(paths), "sizes": [list(s) for s in sizes[:3]], "threads": 1,
                      "ms_per_image": measure(paths, args.reps)}, indent=2))


if __name__ == "__main__":
    main()
