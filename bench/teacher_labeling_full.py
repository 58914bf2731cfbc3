"""The full-size teacher benchmark: ``python bench/teacher_labeling.py --preset full`` (see there).

MANIQA ViT-B/8 + mPLUG-Owl2 LLaMA-2-7B with random weights, built directly on the device;
(a) the official protocol against (b) our batched labelling, images/s and peak GPU memory.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from teacher.model import MAAGIQA, FusionConfig
from teacher.mplug_owl2 import IMAGE_TOKEN, IMAGE_TOKEN_INDEX, MplugOwl2, MplugOwl2Config, prompt_text
from teacher.semantic import DEFAULT_PROMPTS, pool_hidden, resolve_dtype

__all__ = ["run_full"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Create parameters directly in ``dtype`` (a 7B model never exists in fp32 on the device)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def stand_in_ids(question: str, vocab_size: int) -> list[int]:
    """Token ids of the right length without the checkpoint's tokenizer.model: LLaMA-2 averages
    about 4 characters per token on English prose, so each text chunk of n characters gets n // 4
    random ids; BOS first and -200 where ``<|image|>`` is, as ``tokenizer_image_token``."""
    before, after = prompt_text(question).split(IMAGE_TOKEN)
    generator = torch.Generator().manual_seed(len(question))

    def chunk(text: str) -> list[int]:
        return torch.randint(3, vocab_size, (max(1, len(text) // 4),), generator=generator).tolist()

    return [1] + chunk(before) + [IMAGE_TOKEN_INDEX] + chunk(after)


def build_full_teacher(device: torch.device, dtype: torch.dtype, maniqa_dtype: torch.dtype,
                       layers: int | None) -> tuple[MplugOwl2, MAAGIQA]:
    """Random-weight mPLUG-Owl2-7B and MA-AGIQA (MANIQA ViT-B/8), created on ``device``."""
    config = MplugOwl2Config()
    if layers is not None:
        config = replace(config, num_hidden_layers=min(layers, config.num_hidden_layers),
                         vision=replace(config.vision, num_hidden_layers=min(layers, config.vision.num_hidden_layers)))
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):
        owl = MplugOwl2(config).eval()
    with torch.device(device), _default_dtype(maniqa_dtype):
        maniqa = MAAGIQA("base", FusionConfig(semantic_dim=config.hidden_size)).eval()
    return owl, maniqa


def _timed(step: Callable[[int, int], None], images: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Run ``step(start, size)`` over ``images`` in batches (after one untimed warm-up batch)."""
    step(0, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for first in range(0, images, batch):
        step(first, min(batch, images - first))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images_per_s": round(images / seconds, 2),
            "peak_gpu_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def run_full(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype, maniqa_dtype = resolve_dtype(args.dtype, device), resolve_dtype(args.maniqa_dtype, device)
    owl, maniqa = build_full_teacher(device, dtype, maniqa_dtype, args.layers)
    config = owl.config
    prompt_ids = [stand_in_ids(q, config.vocab_size) for q in DEFAULT_PROMPTS]
    side = config.vision.image_size
    generator = torch.Generator(device=device).manual_seed(0)
    pixels = torch.randn(args.images, 3, side, side, device=device, generator=generator).to(dtype)
    views = torch.randn(args.images, 3, 224, 224, device=device, generator=generator).to(maniqa_dtype)

    def score(first: int, size: int, semantic: torch.Tensor) -> None:
        maniqa(views[first:first + size], semantic.to(maniqa_dtype))

    def official(first: int, size: int) -> None:  # getFeature.py: per prompt, the whole model again
        for index in range(first, first + size):
            vectors = [owl(pixels[index:index + 1], [ids])[0].mean(dim=1) for ids in prompt_ids]
            score(index, 1, torch.stack(vectors, dim=1))

    def batched(first: int, size: int) -> None:  # ours: vision once, all prompts in one LLM forward
        hidden, mask = owl(pixels[first:first + size], prompt_ids)
        score(first, size, pool_hidden(hidden, mask, "mean").view(size, len(prompt_ids), -1))

    params = sum(p.numel() for p in owl.parameters()) + sum(p.numel() for p in maniqa.parameters())
    visual = config.abstractor.num_learnable_queries + 1
    result: dict[str, Any] = {
        "preset": "full", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "mllm_dtype": str(dtype), "maniqa_dtype": str(maniqa_dtype),
        "layers": {"vision": config.vision.num_hidden_layers, "llm": config.num_hidden_layers},
        "params_B": round(params / 1e9, 2),
        "llm_tokens_per_prompt": [len(ids) - 1 + visual for ids in prompt_ids],
        "images": args.images, "threads": torch.get_num_threads(),
    }
    with torch.inference_mode():
        result["official_one_image_per_prompt"] = _timed(official, args.images, 1, device)
        rows = []
        for batch in (int(b) for b in str(args.batch_sizes).split(",")):
            row = {"batch_size": batch, **_timed(batched, args.images, min(batch, args.images), device)}
            row["x_official"] = round(row["images_per_s"] / result["official_one_image_per_prompt"]["images_per_s"], 2)
            rows.append(row)
        result["batched"] = rows
    result["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return result
