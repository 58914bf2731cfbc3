"""Fixtures shared by more than one test file: image folders, a tiny teacher, a tiny student and
its fp32 and int8 programs.

Building a model or an export takes seconds, so those fixtures are session-scoped and read-only:
a test that changes one copies it first. Image builders are factories (``write_image(path, seed)``)
because each test writes its own files under its own ``tmp_path``. torch, the teacher and the
exporter are imported inside the fixtures, so collecting a numpy-only test file stays cheap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter


def _write_image(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> Path:
    """A small random RGB image of ``size`` (H, W); the format follows the suffix (PNG, JPEG, ...)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _write_bad_images(folder: Path, names: tuple[str, str, str]) -> None:
    """Zero-byte file, a text file named like an image, and a truncated JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / names[0]).write_bytes(b"")
    (folder / names[1]).write_text("this is not an image\n")
    buffer = io.BytesIO()
    rng = np.random.default_rng(99)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=95)
    (folder / names[2]).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _make_image_folder(root: Path, n_good: int = 10) -> list[str]:
    """``n_good`` PNG/JPEG images of several sizes plus three bad files (``img03b.png`` empty,
    ``img06b.jpg`` text, ``img08b.jpg`` truncated), interleaved by name. Returns the good names."""
    good = []
    for i in range(n_good):
        name = f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        _write_image(root / name, seed=i, size=(16 + 4 * (i % 3), 20 + 2 * i))
        good.append(name)
    _write_bad_images(root, ("img03b.png", "img06b.jpg", "img08b.jpg"))
    return good


def _realistic_images(folder: Path, count: int = 16) -> Path:
    """Crops of a real photo, sharp / blurred / noisy / JPEG-damaged, as 128 x 96 PNG and JPEG files."""
    import matplotlib.cbook as cbook

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as source:
        source = source.convert("RGB")
    for i in range(count):
        w, h = source.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = source.crop((x0, y0, x0 + cw, y0 + ch)).resize((128, 96))
        kind = i % 4
        if kind == 1:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
        elif kind == 2:
            noisy = np.asarray(image, np.float32) + rng.normal(0, 25, (96, 128, 3))
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        if kind == 3:
            image.save(folder / f"{i:02d}.jpg", quality=int(rng.integers(5, 30)))
        else:
            image.save(folder / f"{i:02d}.png")
    return folder


# -- image factories ---------------------------------------------------------------------------
@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, seed, size=(24, 32))``: a small random RGB image."""
    return _write_image


@pytest.fixture
def make_image_folder() -> Callable[..., list[str]]:
    """``make_image_folder(root, n_good=10)``: good images and three bad files; the good names."""
    return _make_image_folder


@pytest.fixture
def realistic_images() -> Callable[..., Path]:
    """``realistic_images(folder, count=16)``: damaged crops of a real photo (see below)."""
    return _realistic_images


# -- built once per session (read-only) --------------------------------------------------------
@pytest.fixture(scope="session")
def realistic_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 realistic images: the exports calibrate on the even files and verify on the odd."""
    return _realistic_images(tmp_path_factory.mktemp("realistic") / "images")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``save_tiny_teacher(seed=0)``: a random tiny MA-AGIQA + MLLM teacher folder."""
    from teacher.labeler import save_tiny_teacher

    return save_tiny_teacher(tmp_path_factory.mktemp("tiny-teacher") / "teacher")


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` student (seed 0) saved as a bare student folder, with a teacher fingerprint.

    It resizes with Pillow's bilinear and draft-decodes JPEGs (not the default cv2_bicubic, full
    decode), so the exported programs exercise the runtime's draft decoding and antialiased
    resampling; cv2_bicubic is checked bitwise by tests/edge_runtime/cpp/test_cpp_camera.py."""
    import torch

    from student.model import create_student

    torch.manual_seed(0)
    model = create_student("tiny", interpolation="bilinear", jpeg_draft=True).eval()
    return model.save_pretrained(tmp_path_factory.mktemp("tiny-student") / "student",
                                 extra={"teacher_fingerprint": "t" * 64})


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory, tiny_student_dir: Path,
                 realistic_image_dir: Path) -> dict:
    """``{"fp32", "int8", "int8-dynamic"}`` -> ``ExportReport`` of the tiny student: int8 with
    static activations (their one golden tolerance is tight enough for the tamper tests) and with
    dynamic ones (the default export). Default thresholds but int8's SRCC >= 0.95 (not 0.99): the
    random student's 8 verification scores span 1e-4, with pairs 1e-5 apart, so one swap of such a
    pair (SRCC 0.976) is int8 noise, not a broken program; test_int8_program_ranks_like_the_eager_student
    checks the ranking beyond the noise.
    Written under umask 022 (file modes are checked); each program has its contract, report and
    golden file beside it."""
    from export import export_executorch

    work = tmp_path_factory.mktemp("tiny-exports")
    old = os.umask(0o022)
    try:
        variants = {"fp32": ("fp32", "static"), "int8": ("int8", "static"), "int8-dynamic": ("int8", "dynamic")}
        return {name: export_executorch(tiny_student_dir, work / name / "model.pte", quantize=mode,
                                        images=realistic_image_dir, int8_activations=activations,
                                        min_srcc=0.95 if mode == "int8" else None)
                for name, (mode, activations) in variants.items()}
    finally:
        os.umask(old)
