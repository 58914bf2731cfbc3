"""Edge latency bench: eager fp32 student vs fp32 .pte vs int8 .pte (static and dynamic activations), plus a 12 MP JPEG.

    python bench/edge_latency.py                      # random mnv3s student, bundled photos
    python bench/edge_latency.py --student runs/r1    # a distillation run (its splits) or student folder
    python bench/edge_latency.py --variant lcnet --images photos/
    python bench/edge_latency.py --ort --no-stem-twin # + ONNX Runtime fp32/int8, + the same student without its stem

Everything is measured in one process at batch 1 with the same thread count for torch, the
ExecuTorch runtime and ONNX Runtime (default 2), in alternating blocks: each round runs every
program over all held-out photos in turn, so a slow spell of a shared machine hits all of them.
``--ort`` exports the same student (the wrapper our programs are built from) to ONNX and runs
ONNX Runtime fp32 and static int8 (QDQ, per-channel weights, calibrated on the same images as
our int8 program; needs the ``bench`` extra). ``--no-stem-twin`` (random students only) adds the
same variant without its contrast stem, exported int8 the same way: what the stem costs.

Without --images the bench builds its photo set from real demo images of ``distill.demo``
(crops of the real photos installed with scikit-learn and matplotlib, sharp and degraded: blur,
noise, JPEG, scrambled content). With no trained student, the random student's BatchNorm
statistics are re-estimated on the calibration photos so its activations have realistic ranges
(what int8 quantization depends on); its weights stay random, so read the agreement columns as
quantization noise, not as quality judgement.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ort_anchor import export_onnx, ort_runner, quantize_onnx  # noqa: E402
from distill.demo import demo_photos, make_demo_images  # noqa: E402
from edge_runtime import Scorer  # noqa: E402
from export import EdgeStudent, FidelityError, export_executorch  # noqa: E402
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


def timed_blocks(programs: dict[str, Callable[[torch.Tensor], float]], inputs: list[torch.Tensor],
                 rounds: int) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Per-call latencies (ms) of each program and its scores on the first pass, in alternating
    blocks: round after round, each program scores all ``inputs`` (not call by call, which would
    measure cold caches; not program by program, which would give one program a quiet spell)."""
    for fn in programs.values():  # warm-up
        for x in inputs[:3]:
            fn(x)
    ms: dict[str, list[float]] = {name: [] for name in programs}
    outputs: dict[str, list[float]] = {name: [] for name in programs}
    for r in range(rounds):
        for name, fn in programs.items():
            for x in inputs:
                start = time.perf_counter()
                y = fn(x)
                ms[name].append((time.perf_counter() - start) * 1e3)
                if r == 0:
                    outputs[name].append(y)
    return {name: (np.asarray(ms[name]), outputs[name]) for name in programs}


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
    parser.add_argument("--ort", action="store_true", help="also ONNX Runtime fp32 and int8 (bench extra)")
    parser.add_argument("--no-stem-twin", action="store_true",
                        help="also the random variant without its contrast stem, int8")
    args = parser.parse_args(argv)
    if args.no_stem_twin and args.student is not None:
        parser.error("--no-stem-twin builds a random twin: use it with --variant, not --student")

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        images = args.images
        if images is None and (args.student is None or not RunLayout(args.student).is_run()):
            images = make_demo_images(work / "photos", count=args.photos)
        twin_dir = None
        if args.student is not None:
            source = args.student
            student_dir = resolve_source(source, images).student_dir
            label = f"student {student_dir}"
        else:
            source = student_dir = random_student(args.variant, args.seed, images, work / "student")
            label = f"random {args.variant} (BatchNorm statistics from the calibration photos)"
            if args.no_stem_twin:
                twin_dir = random_student(args.variant, args.seed, images, work / "student_no_stem",
                                          contrast_stem=False)
        student = StudentIQA.from_pretrained(student_dir).eval()
        spec = student.config.preprocess

        # (row name, source, --quantize, --int8-activations)
        modes = [("fp32", source, "fp32", "static"), ("int8", source, "int8", "static"),
                 ("int8 dynamic", source, "int8", "dynamic")]
        if twin_dir is not None:
            modes += [("int8 no stem", twin_dir, "int8", "static"),
                      ("int8 dynamic no stem", twin_dir, "int8", "dynamic")]
        reports, pte = {}, {}
        for name, src, mode, activations in modes:
            pte[name] = work / f"{name.replace(' ', '_')}.pte"
            try:
                reports[name] = export_executorch(
                    src, pte[name], quantize=mode, images=images, int8_activations=activations,
                    calibration=args.calibration, min_srcc=-1.0 if mode == "int8" else None,
                    max_abs_diff=None if mode == "int8" else 1e-3, threads=args.threads)
            except FidelityError as exc:  # keep benchmarking; the table shows the numbers
                reports[name] = exc.report
        resolved = resolve_source(source, images)
        inputs = [torch.from_numpy(spec.load(p))[None] for p in resolved.verification_images]

        programs: dict[str, Callable[[torch.Tensor], float]] = {}
        sizes, program_reports = {}, {}
        programs["eager fp32 (torch)"] = lambda x: float(student(x).score[0])
        sizes["eager fp32 (torch)"] = (student_dir / WEIGHTS_NAME).stat().st_size
        scorers = {}
        for name, *_ in modes:
            scorer = scorers[name] = Scorer.from_file(pte[name], threads=args.threads)
            row = f"{name} .pte (XNNPACK)"
            programs[row] = lambda x, s=scorer: float(s.run(x.numpy())["score"][0])
            sizes[row], program_reports[row] = pte[name].stat().st_size, reports[name]
        if args.ort:
            for name, path in ort_programs(student, spec, resolved.calibration_images[:args.calibration],
                                           work).items():
                programs[name] = lambda x, r=ort_runner(path, args.threads): r(x.numpy())
                sizes[name] = path.stat().st_size
        with torch.inference_mode():
            results = timed_blocks(programs, inputs, args.rounds)

        print(f"\nedge latency bench: {label}; input {spec.input_size[0]}x{spec.input_size[1]}, "
              f"batch 1, {args.threads} threads, {len(inputs)} held-out photos x {args.rounds} rounds "
              "(alternating blocks)")
        print(f"{'program':<36} {'median ms':>9} {'p90 ms':>8} {'x int8':>7} {'size MB':>8} {'max|diff|':>10} "
              f"{'SRCC':>7} {'distinct':>8} {'outside':>7}")
        reference = np.asarray(results["eager fp32 (torch)"][1])
        medians = {name: float(np.median(ms)) for name, (ms, _) in results.items()}
        int8_ms = medians["int8 .pte (XNNPACK)"]
        for name, (ms, out) in results.items():
            twin = "no stem" in name  # another model: its scores are not comparable
            diff = "-" if twin else f"{np.abs(np.asarray(out) - reference).max():.2e}"
            agree = "-" if twin else f"{srcc(out, reference):.4f}"
            report = program_reports.get(name)
            outside = "-" if report is None else str(report.nodes_outside_delegate)
            print(f"{name:<36} {medians[name]:>9.2f} {np.percentile(ms, 90):>8.2f} "
                  f"{medians[name] / int8_ms:>7.2f} {sizes[name] / 1e6:>8.2f} {diff:>10} {agree:>7} "
                  f"{len(set(out)):>8} {outside:>7}")
        # "distinct": different scores among the photos (ties make a sorted gallery ambiguous).
        print(f"eager score spread over these photos: std {reference.std():.3g}, "
              f"range {reference.min():.4g}..{reference.max():.4g}")
        ort = [medians[n] for n in medians if n.startswith("ONNX Runtime")]
        for recipe, label in (("int8", "static int8"), ("int8 dynamic", "dynamic int8 (the default)")):
            goals, ms = [], medians[f"{recipe} .pte (XNNPACK)"]
            if f"{recipe} no stem .pte (XNNPACK)" in medians:
                ratio = ms / medians[f"{recipe} no stem .pte (XNNPACK)"]
                goals.append(f"with stem <= 1.15x without: {ratio:.2f}x {_ok(ratio <= 1.15)}")
            if ort:
                ratio = ms / min(ort)
                goals.append(f"<= 0.5x the faster ONNX Runtime: {ratio:.2f}x {_ok(ratio <= 0.5)}")
            if goals:
                print(f"stem goals, {label}: " + "; ".join(goals))
        int8_row = "int8 dynamic .pte (XNNPACK)"  # the default export
        end_to_end(work, scorers["int8 dynamic"], spec, medians[int8_row], medians["eager fp32 (torch)"],
                   sizes["fp32 .pte (XNNPACK)"], sizes[int8_row], program_reports[int8_row])
    return 0


