"""Edge latency bench: eager fp32 student vs fp32 .pte vs int8 .pte, plus a 12 MP JPEG end to end.

    python bench/edge_latency.py                      # random mnv3s student, bundled photos
    python bench/edge_latency.py --student runs/r1    # a distillation run (its splits) or student folder
    python bench/edge_latency.py --variant lcnet --images photos/

Everything is measured in one process at batch 1 with the same thread count for torch and the
ExecuTorch runtime (default 2). Without --images the bench builds its photo set from real
demo images of ``distill.demo`` (crops of the real photos installed with scikit-learn and
matplotlib, sharp and degraded: blur, noise, JPEG, scrambled content). With no trained
student, the random student's BatchNorm statistics are re-estimated on the calibration photos
so its activations have realistic ranges (what int8 quantization depends on); its weights stay
random, so read the agreement columns as quantization noise, not as quality judgement.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.demo import demo_photos, make_demo_images  # noqa: E402
from edge_runtime import Scorer  # noqa: E402
from export import FidelityError, export_executorch  # noqa: E402
from export.source import resolve_source  # noqa: E402
from student.layout import RunLayout  # noqa: E402
from student.model import WEIGHTS_NAME, StudentIQA, create_student  # noqa: E402


def make_12mp_jpeg(path: Path) -> Path:
    """A real photo (the first demo photo, china.jpg) upscaled to 4000x3000, quality-90 JPEG."""
    image = Image.fromarray(demo_photos()[0][1]).resize((4000, 3000), Image.BICUBIC)
    image.save(path, "JPEG", quality=90)
    return path


def recalibrate_batchnorm(model: StudentIQA, images: list[torch.Tensor]) -> None:
    """Re-estimate BatchNorm running statistics on real photos (weights untouched)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the whole pass
    model.train()
    with torch.no_grad():
        model(torch.cat(images))
    model.eval()


def timed(fn, inputs: list, rounds: int) -> tuple[np.ndarray, list[float]]:
    """Per-call latencies (ms) over ``rounds`` passes of ``inputs``; outputs of the first pass."""
    fn(inputs[0])  # warm-up
    outputs, ms = [], []
    for r in range(rounds):
        for x in inputs:
            start = time.perf_counter()
            y = fn(x)
            ms.append((time.perf_counter() - start) * 1e3)
            if r == 0:
                outputs.append(y)
    return np.asarray(ms), outputs


