"""How faithfully students copy the demo teacher: the three held-out SRCCs per student variant.

    python bench/distill_fidelity.py                                  # CPU: mnv3s (default), mnv4s, lcnet
    python bench/distill_fidelity.py --device cuda                    # the same on a GPU
    python bench/distill_fidelity.py --variants mnv3s --set data.demo_unlabeled=0   # a recipe change
    python bench/distill_fidelity.py --variants mnv3s --ood PHOTOS      # + real photos of other content
    python bench/distill_fidelity.py --run runs/demo --ood PHOTOS       # an existing run, nothing trained

``--ood PHOTOS`` adds the out-of-distribution columns: ``bench/ood_photos.py`` grades 20 distinct
photographs of PHOTOS (pristine + 4 grades each of blur, noise and JPEG: 300 images; get
photographs with ``python bench/ood_photos.py --fetch DIR``), the run's teacher labels them
(``agiqa-distill evaluate``) and the columns give SRCC(student, teacher) over all of them and
the mean within-photo severity SRCC (how well each photo's grades are ordered, 1.0 = all right)
of the teacher, the student and its exported int8 program (``--no-export`` skips the program).

The first variant runs the complete default demo (images, teacher training, labels); the others
reuse its images, trained teacher and label caches, so every variant is distilled from the same
teacher and evaluated on the same held-out test split. Each row: SRCC of teacher vs MOS, student
vs MOS and student vs teacher on the test split, and the run's wall time (the first includes
the teacher).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from distill.config import load_config
from distill.evaluate import evaluate_folder
from distill.run import run_distillation
from student.layout import RunLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ood_photos import graded_set, within_photo_srcc  # noqa: E402

DEFAULT_VARIANTS = ["mnv3s", "mnv4s", "lcnet"]


def run_variant(variant: str, work: Path, shared: Path | None, device: str | None,
                extra: list[str]) -> dict[str, object]:
    """Distil one student variant; ``shared`` is the first run's folder whose teacher, images
    and label caches are reused (None: this run makes them)."""
    overrides = [f"out_dir={work / variant}", f"student.variant={variant}"]
    if shared is not None:
        run = RunLayout(shared)
        overrides += [f"data.root={run.demo_images}", f"data.unlabeled={run.demo_unlabeled}",
                      f"teacher.path={run.teacher}", f"teacher.cache={run.labels}"]
    if device:
        overrides += [f"train.device={device}", f"teacher.device={device}"]
    started = time.time()
    result = run_distillation(load_config(None, overrides + extra), progress=False)
    return run_row(variant, result.metrics(), time.time() - started)


def run_row(variant: str, result: dict, seconds: float) -> dict[str, object]:
    """The in-distribution columns of one run (its ``metrics.json``)."""
    test = result["test"]
    held = result.get("unlabeled_holdout") or {}
    return {"variant": variant,
            "teacher_vs_mos": round((result.get("teacher_vs_mos") or {}).get("srcc", float("nan")), 4),
            "student_vs_mos": round(test.get("vs_mos", {}).get("srcc", float("nan")), 4),
            "student_vs_teacher": round(test["vs_teacher"]["srcc"], 4),
            "plcc_vs_teacher": round(test["vs_teacher"]["plcc"], 4),
            "n_test": test["vs_teacher"]["n"],
            "unlabeled_holdout_vs_teacher": round(held.get("vs_teacher", {}).get("srcc", float("nan")), 4),
            "wall_s": round(seconds, 1)}


def ood_columns(run_dir: Path, graded: Path, export: bool) -> dict[str, object]:
    """Out-of-distribution fidelity of a finished run on a graded real-photo set."""
    fidelity = evaluate_folder(run_dir, graded, progress=False)
    teacher = {s["image"]: s["teacher"] for s in fidelity.scores}
    student = {s["image"]: s["student"] for s in fidelity.scores}
    lower = bool(json.loads((RunLayout(run_dir).metrics).read_text()).get("lower_better"))
    row = {"ood_n": fidelity.n, "ood_student_vs_teacher": round(fidelity.vs_teacher["srcc"], 4),
           "ood_severity_teacher": round(within_photo_srcc(teacher, lower), 4),
           "ood_severity_student": round(within_photo_srcc(student, lower), 4)}
    if export:
        from distill.metrics import iqa_metrics
        from edge_runtime.scorer import Scorer
        from export.executorch import export_executorch

        program = run_dir / "bench_int8.pte"
        export_executorch(run_dir, program, quantize="int8")
        scorer = Scorer.from_file(program)
        int8 = {name: scorer.score(graded / name) for name in student}

        names = sorted(student)
        srcc = iqa_metrics([int8[n] for n in names], [teacher[n] for n in names])["srcc"]
        row["ood_int8_vs_teacher"] = round(srcc, 4)
        row["ood_severity_int8"] = round(within_photo_srcc(int8, lower), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help="student variants; the first one makes the shared teacher")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_fidelity"))
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for every variant, e.g. --set train.epochs=20")
    parser.add_argument("--run", type=Path, action="append", default=[],
                        help="measure these finished runs instead of distilling (repeatable)")
    parser.add_argument("--ood", type=Path, help="folder of real photographs unlike the demo's (see above)")
    parser.add_argument("--ood-photos", type=int, default=20, help="distinct photos to grade")
    parser.add_argument("--no-export", action="store_true", help="skip the int8 program's OOD columns")
    args = parser.parse_args()
    work = args.workdir.resolve()
    device = args.device or "cpu"
    graded = None
    if args.ood:
        graded = graded_set(args.ood, work / f"ood_graded_{args.ood_photos}", photos=args.ood_photos)
        print(f"out-of-distribution set: {graded} ({args.ood_photos} photos of {args.ood})", flush=True)
    rows = []
    runs = [(r.name, r.resolve()) for r in args.run] or [(v, work / v) for v in args.variants]
    for index, (variant, run_dir) in enumerate(runs):
        if args.run:
            rows.append(run_row(variant, json.loads(RunLayout(run_dir).metrics.read_text()), 0.0))
        else:
            shared = None if index == 0 else work / args.variants[0]
            rows.append(run_variant(variant, work, shared, device, args.overrides))
        if graded is not None:
            rows[-1].update(ood_columns(run_dir, graded, export=not args.no_export))
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
