"""How faithfully students copy the demo teacher: the three held-out SRCCs per student variant.

    python bench/distill_fidelity.py                                  # CPU: mnv3s (default), mnv4s, lcnet
    python bench/distill_fidelity.py --device cuda                    # the same on a GPU
    python bench/distill_fidelity.py --variants mnv3s --set data.demo_unlabeled=0   # a recipe change

The first variant runs the complete default demo (images, teacher training, labels); the others
reuse its images, trained teacher and label caches, so every variant is distilled from the same
teacher and evaluated on the same held-out test split. Each row: SRCC of teacher vs MOS, student
vs MOS and student vs teacher on the test split, and the run's wall time (the first includes
the teacher).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from distill.config import load_config
from distill.run import run_distillation
from student.layout import RunLayout

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
    test = result.test
    return {"variant": variant,
            "teacher_vs_mos": round((result.teacher_vs_mos or {}).get("srcc", float("nan")), 4),
            "student_vs_mos": round(test.get("vs_mos", {}).get("srcc", float("nan")), 4),
            "student_vs_teacher": round(test["vs_teacher"]["srcc"], 4),
            "plcc_vs_teacher": round(test["vs_teacher"]["plcc"], 4),
            "n_test": test["vs_teacher"]["n"], "wall_s": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help="student variants; the first one makes the shared teacher")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_fidelity"))
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for every variant, e.g. --set train.epochs=20")
    args = parser.parse_args()
    work = args.workdir.resolve()
    device = args.device or "cpu"
    rows = []
    for index, variant in enumerate(args.variants):
        shared = None if index == 0 else work / args.variants[0]
        rows.append(run_variant(variant, work, shared, device, args.overrides))
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
