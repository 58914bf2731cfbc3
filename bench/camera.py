"""Camera bench (issue 19): a 1080p NV21 frame scored by the C++ runtime, and the agreement of
the C++ camera path with the numpy reference (edge_runtime/camera.py) on real photos.

    python bench/camera.py --photos /work/photos                 # random mnv3s, int8 and fp32
    python bench/camera.py --photos DIR --program model.pte      # an exported program (timing)
    python bench/camera.py --photos DIR --workdir build/camera   # keep the programs and frames

Timing: ``agiqa-bench-camera bench`` (edge_runtime/cpp/src/bench_camera.cpp) on a 1920x1080 NV21
frame made from the first photo (BT.601 video range, rotation 90 as a portrait phone gives it):
median and p90 of the model alone (``Scorer::run`` on a preprocessed input), ``preprocess_frame``
alone (2 threads and 1), ``score_frame`` in total, and the share outside the model, in
alternating rounds. Without ``--program`` it exports a random ``mnv3s`` student (BatchNorm
statistics from the photos, as bench/edge_latency.py does) to int8 and fp32.

Agreement: per layout (NV21, NV12, I420, RGBA, BGRA) x rotation x colour (BT.601 video, BT.709
full), each photo squash-resized to 1920x1080, encoded with ``rgb_to_frame`` (padded rows) and
cropped by an odd rectangle: max |diff| in grey levels of the C++ reduced RGB
(``frame_to_rgb8``) and of the C++ model input (``preprocess_frame``, |diff| x std x 255) against
numpy's, and max |score diff| of the C++ ``score_frame`` against the Python
``Scorer.score_frame`` with the fp32 program. Photos: the largest image of each wallpaper folder
under ``--photos`` (JPEG, PNG or WebP), the first ``--count`` by name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "edge_runtime" / "cpp"))

import build as cpp_build  # noqa: E402  (edge_runtime/cpp/build.py)

from edge_runtime import Scorer  # noqa: E402
from edge_runtime.camera import frame_layout, frame_to_rgb, preprocess_frame, rgb_to_frame  # noqa: E402

LAYOUTS = ("nv21", "nv12", "i420", "rgba", "bgra")
ROTATIONS = (0, 90, 180, 270)
COLOURS = (("bt601", "video"), ("bt709", "full"))
FRAME_SIZE = (1080, 1920)  # (H, W)
CROP = (37, 21, 1801, 1013)  # odd left, top, width, height


def find_photos(root: Path, count: int) -> list[Path]:
    """The largest image file of each folder under ``root`` (wallpapers ship several sizes)."""
    best: dict[Path, Path] = {}
    for path in root.rglob("*"):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or "screenshot" in path.name:
            continue
        key = path.parent.parent if path.parent.name.startswith("images") else path
        if path.stat().st_size > 50_000 and (key not in best or path.stat().st_size > best[key].stat().st_size):
            best[key] = path
    photos = sorted(best.values())
    if not photos:
        raise SystemExit(f"error: no JPEG/PNG/WebP photos under {root}")
    return photos[:count]


def camera_rgb(path: Path) -> np.ndarray:
    """A photo as a 1080p camera would see it: squash-resized to 1920x1080 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(FRAME_SIZE[::-1], Image.Resampling.BICUBIC))


def write_frame(frame, folder: Path, name: str, **extra) -> tuple[Path, dict]:
    data, layout = frame_layout(frame)
    path = folder / f"{name}.raw"
    data.tofile(path)
    return path, {**layout, **extra}


