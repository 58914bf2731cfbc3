"""The official MANIQA view of MA-AGIQA and the official teacher config.

The official data loader (MA-AGIQA ``data/AIGC_general.py``) does ``cv2.imread`` ->
``cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)`` -> BGR to RGB -> ``/ 255`` ->
``Normalize(0.5, 0.5)``. Our teacher builds the same view with the numpy ``"cv2_bicubic"`` resize
of ``edge_runtime.preprocess`` (no OpenCV at run time). The parity tests compare against
``opencv-python-headless`` (the ``test`` extra) and skip without it; the fixed values below were
produced by opencv-python-headless 4.14.0.94 on x86-64 and need no OpenCV.

Parity figures: ``python -m pytest -q -s tests/teacher/test_official_view.py -k photo``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.images import load_rgb
from edge_runtime.preprocess import PreprocessSpec, resize_cv2_bicubic, resize_rgb
from teacher.labeler import TeacherConfig, read_teacher_config, teacher_view
from tests import REPO

PHOTOS = REPO / "tests" / "fixtures" / "photos"
OFFICIAL_CONFIG = REPO / "configs" / "teacher_mplug_owl2.json"
# Three real photos brought to sizes a labeller meets (width, height): upscaled with seeded noise so
# that the full-size image has fine detail for the 224 resize to alias (or, with PIL, to average).
PHOTO_SIZES = [("coffee.jpg", (1024, 768)), ("rocket.jpg", (640, 480)), ("astronaut.jpg", (3000, 2000))]

# cv2.resize(SRC, (5, 4), INTER_CUBIC)[..., 1] and cv2.resize(SRC[:5, :6], (9, 10), INTER_CUBIC)[..., 0]
SRC = ((np.arange(9 * 7 * 3).reshape(9, 7, 3) * 53 + 17) % 256).astype(np.uint8)
CV2_DOWN_G = [[114, 184, 82, 123, 71], [122, 190, 58, 184, 32], [34, 104, 212, 80, 148], [123, 154, 188, 86, 156]]
CV2_UP_R = [[0, 112, 189, 74, 163, 255, 161, 71, 26], [25, 87, 138, 103, 151, 203, 182, 111, 52],
            [80, 45, 54, 152, 132, 114, 219, 177, 93], [153, 63, 16, 121, 103, 84, 182, 195, 166],
            [207, 132, 45, 27, 79, 126, 89, 156, 234], [166, 161, 108, 2, 98, 191, 74, 114, 202],
            [48, 136, 176, 59, 152, 248, 142, 89, 84], [19, 98, 162, 119, 170, 226, 200, 116, 47],
            [94, 66, 74, 150, 142, 136, 218, 180, 109], [137, 47, 20, 170, 126, 82, 230, 219, 145]]


def _photo(name: str, size: tuple[int, int], tmp_path: Path, seed: int = 0) -> Path:
    """``name`` resized to ``size`` (w, h), plus seeded Gaussian noise (std 6), saved as JPEG q90."""
    rgb = np.asarray(Image.open(PHOTOS / name).convert("RGB").resize(size, Image.Resampling.BICUBIC), np.float32)
    rgb += np.random.default_rng(seed).normal(0.0, 6.0, rgb.shape).astype(np.float32)
    path = tmp_path / f"{Path(name).stem}_{size[0]}x{size[1]}.jpg"
    Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _official_view(cv2, path: Path) -> np.ndarray:
    """The official loader's ``d_img_org`` after ``Normalize(0.5, 0.5)``: ``(3, 224, 224) float32``."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    x = np.transpose(np.array(img).astype("float32") / 255, (2, 0, 1))
    return (x - 0.5) / 0.5


def _grey(view: np.ndarray) -> np.ndarray:
    """A normalised view back to its integer grey levels 0..255 (float rounding noise removed)."""
    return np.rint((view.astype(np.float64) * 0.5 + 0.5) * 255.0)


def _official_config() -> TeacherConfig:
    return TeacherConfig.from_dict(json.loads(OFFICIAL_CONFIG.read_text()))


