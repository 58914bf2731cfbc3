"""Real photographs unlike the demo's, graded: the out-of-distribution set of the fidelity bench.

    python bench/ood_photos.py --fetch /tmp/photos          # Debian's wallpaper packages (apt, ~125 MB)
    python bench/ood_photos.py --src /tmp/photos --out /tmp/ood --photos 20

``--fetch DIR`` runs ``apt-get download gnome-backgrounds plasma-workspace-wallpapers`` and
``dpkg -x`` into DIR (Debian or Ubuntu; photographs and artworks, each plasma wallpaper in several
sizes, of which the largest is kept). ``graded_set`` writes, for each photo, the pristine view
(long side ``size`` px) and four grades each of Gaussian blur, Gaussian noise and JPEG:
``<photo>__<kind>_<grade>.png`` (grade 0 = pristine, 1..4 = stronger), so a quality model can
be checked on how it orders the grades within each photo.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("blur", "noise", "jpeg")
GRADES = {"blur": (0.8, 1.6, 2.8, 4.5),  # Gaussian radius, px at the graded size
          "noise": (4.0, 9.0, 18.0, 32.0),  # std, grey levels
          "jpeg": (40, 20, 10, 4)}  # quality
SUFFIXES = (".jpg", ".jpeg", ".png")


def fetch(dest: Path) -> Path:
    """Debian's wallpaper packages unpacked into ``dest`` (needs apt-get and dpkg)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "gnome-backgrounds", "plasma-workspace-wallpapers"], cwd=dest, check=True)
    for deb in sorted(dest.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(dest / "x")], check=True)
    return dest


def distinct_photos(src: Path) -> list[Path]:
    """One file per photograph: plasma's ``<Name>/contents/images/<W>x<H>.<ext>`` folders keep their
    largest size; other files count once per stem. Sorted by name."""
    best: dict[str, tuple[int, Path]] = {}
    for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
        parts = path.parts
        key = parts[parts.index("contents") - 1] if "contents" in parts else path.stem.split("-")[0]
        pixels = path.stat().st_size
        if key not in best or pixels > best[key][0]:
            best[key] = (pixels, path)
    return [best[k][1] for k in sorted(best)]


def _grade(image: Image.Image, kind: str, grade: int, rng: np.random.Generator) -> Image.Image:
    if grade == 0:
        return image
    level = GRADES[kind][grade - 1]
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=level))
    if kind == "noise":
        arr = np.asarray(image, dtype=np.float32) + rng.normal(0.0, level, (image.height, image.width, 3))
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(level))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def graded_set(src: Path, out: Path, photos: int = 20, size: int = 512, skip: int = 0, seed: int = 0) -> Path:
    """``photos`` distinct photos of ``src`` (after the first ``skip``), each pristine + 4 grades of
    each kind, as PNG files in ``out``; an existing complete folder is kept."""
    chosen = distinct_photos(src)[skip:skip + photos]
    if len(chosen) < photos:
        raise SystemExit(f"{src}: {len(chosen)} distinct photos after skipping {skip}; {photos} needed")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for path in chosen:
        name = path.parts[path.parts.index("contents") - 1] if "contents" in path.parts else path.stem
        image = Image.open(path).convert("RGB")
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        for kind in KINDS:
            for grade in range(5):
                target = out / f"{name}__{kind}_{grade}.png"
                if not target.is_file():
                    _grade(image, kind, grade, rng).save(target, compress_level=1)
    return out


def within_photo_srcc(scores: dict[str, float], lower_better: bool = False) -> float:
    """Mean over (photo, kind) of SRCC between quality and -grade (5 levels: pristine, 1..4);
    1.0 means every photo's grades are ordered right. ``scores`` maps file names to scores."""
    from scipy.stats import spearmanr

    groups: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for name, score in scores.items():
        stem = Path(name).stem
        photo, _, rest = stem.rpartition("__")
        kind, _, grade = rest.partition("_")
        groups.setdefault((photo, kind), []).append((int(grade), -score if lower_better else score))
    values = [spearmanr([-g for g, _ in rows], [s for _, s in rows]).statistic
              for rows in groups.values() if len(rows) >= 3]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetch", type=Path, help="download and unpack the wallpaper packages here")
    parser.add_argument("--src", type=Path, help="folder with photographs (searched recursively)")
    parser.add_argument("--out", type=Path, help="graded set to write")
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--skip", type=int, default=0, help="skip the first N distinct photos (another set)")
    parser.add_argument("--size", type=int, default=512, help="long side of the graded views, px")
    args = parser.parse_args()
    if args.fetch:
        print(fetch(args.fetch))
    if args.src and args.out:
        print(graded_set(args.src, args.out, args.photos, args.size, args.skip))


if __name__ == "__main__":
    main()
