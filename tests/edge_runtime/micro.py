"""The micro program the runtime tests score with, and the awkward images they feed it.

A strided conv and a linear layer, lowered to XNNPACK by the export toolchain in about a second,
with a hand-written contract: the runtime is driven by the contract alone, so these tests need no
student. The micro model reads pixels through a flatten + linear, so it is orientation sensitive,
which the EXIF test needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edge_runtime import ModelContract, PreprocessSpec
from edge_runtime.contract import contract_path

SIZE = (64, 64)
SPEC = PreprocessSpec(input_size=SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))  # not ImageNet


class MicroIQA(torch.nn.Module):
    """``(1, 3, 64, 64) -> (score (1,), gate_weights (1, 3))``, like an exported student."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.fc = torch.nn.Linear(4 * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fc(torch.relu(self.conv(x)).reshape(1, -1))
        return out[:, 0:1].reshape(-1), out[:, 1:4].softmax(dim=-1)


def write_program(directory: Path, lower_better: bool = False, format_version: int = 2) -> Path:
    """The micro program and its contract; ``format_version=1`` writes model.json as version-1
    exporters did (fields at top level, digest over Python's canonical JSON)."""
    from export.build import lower_with_contract

    torch.manual_seed(0)
    example = torch.zeros(1, 3, *SIZE)
    contract = ModelContract(program_sha256="", preprocess=SPEC,
                             input_shape=(1, 3, *SIZE),
                             expert_names=("semantic_0", "semantic_1", "quality"),
                             lower_better=lower_better, quantization={"mode": "fp32"},
                             format_version=format_version)
    lowered, contract = lower_with_contract(MicroIQA().eval(), example, contract)
    assert lowered.outside_delegate == ()
    program = directory / "micro.pte"
    directory.mkdir(parents=True, exist_ok=True)
    program.write_bytes(lowered.buffer)
    contract.save(contract_path(program))
    return program


def photo(size=(120, 90)) -> Image.Image:
    """A real photo (matplotlib's sample), resized: asymmetric content for the EXIF test."""
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        return image.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height``; no pixel data worth decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) \
        + chunk(b"IEND", b"")


def make_corpus(folder: Path) -> dict[str, str | None]:
    """Bad and awkward images; value = expected skip-reason fragment, None = must score."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo()
    base.save(folder / "good.jpg", quality=90)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    base.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    gray16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    base.save(folder / "exif_rotated.jpg", quality=95, exif=exif.tobytes())
    (folder / "bomb.png").write_bytes(png_header(40_000, 40_000))
    return {"good.jpg": None, "cmyk.jpg": None, "gray16.png": None, "palette_alpha.png": None,
            "exif_rotated.jpg": None, "empty.jpg": "empty file", "notes.jpg": "not an image",
            "truncated.jpg": "truncated", "bomb.png": "bomb"}


