"""Write the golden pairs of an exported program (format: :mod:`edge_runtime.golden`).

Called once by :func:`export.export_executorch` after the program passed verification; also
usable alone on any program with its contract::

    from export.golden import write_golden
    write_golden("model.pte", sorted(Path("photos").glob("*.jpg")))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from _agiqa.atomic import atomic_write_bytes
from edge_runtime.camera import frame_layout, preprocess_frame, rgb_to_frame
from edge_runtime.golden import GOLDEN_FORMAT, GOLDEN_VERSION, golden_path
from edge_runtime.images import ImageLoadError
from edge_runtime.preprocess import resize_rgb
from edge_runtime.scorer import Scorer

__all__ = ["CAMERA_FRAMES", "GOLDEN_PAIRS", "TOLERANCES", "PREPROCESS_TOLERANCE", "tolerance_key", "write_golden"]

GOLDEN_PAIRS = 3
# Candidates scored to pick the pairs from: the lowest, middle and highest score among them,
# so a runtime that returns one value for every image cannot pass all pairs.
_CANDIDATES = 16
# How far another CPU may land from the export machine (max abs diff of the score and of any
# gate weight). Measured (docs/edge.md): the int8 score is bitwise equal on x86-64 and on qemu
# cortex-a53/a76/neoverse-n1 (gates within 3e-8), fp32 within 3e-8. int8: 1e-4, three orders
# above that spread, yet below what a wrong int8 kernel moves the output by (2.4e-4 on the score
# under qemu 7.2's SME). fp32: 1e-5, so pairs whose scores differ by more tell a constant output
# apart.
# int8 with dynamic activations ("int8-dynamic"): each image's activation ranges come from fp32
# values that other kernels round differently, so a range, and every value quantized with it, can
# move by a step: measured (docs/edge.md) up to 2.0e-3 on the demo student's score and 7e-4 on a
# gate under qemu's ARM CPU models, while qemu 7.2's wrong SME kernels move the score by 0.69-1.48.
# 1e-2 and 5e-3: five to seven times the spread, seventy times below that error. A student whose
# scores span less than 1e-2 (a random one) gets golden pairs that cannot tell a constant apart.
TOLERANCES = {"fp32": {"score": 1e-5, "gate": 1e-5}, "int8": {"score": 1e-4, "gate": 1e-4},
              "int8-dynamic": {"score": 1e-2, "gate": 5e-3}}

# The model input must come from identical pixels: one uint8 step is 0.017 after normalising.
PREPROCESS_TOLERANCE = 1e-5
# Stored images are at most this many times the model input per side (a 12 MP photo would
# make the file larger than the program): still a real downscale for the resize to prove.
_MAX_SCALE = 2


# Camera frames made of the pairs' images, as cameras deliver them, so a device checks its camera
# path at load (``camera{j}.*``): every layout, both matrices and ranges, every rotation, a crop
# with odd offsets, padded rows. (encoding, matrix, range, rotation, row padding, reduced): the
# reduced frame is resized to >= 4x the input so the camera rule takes its reduction path, as
# for a 1080p frame (about 1.3 MB for a 224 model), the others stay at the stored images' size
# (full resolution, nearest chroma).
CAMERA_FRAMES = (("nv21", "bt601", "video", 90, 16, True), ("nv12", "bt709", "full", 270, 16, False),
                 ("i420", "bt601", "full", 180, 8, False), ("bgra", "bt709", "video", 0, 12, False),
                 ("rgba", "bt601", "video", 90, 0, False))
_CROP_MARGIN = (3, 1, 4, 3)  # left, top, right, bottom pixels cut off: odd offsets on purpose


def _camera_frame(rgb: np.ndarray, input_size: tuple[int, int], encoding: str, matrix: str,
                  color_range: str, padding: int, reduced: bool):
    """The frame and crop of one ``CAMERA_FRAMES`` entry made of ``rgb``."""
    if reduced:  # >= 4x the input on both sides after the crop, in either orientation
        side = 4 * max(input_size) + 10
        rgb = resize_rgb(rgb, (side, side))
    frame = rgb_to_frame(rgb, encoding, matrix=matrix, color_range=color_range, row_padding=padding,
                         alpha=7)  # alpha is ignored: a value that would show if it were not
    left, top, right, bottom = _CROP_MARGIN
    crop = (left, top, frame.width - left - right, frame.height - top - bottom)
    return frame, crop


def _camera_tensors(scorer: Scorer, images: Sequence[tuple[str, np.ndarray]]) -> tuple[dict, dict]:
    """Tensors and metadata of the camera pairs, made of ``images`` = ``[(name, rgb), ...]``
    in turn; the reference input (:func:`edge_runtime.camera.preprocess_frame`) and the
    program's outputs on it."""
    spec = scorer.contract.preprocess
    tensors, meta = {}, {}
    for j, (encoding, matrix, color_range, rotation, padding, reduced) in enumerate(CAMERA_FRAMES):
        name, rgb = images[j % len(images)]
        frame, crop = _camera_frame(rgb, spec.input_size, encoding, matrix, color_range, padding, reduced)
        x = preprocess_frame(spec, frame, rotation=rotation, crop=crop)[None]
        buffer, layout = frame_layout(frame)
        prefix = f"camera{j}."
        tensors[prefix + "frame"], tensors[prefix + "input"] = buffer, x
        for output, value in scorer.run(x).items():
            tensors[prefix + output] = np.ascontiguousarray(value, dtype=np.float32)
        meta[prefix + "layout"] = json.dumps({**layout, "rotation": rotation, "crop": list(crop),
                                              "name": name, "encoding": encoding})
    meta["camera_pairs"] = str(len(CAMERA_FRAMES))
    return tensors, meta


