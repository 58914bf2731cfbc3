"""Training throughput of the distillation step (forward, all losses, backward, AdamW).

    python bench/distill_throughput.py                         # CPU, default student
    python bench/distill_throughput.py --device cuda --batch-size 128

Measures the same step ``distill.train`` runs (channels-last, bf16 autocast on CUDA) on
random inputs and targets of the right shapes: throughput does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from distill.config import LossConfig
from distill.losses import DistillationLoss, DistillTargets
from student.model import DEFAULT_STUDENT, create_student, list_students
from teacher.cache_schema import TeacherOutput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default=DEFAULT_STUDENT, choices=list_students())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = create_student(args.variant).to(device, memory_format=torch.channels_last).train()
    cfg = model.config
    criterion = DistillationLoss(LossConfig(), score_std=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = args.batch_size
    x = torch.randn(b, 3, *cfg.input_size, device=device).contiguous(memory_format=torch.channels_last)
    teacher = TeacherOutput(score=torch.randn(b, device=device),
                            semantic_vectors=torch.randn(b, cfg.num_semantic, cfg.semantic_dim, device=device),
                            quality_features=torch.randn(b, cfg.quality_dim, device=device),
                            gate_weights=torch.randn(b, cfg.num_experts, device=device))
    targets = DistillTargets(teacher, mos=torch.randn(b, device=device))
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss = criterion(type(out)(*(o.float() for o in out)), targets)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if amp:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if amp:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({
        "variant": args.variant, "backbone": cfg.backbone, "input_size": list(cfg.input_size),
        "device": str(device), "gpu": torch.cuda.get_device_name() if amp else None,
        "amp_bf16": amp, "threads": torch.get_num_threads(), "batch_size": b,
        "seconds_per_step": round(seconds, 4), "train_images_per_s": round(b / seconds, 1),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
