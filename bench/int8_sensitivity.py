"""Which layers cost int8 its ranking: each quantized layer kept in fp32 in turn, on real photos.

    python bench/int8_sensitivity.py --run runs/demo --photos OOD_DIR
    python bench/int8_sensitivity.py --run runs/demo --photos OOD_DIR --calibration-images CAL_DIR --greedy 6

For the run's best student, the backbone's conv and linear layers are listed from the exported
graph. The baseline quantizes all of them (the export's recipe, calibrated on the run's default
calibration set unless ``--calibration-images``); then each layer alone is left in fp32 and the
model calibrated and converted again. Every row is the PT2E-converted module (quantize/dequantize
simulated in eager, the arithmetic XNNPACK runs) against the eager fp32 student on ``--photos``:
SRCC of the scores and how many are distinct. ``--greedy K`` then keeps the K best layers in fp32
together, one more at a time. No program is lowered: run ``agiqa-export`` with the chosen layers
to measure the .pte itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from export import _toolchain as tc
from export.backends import get_backend
from export.build import image_tensors, load_student
from export.source import resolve_source
from export.wrapper import EdgeStudent

WEIGHTED_OPS = ("conv2d", "linear")


def weighted_layers(wrapper: EdgeStudent, example: torch.Tensor, scope: str) -> list[str]:
    """Module paths of the conv/linear calls under ``scope``, in graph order."""
    graph = torch.export.export(wrapper, (example,), strict=False).graph
    found: list[str] = []
    for node in graph.nodes:
        if node.op == "call_function" and any(op in str(node.target) for op in WEIGHTED_OPS):
            stack = node.meta.get("nn_module_stack") or {}
            path = list(stack.values())[-1][0] if stack else ""
            if path.startswith(scope + ".") and path not in found:
                found.append(path)
    return found


def quantized_scores(wrapper: EdgeStudent, example: torch.Tensor, calibration: Sequence[torch.Tensor],
                     photos: torch.Tensor, keep_fp32: Sequence[str]) -> np.ndarray:
    module, _ = tc.quantize_int8(wrapper, example, iter(calibration), only_under=EdgeStudent.INT8_SCOPE,
                                 keep_fp32=tuple(keep_fp32), backend=get_backend("xnnpack"))
    with torch.no_grad():
        return torch.cat([module(chunk)[0] for chunk in photos.split(32)]).numpy()


def fidelity(scores: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    return float(spearmanr(scores, reference)[0]), len(np.unique(scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a distillation run folder")
    parser.add_argument("--photos", type=Path, required=True, help="real photos to measure on")
    parser.add_argument("--calibration-images", type=Path, default=None)
    parser.add_argument("--calibration", type=int, default=64, help="calibration images (the export default)")
    parser.add_argument("--greedy", type=int, default=0, help="then keep the K best layers in fp32 together")
    parser.add_argument("--limit", type=int, default=None, help="at most this many layers (first in order)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    source = resolve_source(args.run, verify_images=args.photos, calibration_images=args.calibration_images)
    student = load_student(source.student_dir)
    spec = student.config.preprocess
    wrapper = EdgeStudent(student).eval()
    example = torch.zeros(1, 3, *spec.input_size)
    skipped: list[dict[str, str]] = []
    calibration = [x for _, x in image_tensors(spec, source.calibration_images, args.calibration, skipped)]
    photos = torch.cat([x for _, x in image_tensors(spec, sorted(source.verification_images), None, skipped)])
    with torch.no_grad():
        reference = wrapper(photos)[0].numpy()
    print(f"calibration: {len(calibration)} images from {source.images_from}; measured on {len(photos)} "
          f"images of {args.photos} ({len(np.unique(reference))} distinct fp32 scores)", flush=True)
    layers = weighted_layers(wrapper, example, EdgeStudent.INT8_SCOPE)[: args.limit]
    run: Callable[[Sequence[str]], tuple[float, int]] = lambda keep: fidelity(  # noqa: E731
        quantized_scores(wrapper, example, calibration, photos, keep), reference)
    clock = time.perf_counter()
    base = run(())
    print(f"all {len(layers)} layers int8: SRCC {base[0]:.5f}, {base[1]} distinct "
          f"({time.perf_counter() - clock:.1f} s per row)", flush=True)
    rows = []
    for layer in layers:
        srcc, distinct = run((layer,))
        rows.append((srcc, distinct, layer))
        print(f"  {layer:<48} fp32: SRCC {srcc:.5f} ({srcc - base[0]:+.5f}), {distinct} distinct", flush=True)
    rows.sort(reverse=True)
    print("\nbest layers to keep in fp32 (alone):")
    for srcc, distinct, layer in rows[:10]:
        print(f"  {srcc:.5f} {distinct:4d}  {layer}")
    kept: list[str] = []
    for _, _, layer in rows[: args.greedy]:
        kept.append(layer)
        srcc, distinct = run(kept)
        print(f"keep {len(kept)} in fp32 (+ {layer}): SRCC {srcc:.5f}, {distinct} distinct", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