def random_student(variant: str, seed: int, images: Path, out: Path, **overrides) -> Path:
    """A random ``variant`` (``seed``) with BatchNorm statistics from the even photos, saved to ``out``."""
    torch.manual_seed(seed)
    model = create_student(variant, **overrides).eval()
    recalibrate_batchnorm(model, resolve_source_images(images, model.config.preprocess))
    return model.save_pretrained(out)


def ort_programs(student: StudentIQA, spec, calibration: Sequence[Path], work: Path) -> dict[str, Path]:
    """ONNX files of ``student`` (the exported wrapper): fp32, and int8 calibrated on ``calibration``."""
    fp32 = export_onnx(EdgeStudent(student), torch.zeros(1, 3, *spec.input_size), work / "student.onnx")
    arrays = [spec.load(p)[None] for p in calibration]
    int8 = quantize_onnx(fp32, work / "student.int8.onnx", arrays)
    return {"ONNX Runtime fp32": fp32, "ONNX Runtime int8 (QDQ)": int8}


def resolve_source_images(images: Path, spec) -> list[torch.Tensor]:
    from edge_runtime.scorer import find_images

    return [torch.from_numpy(spec.load(p))[None] for p in find_images(images)[0::2]]


def end_to_end(work: Path, scorer: Scorer, spec, int8_ms: float, eager_ms: float,
               fp32_bytes: int, int8_bytes: int, int8_report) -> None:
    jpeg = make_12mp_jpeg(work / "photo_12mp.jpg")
    timings = {}
    # Both decode rules, whichever the student's contract uses (its scores hold only for that one).
    for name, s in (("draft", dataclasses.replace(spec, jpeg_draft=True)),
                    ("full decode", dataclasses.replace(spec, jpeg_draft=False))):
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
    used = "draft" if spec.jpeg_draft else "full decode"
    print(f"\n12 MP JPEG (4000x3000, q90, {jpeg.stat().st_size / 1e6:.1f} MB) end to end, dynamic int8 .pte "
          f"(the student's contract: jpeg_draft={spec.jpeg_draft}, so {used}):")
    print(f"  JPEG draft : decode {d_dec:7.1f} ms (to {d_shape[1]}x{d_shape[0]}), "
          f"decode+resize+model {d_e2e:7.1f} ms")
    print(f"  full decode: decode {f_dec:7.1f} ms (to {f_shape[1]}x{f_shape[0]}), "
          f"decode+resize+model {f_e2e:7.1f} ms")
    e2e = d_e2e if spec.jpeg_draft else f_e2e
    print(f"  draft saves {f_e2e - d_e2e:.1f} ms ({100 * (1 - d_e2e / f_e2e):.0f}%); "
          f"e2e ({used}) / int8 model-only = {e2e / int8_ms:.1f}x")
    v = int8_report.verification
    distinct = v.distinct_scores / max(v.reference_distinct_scores, 1)
    print("\ntargets, dynamic int8 (the default): "
          f"int8 <= eager/4: {int8_ms:.2f} vs {eager_ms / 4:.2f} ms {_ok(int8_ms <= eager_ms / 4)}; "
          f"int8 size <= fp32/3: {int8_bytes / fp32_bytes:.2f} {_ok(int8_bytes <= fp32_bytes / 3)}; "
          f"SRCC >= 0.999 on the export's verification set: {v.srcc if v.srcc is None else round(v.srcc, 4)} "
          f"{_ok(v.srcc is not None and v.srcc >= 0.999)}; distinct scores >= 95%: {distinct:.0%} "
          f"{_ok(distinct >= 0.95)}; "
          f"outside delegate 0: {int8_report.nodes_outside_delegate} {_ok(int8_report.nodes_outside_delegate == 0)}; "
          f"e2e <= 3x model: {e2e / int8_ms:.1f}x {_ok(e2e <= 3 * int8_ms)}")


def _ok(flag: bool) -> str:
    return "OK" if flag else "MISS"


if __name__ == "__main__":
    raise SystemExit(main())