def _stored_rgb(rgb: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    height, width = rgb.shape[:2]
    limit_h, limit_w = (_MAX_SCALE * s for s in input_size)
    if height <= limit_h and width <= limit_w:
        return rgb
    factor = min(limit_h / height, limit_w / width)
    return resize_rgb(rgb, (max(1, round(height * factor)), max(1, round(width * factor))))


def tolerance_key(quantization: dict) -> str:
    """The :data:`TOLERANCES` key of a contract's ``quantization`` entry."""
    mode = str(quantization.get("mode", "fp32"))
    return "int8-dynamic" if mode == "int8" and quantization.get("activations") == "dynamic" else mode


def write_golden(program: str | os.PathLike, images: Sequence[str | os.PathLike],
                 count: int = GOLDEN_PAIRS) -> Path:
    """Store ``count`` golden pairs of ``program``: among the first readable ``images``
    (at most 16), those with the lowest, middle and highest score; and the camera pairs
    (``CAMERA_FRAMES``) made of the same images.

    Returns the path written (``model.golden.safetensors`` beside ``program``).
    """
    from safetensors.numpy import save

    scorer = Scorer.from_file(program, verify_golden=False)  # it writes the golden file: an older one may be there
    contract = scorer.contract
    spec = contract.preprocess
    tensors: dict[str, np.ndarray] = {}
    tolerance = TOLERANCES.get(tolerance_key(contract.quantization), TOLERANCES["int8"])
    meta = {"format": GOLDEN_FORMAT, "format_version": str(GOLDEN_VERSION),
            "program_sha256": contract.program_sha256, "quantize": contract.quantize,
            "score_tolerance": repr(tolerance["score"]), "gate_tolerance": repr(tolerance["gate"]),
            "preprocess_tolerance": repr(PREPROCESS_TOLERANCE)}
    candidates = []  # (score, name, rgb, input, outputs)
    for path in images:
        if len(candidates) == max(count, _CANDIDATES):
            break
        try:
            rgb = _stored_rgb(spec.decode(path), spec.input_size)
        except ImageLoadError:
            continue
        x = spec(rgb)[None]
        outputs = scorer.run(x)
        score = float(outputs[contract.score_output].reshape(-1)[0])
        candidates.append((score, Path(path).name, rgb, x, outputs))
    if not candidates:
        raise ValueError(f"no readable image among {len(images)} to make golden pairs from")
    candidates.sort(key=lambda c: c[0])
    last = len(candidates) - 1
    picks = sorted({round(i * last / max(count - 1, 1)) for i in range(count)})
    for i, pick in enumerate(picks):
        _, name, rgb, x, outputs = candidates[pick]
        prefix = f"pair{i}."
        tensors[prefix + "rgb"] = np.ascontiguousarray(rgb)
        tensors[prefix + "input"] = x
        for output, value in outputs.items():
            tensors[prefix + output] = np.ascontiguousarray(value, dtype=np.float32)
        meta[prefix + "name"] = name
    meta["pairs"] = str(len(picks))
    camera_tensors, camera_meta = _camera_tensors(scorer, [candidates[p][1:3] for p in picks])
    tensors.update(camera_tensors)
    meta.update(camera_meta)
    return atomic_write_bytes(golden_path(program), _canonical_header(save(tensors, metadata=meta)))


def _canonical_header(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys sorted, so the same pairs give the
    same bytes: the writer emits the metadata in hash order, which varies from run to run. The
    header is padded with spaces to its old length rule (a multiple of 8), so the tensor offsets,
    which count from the header's end, stay valid."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]