def srcc(a, b) -> float:
    from scipy import stats

    return float(stats.spearmanr(a, b)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--student", type=Path, help="distillation run folder or student folder")
    group.add_argument("--variant", default="mnv3s", help="random student variant (default mnv3s)")
    parser.add_argument("--images", type=Path, help="folder of real photos (default: built-in set)")
    parser.add_argument("--photos", type=int, default=96, help="size of the built-in photo set")
    parser.add_argument("--calibration", type=int, default=64, help="int8 calibration images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timing passes over the images")
    parser.add_argument("--workdir", type=Path, help="keep the .pte files here (default: temp)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random student")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        images = args.images
        if images is None and (args.student is None or not RunLayout(args.student).is_run()):
            images = make_demo_images(work / "photos", count=args.photos)
        if args.student is not None:
            source = args.student
            student_dir = resolve_source(source, images).student_dir
            label = f"student {student_dir}"
        else:
            model = create_student(args.variant).eval()
            spec = model.config.preprocess
            calib = resolve_source_images(images, spec)
            recalibrate_batchnorm(model, calib)
            source = student_dir = model.save_pretrained(work / "student")
            label = f"random {args.variant} (BatchNorm statistics from the calibration photos)"
        student = StudentIQA.from_pretrained(student_dir).eval()
        spec = student.config.preprocess

        reports = {}
        for mode in ("fp32", "int8"):
            try:
                reports[mode] = export_executorch(
                    source, work / f"{mode}.pte", quantize=mode, images=images,
                    calibration=args.calibration, min_srcc=-1.0 if mode == "int8" else None,
                    max_abs_diff=None if mode == "int8" else 1e-3, threads=args.threads)
            except FidelityError as exc:  # keep benchmarking; the table shows the numbers
                reports[mode] = exc.report
        verify_paths = resolve_source(source, images).verification_images
        inputs = [torch.from_numpy(spec.load(p))[None] for p in verify_paths]

        with torch.inference_mode():
            eager_ms, eager_out = timed(lambda x: float(student(x).score[0]), inputs, args.rounds)
        rows = [("eager fp32 (torch)", eager_ms, eager_out, student_dir / WEIGHTS_NAME, None)]
        scorers = {}
        for mode in ("fp32", "int8"):
            scorer = scorers[mode] = Scorer.from_file(work / f"{mode}.pte", threads=args.threads)
            ms, out = timed(lambda x, s=scorer: float(s.run(x.numpy())["score"][0]), inputs, args.rounds)
            rows.append((f"{mode} .pte (XNNPACK)", ms, out, work / f"{mode}.pte", reports[mode]))

        print(f"\nedge latency bench: {label}; input {spec.input_size[0]}x{spec.input_size[1]}, "
              f"batch 1, {args.threads} threads, {len(inputs)} held-out photos x {args.rounds} rounds")
        print(f"{'model':<20} {'median ms':>9} {'p90 ms':>8} {'size MB':>8} {'max|diff|':>10} "
              f"{'SRCC':>7} {'distinct':>8} {'outside':>7}")
        reference = np.asarray(eager_out)
        for name, ms, out, path, report in rows:
            diff = np.abs(np.asarray(out) - reference).max()
            outside = "-" if report is None else str(report.nodes_outside_delegate)
            print(f"{name:<20} {np.median(ms):>9.2f} {np.percentile(ms, 90):>8.2f} "
                  f"{path.stat().st_size / 1e6:>8.2f} {diff:>10.2e} {srcc(out, reference):>7.4f} "
                  f"{len(set(out)):>8} {outside:>7}")
        # "distinct": different scores among the photos (ties make a sorted gallery ambiguous).
        print(f"eager score spread over these photos: std {reference.std():.3g}, "
              f"range {reference.min():.4g}..{reference.max():.4g}")
        end_to_end(work, scorers["int8"], spec, np.median(rows[2][1]), np.median(rows[0][1]),
                   rows[1][3].stat().st_size, rows[2][3].stat().st_size, rows[2][4])
    return 0


def resolve_source_images(images: Path, spec) -> list[torch.Tensor]:
    from edge_runtime.scorer import find_images

    return [torch.from_numpy(spec.load(p))[None] for p in find_images(images)[0::2]]


def end_to_end(work: Path, scorer: Scorer, spec, int8_ms: float, eager_ms: float,
               fp32_bytes: int, int8_bytes: int, int8_report) -> None:
    jpeg = make_12mp_jpeg(work / "photo_12mp.jpg")
    full = dataclasses.replace(spec, jpeg_draft=False)
    timings = {}
    for name, s in (("draft", spec), ("full decode", full)):
        decode_ms, e2e_ms = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            rgb = s.decode(jpeg)
            t1 = time.perf_counter()
            scorer.run(s(rgb)[None])
            t2 = time.perf_counter()
            decode_ms.append((t1 - t0) * 1e3)
            e2e_ms.append((t2 - t0) * 1e3)
        timings[name] = (float(np.median(decode_ms)), float(np.median(e2e_ms)), rgb.shape)
    (d_dec, d_e2e, d_shape), (f_dec, f_e2e, f_shape) = timings["draft"], timings["full decode"]
    print(f"\n12 MP JPEG (4000x3000, q90, {jpeg.stat().st_size / 1e6:.1f} MB) end to end, int8 .pte:")
    print(f"  JPEG draft : decode {d_dec:7.1f} ms (to {d_shape[1]}x{d_shape[0]}), "
          f"decode+resize+model {d_e2e:7.1f} ms")
    print(f"  full decode: decode {f_dec:7.1f} ms (to {f_shape[1]}x{f_shape[0]}), "
          f"decode+resize+model {f_e2e:7.1f} ms")
    print(f"  draft saves {f_e2e - d_e2e:.1f} ms ({100 * (1 - d_e2e / f_e2e):.0f}%); "
          f"e2e / int8 model-only = {d_e2e / int8_ms:.1f}x")
    v = int8_report.verification
    print("\ntargets: "
          f"int8 <= eager/4: {int8_ms:.2f} vs {eager_ms / 4:.2f} ms {_ok(int8_ms <= eager_ms / 4)}; "
          f"int8 size <= fp32/3.5: {fp32_bytes / max(int8_bytes, 1):.2f}x {_ok(int8_bytes <= fp32_bytes / 3.5)}; "
          f"SRCC >= 0.995: {v.srcc if v.srcc is None else round(v.srcc, 4)} "
          f"{_ok(v.srcc is not None and v.srcc >= 0.995)}; "
          f"outside delegate 0: {int8_report.nodes_outside_delegate} {_ok(int8_report.nodes_outside_delegate == 0)}; "
          f"e2e <= 3x model: {d_e2e / int8_ms:.1f}x {_ok(d_e2e <= 3 * int8_ms)}")


def _ok(flag: bool) -> str:
    return "OK" if flag else "MISS"


if __name__ == "__main__":
    raise SystemExit(main())