# ------------------------------------------------------------------------------ no OpenCV needed
def test_cv2_bicubic_reproduces_recorded_opencv_values() -> None:
    np.testing.assert_array_equal(resize_cv2_bicubic(SRC, (4, 5))[..., 1], CV2_DOWN_G)
    np.testing.assert_array_equal(resize_cv2_bicubic(SRC[:5, :6], (10, 9))[..., 0], CV2_UP_R)
    assert resize_rgb(SRC, (4, 5), "cv2_bicubic").tobytes() == resize_cv2_bicubic(SRC, (4, 5)).tobytes()


def test_cv2_bicubic_basic_properties() -> None:
    flat = np.full((37, 53, 3), 77, np.uint8)
    assert (resize_cv2_bicubic(flat, (224, 224)) == 77).all()  # weights sum to 1, borders replicated
    assert resize_cv2_bicubic(SRC, SRC.shape[:2]).tobytes() == SRC.tobytes()
    # No antialiasing: shrunk 3x, a 1-pixel checkerboard is point-sampled and stays a hard
    # checkerboard (every third pixel); PIL's antialiased bicubic averages it to grey.
    board = ((np.indices((96, 96)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    assert resize_cv2_bicubic(board, (32, 32)).std() > 120
    assert resize_rgb(board, (32, 32), "bicubic").std() < 10
    with pytest.raises(ValueError, match="uint8"):
        resize_cv2_bicubic(board.astype(np.float32), (32, 32))


def test_official_teacher_config_uses_the_cv2_view_and_fp16() -> None:
    official = _official_config()
    assert official.interpolation == "cv2_bicubic" and official.view_size == (224, 224)
    assert official.semantic.dtype == "float16"  # the official vectors were computed and stored in fp16
    assert TeacherConfig.__dataclass_fields__["interpolation"].default == "cv2_bicubic"
    spec = PreprocessSpec(interpolation="cv2_bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)  # a student may use it too
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_unknown_interpolation_names_the_file(tmp_path: Path) -> None:
    data = json.loads(OFFICIAL_CONFIG.read_text())
    data["interpolation"] = "lanczos"
    (tmp_path / "teacher.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"teacher\.json: not a valid teacher config .*'lanczos'.*cv2_bicubic") as err:
        read_teacher_config(tmp_path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- against OpenCV
@pytest.mark.parametrize("name,size", PHOTO_SIZES)
def test_teacher_view_matches_official_cv2_pipeline_on_photos(tmp_path: Path, name: str,
                                                               size: tuple[int, int]) -> None:
    cv2 = pytest.importorskip("cv2")
    path = _photo(name, size, tmp_path)
    config = _official_config()
    official = _grey(_official_view(cv2, path))
    ours = _grey(teacher_view(load_rgb(path), config))  # the teacher decodes with load_rgb (no draft)
    diff = np.abs(ours - official)
    pil = np.abs(_grey(teacher_view(load_rgb(path), replace(config, interpolation="bicubic"))) - official)
    print(f"\n{name} {size[0]}x{size[1]}: cv2_bicubic vs official: max {diff.max():.0f} mean {diff.mean():.6f} "
          f"grey levels, {int((diff > 0).sum())} of {diff.size} values differ "
          f"(PIL bicubic: max {pil.max():.0f} mean {pil.mean():.3f}); opencv {cv2.__version__}")
    assert diff.max() <= 1  # within 1 grey level
    assert diff.mean() < 0.01  # and almost everywhere exact
    assert pil.mean() > 0.5  # the antialiased PIL view it replaces is measurably different


@pytest.mark.parametrize("src,dst", [((400, 600), (224, 224)), ((300, 451), (224, 224)), ((224, 300), (224, 224)),
                                     ((100, 150), (224, 224)), ((333, 517), (201, 99)), ((57, 91), (300, 301))])
def test_cv2_bicubic_matches_opencv_on_arrays(src: tuple[int, int], dst: tuple[int, int]) -> None:
    cv2 = pytest.importorskip("cv2")
    photo = np.asarray(Image.open(PHOTOS / "chelsea.jpg").convert("RGB").resize(src[::-1], Image.Resampling.BICUBIC))
    noise = np.random.default_rng(sum(src)).integers(0, 256, (*src, 3), dtype=np.uint8)
    for image in (photo, noise):
        expected = cv2.resize(image, dst[::-1], interpolation=cv2.INTER_CUBIC).astype(int)
        diff = np.abs(resize_cv2_bicubic(image, dst).astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    # OpenCV built without IPP (e.g. ARM wheels) uses 11-bit fixed-point weights: still within 1.
    was = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        expected = cv2.resize(photo, dst[::-1], interpolation=cv2.INTER_CUBIC).astype(int)
    finally:
        cv2.ipp.setUseIPP(was)
    assert np.abs(resize_cv2_bicubic(photo, dst).astype(int) - expected).max() <= 1


def _keys_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The IPP float32 order written out pixel by pixel (slow; small images only): Keys weights
    (A = -0.75, half-pixel centres, float32), replicated border, each row filtered first (taps
    -1, 0, 1, 2 added in order, every step rounded to float32), then the column, then rint."""
    def taps(src: int, dst: int, out: int) -> list[tuple[int, np.float32]]:
        pos = (out + 0.5) * (src / dst) - 0.5
        start = int(np.floor(pos))
        found = []
        for k in range(-1, 3):
            d = abs(pos - (start + k))
            w = (1.25 * d - 2.25) * d * d + 1 if d <= 1 else ((-0.75 * d + 3.75) * d - 6) * d + 3 if d < 2 else 0.0
            found.append((min(max(start + k, 0), src - 1), np.float32(w)))
        return found

    height, width = size
    out = np.empty((height, width, image.shape[2]), np.uint8)
    for i in range(height):
        for j in range(width):
            for c in range(image.shape[2]):
                column = np.float32(0)
                for n, (y, wy) in enumerate(taps(image.shape[0], height, i)):
                    row = np.float32(0)
                    for m, (x, wx) in enumerate(taps(image.shape[1], width, j)):
                        product = np.float32(np.float32(image[y, x, c]) * wx)
                        row = product if m == 0 else np.float32(row + product)
                    product = np.float32(row * wy)
                    column = product if n == 0 else np.float32(column + product)
                out[i, j, c] = min(max(np.rint(column), 0), 255)
    return out


def test_cv2_bicubic_is_the_float32_tap_order_bitwise() -> None:
    """The vectorised resize gives exactly the pixel-by-pixel float32 reference (no OpenCV needed),
    up- and downscaling, odd aspect ratios, 1 and 3 channels, and a non-contiguous input."""
    rng = np.random.default_rng(7)
    for trial in range(12):
        src = tuple(int(v) for v in rng.integers(1, 48, 2))
        dst = tuple(int(v) for v in rng.integers(1, 20, 2))
        image = rng.integers(0, 256, (*src, 1 if trial % 4 == 0 else 3), dtype=np.uint8)
        if trial % 3 == 0:
            image = np.sort(image, axis=1)  # smooth ramps: values land near .5 ties
        assert resize_cv2_bicubic(image, dst).tobytes() == _keys_reference(image, dst).tobytes(), (src, dst)
    view = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)[::-2, 1::2]
    assert resize_cv2_bicubic(view, (9, 13)).tobytes() == _keys_reference(view, (9, 13)).tobytes()


def test_cv2_bicubic_matches_opencv_on_many_sizes() -> None:
    """40 random (source, output) sizes, 3:1 to 1:3 aspects, down to 1/10 and up to 4x."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(11)
    photo = np.asarray(Image.open(PHOTOS / "chelsea.jpg").convert("RGB"))
    differ = total = 0
    for _ in range(40):
        src = (int(rng.integers(16, 700)), int(rng.integers(16, 700)))
        dst = tuple(int(max(1, min(900, s * rng.uniform(0.1, 4.0)))) for s in src)
        image = np.asarray(Image.fromarray(photo).resize(src[::-1], Image.Resampling.BICUBIC))
        expected = cv2.resize(image, dst[::-1], interpolation=cv2.INTER_CUBIC).astype(int)
        diff = np.abs(resize_cv2_bicubic(image, dst).astype(int) - expected)
        assert diff.max() <= 1, (src, dst)
        differ, total = differ + int((diff > 0).sum()), total + diff.size
    assert differ / total < 1e-3, differ / total
