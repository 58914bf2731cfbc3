"""Throughput and peak memory of the teacher labeling loop.

    python bench/teacher_labeling.py                      # CPU, tiny teacher
    python bench/teacher_labeling.py --preset mid --device cuda --images 256 --batch-size 16
    python bench/teacher_labeling.py --preset full --device cuda --dtype float16 --images 256 \
        --batch-sizes 8,32,128                            # the paper's teacher, one GPU
    python bench/teacher_labeling.py --preset full --device cpu --dtype float32 --layers 1 \
        --images 4 --batch-sizes 2                        # same code, CPU smoke run

``mid`` is a random mid-size teacher (full-size MANIQA ViT-B/8 + a ~1B LLaVA-style MLLM at
336 px) to exercise the GPU path: bf16 MLLM, batching, memory. Images are the demo photos.

``full`` is the paper's teacher at its real size with random weights, built directly on the
device (nothing written to disk): MANIQA ViT-B/8 + mPLUG-Owl2 LLaMA-2-7B (CLIP ViT-L/14 at
448 px, 65 visual tokens, ``teacher/mplug_owl2.py``). Inputs are random tensors already on the
device, so the figures are model throughput (decoding and resizing are not included). It
compares (a) the official protocol (getFeature.py: one image at a time, vision tower and LLM
once per prompt) with (b) our batched labelling (vision once per image, both prompts of all
images in one LLM forward), for each batch size. ``--layers N`` keeps N layers of the vision
tower and of the LLM (widths unchanged) for machines without the memory or time for 7B.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from distill.data import DatasetSpec, load_records
from distill.demo import make_demo_images
from teacher.cache import build_label_cache
from teacher.labeler import Teacher, save_tiny_teacher
from teacher.tiny_mllm import TinyMLLMConfig

MID_MLLM = TinyMLLMConfig(image_size=336, patch_size=14, vision_hidden=1024, vision_layers=12,
                          vision_heads=16, text_hidden=2048, text_layers=16, text_heads=16,
                          text_kv_heads=8, max_positions=2048)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "mid", "full"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-sizes", default="8,32,128", help="full preset: comma-separated batch sizes")
    parser.add_argument("--dtype", default="float16", help="full preset: MLLM dtype (float16, bfloat16, float32)")
    parser.add_argument("--maniqa-dtype", default="float32", help="full preset: MANIQA dtype (the labeler: fp32)")
    parser.add_argument("--layers", type=int, default=None, help="full preset: keep N vision and N LLM layers")
    args = parser.parse_args()
    if args.preset == "full":
        from teacher_labeling_full import run_full  # bench/ is the script's folder

        print(json.dumps(run_full(args), indent=2))
        return
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