def programs(args, work: Path, photos: list[Path]) -> dict[str, Path]:
    if args.program:
        return {"given": args.program}
    from bench.edge_latency import random_student
    from export import FidelityError, export_executorch

    folder = work / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    # Small crops: calibration and BatchNorm statistics. At least 16 images whatever --count is,
    # so the export's verification half has enough images for an SRCC (it refuses fewer than 3).
    for i in range(max(16, len(photos))):
        with Image.open(photos[i % len(photos)]) as image:
            rgb = image.convert("RGB")
            w, h = rgb.size
            k = i // len(photos)  # the k-th crop of this photo: shifted, 80% of each side
            box = (k % 5 * w // 25, k % 5 * h // 25)
            rgb.crop((*box, box[0] + 4 * w // 5, box[1] + 4 * h // 5)).resize((640, 400)).save(folder / f"{i:02d}.png")
    student = random_student("mnv3s", 0, folder, work / "student")
    out = {}
    for mode in ("int8", "fp32"):
        out[mode] = work / mode / "model.pte"
        if not out[mode].is_file():
            try:
                export_executorch(student, out[mode], quantize=mode, images=folder, threads=2,
                                  # a random student: the bench compares runtimes on one program,
                                  # not the program with the eager student, so only a broken one stops it
                                  min_srcc=-1.0 if mode == "int8" else None,
                                  max_abs_diff=1e-2 if mode == "fp32" else None)
            except FidelityError as exc:
                raise SystemExit(f"error: export of the {mode} bench program failed: {exc}") from None
    return out


def run_binary(command: list[str]) -> str:
    """Run the C++ bench binary; its stdout, or a one-line error with its own message."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SystemExit(f"error: {Path(command[0]).name} {command[1]} exited {done.returncode}: "
                         f"{message[-1] if message else 'no message'}")
    return done.stdout


def run_jobs(binary: Path, jobs: list[dict], work: Path, program: Path | None = None) -> list[dict]:
    (work / "jobs.json").write_text(json.dumps(jobs))
    command = [str(binary), "jobs", str(work / "jobs.json"), *([str(program)] if program else [])]
    return [json.loads(line) for line in run_binary(command).splitlines()]


def agreement(binary: Path, fp32: Path, photos: list[Path], work: Path) -> None:
    scorer = Scorer.from_file(fp32, verify_golden=False)
    spec = scorer.contract.preprocess
    grey = np.asarray(spec.std, np.float64)[:, None, None] * 255
    rows: dict[tuple, list[float]] = {}
    for p, path in enumerate(photos):
        rgb = camera_rgb(path)
        jobs, expected = [], []
        for layout in LAYOUTS:
            for matrix, color_range in COLOURS:
                frame = rgb_to_frame(rgb, layout, matrix=matrix, color_range=color_range, row_padding=16)
                for rotation in ROTATIONS:
                    raw, lay = write_frame(frame, work, f"p{p}_{layout}_{matrix}_{rotation}",
                                           rotation=rotation, crop=list(CROP), encoding=layout)
                    base = {"frame": str(raw), "layout": lay}
                    reduced = frame_to_rgb(frame, rotation=rotation, crop=CROP, input_size=spec.input_size)
                    model_input = preprocess_frame(spec, frame, rotation=rotation, crop=CROP)
                    score = float(scorer.score_frame(frame, rotation=rotation, crop=CROP))
                    key = (layout, rotation, f"{matrix} {color_range}")
                    jobs += [{**base, "what": "reduced", "input_size": list(spec.input_size),
                              "out": str(work / f"{len(jobs)}.out")},
                             {**base, "what": "input", "out": str(work / f"{len(jobs) + 1}.out")},
                             {**base, "what": "score"}]
                    expected.append((key, reduced, model_input, score))
        results = run_jobs(binary, jobs, work, fp32)
        for i, (key, reduced, model_input, score) in enumerate(expected):
            r_rgb, r_in, r_score = results[3 * i: 3 * i + 3]
            got_rgb = np.fromfile(jobs[3 * i]["out"], np.uint8).reshape(r_rgb["shape"])
            got_in = np.fromfile(jobs[3 * i + 1]["out"], np.float32).reshape(r_in["shape"])
            diffs = [float(np.abs(got_rgb.astype(np.int16) - reduced).max()),
                     float((np.abs(got_in.astype(np.float64) - model_input) * grey).max()),
                     abs(r_score["score"] - score)]
            old = rows.get(key, [0.0, 0.0, 0.0])
            rows[key] = [max(a, b) for a, b in zip(old, diffs)]
    print(f"\nagreement, C++ vs numpy on {len(photos)} real photos at 1920x1080, crop {CROP}, "
          f"rows padded by 16 bytes; fp32 program, input {spec.input_size[0]}x{spec.input_size[1]} "
          f"({spec.interpolation}, jpeg_draft={spec.jpeg_draft}); 'reduced RGB' is frame_to_rgb "
          f"reduced on the draft rule for that input")
    print(f"{'layout':<6} {'rot':>4} {'colour':<12} {'reduced RGB':>12} {'input (grey)':>13} {'|score diff|':>13}")
    for (layout, rotation, colour), (d_rgb, d_in, d_score) in rows.items():
        print(f"{layout:<6} {rotation:>4} {colour:<12} {d_rgb:>12.0f} {d_in:>13.2g} {d_score:>13.2g}")
    worst = np.max(list(rows.values()), axis=0)
    print(f"worst: reduced RGB {worst[0]:.0f} grey levels, model input {worst[1]:.2g} grey levels, "
          f"score {worst[2]:.2g} (goal: <= 1 grey level, <= 1e-5)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="folder of real photos (searched recursively)")
    parser.add_argument("--count", type=int, default=8, help="photos in the agreement table")
    parser.add_argument("--program", type=Path, help="an exported model.pte (timing only)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep programs and frames here (default: temp)")
    parser.add_argument("--build-dir", type=Path, default=None, help="C++ build folder (edge_runtime/cpp/build.py)")
    parser.add_argument("--no-agreement", action="store_true")
    args = parser.parse_args(argv)
    photos = find_photos(args.photos, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        binary = cpp_build.build("host", args.build_dir).with_name("agiqa-bench-camera")
        pte = programs(args, work, photos)
        frame = rgb_to_frame(camera_rgb(photos[0]), "nv21")
        raw, layout = write_frame(frame, work, "bench_nv21", rotation=90, crop=None, encoding="nv21")
        (work / "bench_nv21.json").write_text(json.dumps(layout))
        print(f"camera bench: {photos[0].name} as 1920x1080 NV21 (BT.601 video), rotation 90")
        for mode, program in pte.items():
            stdout = run_binary([str(binary), "bench", str(program), str(raw), str(work / "bench_nv21.json"),
                                 "--runs", str(args.runs), "--threads", str(args.threads)])
            print(f"\n{mode} {program}:\n" + "\n".join(stdout.splitlines()[1:]))
            result = json.loads(stdout.splitlines()[0])
            print(f"  goal score_frame <= 1.3x the model: {result['ratio']:.2f}x "
                  f"{'ok' if result['ratio'] <= 1.3 else 'MISSED'}")
        if not args.no_agreement:
            if "fp32" not in pte:
                print("\n(agreement needs the fp32 program: run without --program)")
            else:
                agreement(binary, pte["fp32"], photos, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
