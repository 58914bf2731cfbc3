"""Throughput and peak memory of the teacher labeling loop.

    python bench/teacher_labeling.py                      # CPU, tiny teacher
    python bench/teacher_labeling.py --preset mid --device cuda --images 256 --batch-size 16

``mid`` is a random mid-size teacher (full-size MANIQA ViT-B/8 + a ~1B LLaVA-style MLLM at
336 px) to exercise the GPU path: bf16 MLLM, batching, memory. Images are the demo photos.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from distill.demo import make_demo_images
from teacher.cache import build_label_cache
from teacher.data import DatasetSpec, load_records
from teacher.labeler import Teacher, save_tiny_teacher
from teacher.tiny_mllm import TinyMLLMConfig

MID_MLLM = TinyMLLMConfig(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=12,
                          vision_heads=16, text_hidden=2048, text_layers=16, text_heads=16,
                          text_kv_heads=8, max_positions=2048)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "mid"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_demo_images(tmp / "images", count=args.images, size=(512, 512))
        records = load_records(DatasetSpec(kind="folder", root=str(folder)))
        if args.preset == "tiny":
            save_tiny_teacher(tmp / "teacher")
        else:
            save_tiny_teacher(tmp / "teacher", maniqa="base", mllm=MID_MLLM)
        teacher = Teacher.from_pretrained(tmp / "teacher", device=args.device)
        params = sum(p.numel() for p in teacher.model.parameters()) + \
            sum(p.numel() for p in teacher.encoder.backend.model.parameters())
        # Warm-up batch (kernel selection, allocator) is not timed.
        build_label_cache(records[:args.batch_size], teacher, tmp / "warmup", batch_size=args.batch_size,
                          shard_size=args.batch_size, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        report = build_label_cache(records, teacher, tmp / "cache", batch_size=args.batch_size,
                                   shard_size=args.batch_size * 8, progress=True)
        seconds = time.perf_counter() - start
        result = {
            "preset": args.preset, "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "teacher_params_M": round(params / 1e6, 1),
            "mllm_dtype": str(next(teacher.encoder.backend.model.parameters()).dtype),
            "images": report.n_labeled, "batch_size": args.batch_size,
            "images_per_s": round(report.n_labeled / seconds, 2),
            "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_gpu_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if args.device.startswith("cuda") else None,
            "threads": torch.get_num_threads(),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
