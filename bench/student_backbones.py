"""Choose the default student by measurement: agreement with the teacher vs int8 .pte latency.

    python bench/student_backbones.py                              # all variants, CPU, with export
    python bench/student_backbones.py --device cuda --no-export    # accuracy only (GPU)
    python bench/student_backbones.py --variants mnv3s lcnet --demo-images 480

Every variant is distilled on the same demo images from the same tiny teacher (one shared label
cache), evaluated on the same held-out split, then (unless --no-export) exported to an int8
XNNPACK .pte whose per-image latency (batch 1) the export's own verification measures.
Params and FLOPs are at the variant's input size; the budget is <= 5M params and <= 1 GFLOP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from distill.config import load_config
from distill.demo import make_demo_images
from distill.run import run_distillation
from student.model import create_student
from teacher.labeler import save_tiny_teacher

DEFAULT_VARIANTS = ["mnv3s", "mnv4s", "lcnet", "mnv3l075"]


def cost(variant: str) -> tuple[float, float]:
    model = create_student(variant).eval()
    x = torch.zeros(1, 3, *model.config.input_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return sum(p.numel() for p in model.parameters()) / 1e6, counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_backbones"))
    parser.add_argument("--demo-images", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-export", action="store_true")
    args = parser.parse_args()
    work = args.workdir.resolve()
    images = make_demo_images(work / "images", count=args.demo_images)
    teacher = work / "teacher"
    if not (teacher / "teacher.json").is_file():
        save_tiny_teacher(teacher)
    rows = []
    for variant in args.variants:
        overrides = [f"out_dir={work / variant}", f"student.variant={variant}", f"data.root={images}",
                     f"teacher.path={teacher}", f"teacher.cache={work / 'labels'}",
                     f"train.epochs={args.epochs}"]
        if args.device:
            overrides.append(f"train.device={args.device}")
        result = run_distillation(load_config(None, overrides), progress=False)
        params, gflops = cost(variant)
        row = {"variant": variant, "params_M": round(params, 2), "GFLOPs": round(gflops, 3),
               "srcc_vs_teacher": round(result.test["vs_teacher"]["srcc"], 4),
               "plcc_vs_teacher": round(result.test["vs_teacher"]["plcc"], 4),
               "train_s": round(result.seconds, 1)}
        if not args.no_export:
            from export import export_executorch

            report = export_executorch(work / variant, work / f"{variant}.int8.pte", quantize="int8")
            row.update({"int8_ms_median": round(report.verification.latency_ms_median, 3),
                        "int8_MB": round(report.program_bytes / 1e6, 2),
                        "int8_srcc_vs_fp32": report.verification.srcc,
                        "outside_delegate": report.nodes_outside_delegate})
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
