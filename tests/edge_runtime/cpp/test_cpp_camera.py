"""The C++ camera path (edge_runtime/cpp/src/camera.cpp) against the numpy reference
(edge_runtime/camera.py): bitwise, since the rule is integer arithmetic end to end; the golden
camera pairs checked at load; the docs' camera snippets compile.

Frames travel to ``agiqa-bench-camera jobs`` as their bytes plus ``frame_layout``'s JSON; it
writes the reduced RGB (uint8) or the model input (float32) raw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime import PreprocessSpec
from edge_runtime.camera import frame_layout, frame_to_rgb, preprocess_frame, rgb_to_frame
from edge_runtime.golden import golden_path
from tests import REPO
from tests.conftest import _realistic_images
from tests.edge_runtime.cpp.builds import QEMU_CPUS, SYSROOT

pytestmark = [pytest.mark.cpp, pytest.mark.slow]  # builds the C++ scorer

FORMATS = ("nv21", "nv12", "i420", "rgba", "bgra")
COLOURS = (("bt601", "video"), ("bt709", "full"))
CROP = (5, 3, 101, 77)  # odd offsets and sizes
SPECS = (  # draft: reduced by 2 for the 117x83 frame's crop; no draft: full resolution
    PreprocessSpec(input_size=(16, 12), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    PreprocessSpec(input_size=(40, 36), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bicubic",
                   jpeg_draft=False),
    PreprocessSpec(input_size=(16, 18), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="area"),
    # the teacher's resize (float32, not antialiased), downscaling and, in one axis, upscaling
    PreprocessSpec(input_size=(30, 90), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="cv2_bicubic",
                   jpeg_draft=False),
    PreprocessSpec(input_size=(14, 20), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   interpolation="cv2_bicubic"),
)


@pytest.fixture(scope="module")
def camera_binary(host_binary: Path) -> Path:
    return host_binary.with_name("agiqa-bench-camera")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> np.ndarray:
    """A real-looking 117x83 RGB image (odd sizes: the last chroma sample covers one column)."""
    folder = _realistic_images(tmp_path_factory.mktemp("camera-photo"), count=1)
    with Image.open(next(folder.iterdir())) as image:
        return np.asarray(image.convert("RGB").resize((117, 83)))


def _jobs(binary: Path, jobs: list[dict], folder: Path, *prefix: str) -> list[dict]:
    (folder / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([*prefix, str(binary), "jobs", str(folder / "jobs.json")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _cases(photo: np.ndarray, folder: Path) -> tuple[list[dict], list[np.ndarray]]:
    """Every format x colour x rotation x (whole, cropped), padded rows: frame_to_rgb without and
    with the reduction, and preprocess_frame for each spec (1, 2 and 3 threads)."""
    jobs, expected = [], []
    for fmt in FORMATS:
        for matrix, color_range in COLOURS:
            frame = rgb_to_frame(photo, fmt, matrix=matrix, color_range=color_range, row_padding=5, alpha=9)
            data, layout = frame_layout(frame)
            raw = folder / f"{fmt}-{matrix}.raw"
            data.tofile(raw)
            for rotation in (0, 90, 180, 270):
                for crop in (None, CROP):
                    base = {"frame": str(raw), "layout": {**layout, "rotation": rotation, "crop": crop}}
                    jobs.append({**base, "what": "rgb"})
                    expected.append(frame_to_rgb(frame, rotation=rotation, crop=crop))
                    jobs.append({**base, "what": "reduced", "input_size": [10, 8]})  # f = 4 whole, 2 or 4 cropped
                    expected.append(frame_to_rgb(frame, rotation=rotation, crop=crop, input_size=(10, 8)))
                    for spec in SPECS:
                        jobs.append({**base, "what": "input", "spec": spec.to_dict(), "threads": 1 + len(jobs) % 3})
                        expected.append(preprocess_frame(spec, frame, rotation=rotation, crop=crop))
    for i, job in enumerate(jobs):
        job["out"] = str(folder / f"{i}.out")
    return jobs, expected


def _assert_bitwise(results: list[dict], jobs: list[dict], expected: list[np.ndarray]) -> None:
    assert len(results) == len(jobs)
    for job, result, want in zip(jobs, results, expected):
        assert "error" not in result, result
        got = np.fromfile(job["out"], np.float32 if job["what"] == "input" else np.uint8).reshape(result["shape"])
        case = (job["what"], job["layout"]["format"], job["layout"]["matrix"], job["layout"]["rotation"],
                job["layout"]["crop"], job.get("spec", {}).get("interpolation"))
        assert got.shape == want.shape, case
        assert np.array_equal(got, want), (case, np.abs(got.astype(np.float64) - want).max())


def test_cpp_camera_path_is_bitwise_numpy(camera_binary, photo, tmp_path):
    jobs, expected = _cases(photo, tmp_path)
    _assert_bitwise(_jobs(camera_binary, jobs, tmp_path), jobs, expected)


def test_cpp_camera_errors_are_one_line(camera_binary, photo, tmp_path):
    data, layout = frame_layout(rgb_to_frame(photo, "nv21"))
    data.tofile(tmp_path / "f.raw")
    short = json.loads(json.dumps(layout))
    short["planes"][0][1] = 100  # a row of 117 luma samples
    cases = [({**layout, "rotation": 45}, "rotation must be 0, 90, 180 or 270"),
             ({**layout, "crop": [20, 10, 100, 50]}, "is not inside the 117x83 frame"),
             (short, "Y plane: row_stride 100 is shorter than a row of 117 samples")]
    jobs = [{"frame": str(tmp_path / "f.raw"), "layout": lay, "what": "rgb", "out": str(tmp_path / "o")}
            for lay, _ in cases]
    for result, (_, words) in zip(_jobs(camera_binary, jobs, tmp_path), cases):
        assert words in result["error"] and "\n" not in result["error"], result


@pytest.fixture(scope="module")
def int8_program(tiny_exports) -> Path:
    return Path(tiny_exports["int8"].program)


def _golden(binary: Path, program: Path, *prefix: str) -> dict:
    done = subprocess.run([*prefix, str(binary), "golden", str(program)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_cpp_checks_golden_camera_pairs(camera_binary, int8_program):
    report = _golden(camera_binary, int8_program)
    assert report["passed"], report["failure"]
    assert len(report["camera_pairs"]) == 5
    for pair in report["camera_pairs"]:
        assert pair["preprocess_max_abs_diff"] == 0.0, pair  # bitwise
        assert pair["score_abs_diff"] <= report["score_tolerance"], pair


def test_cpp_refuses_a_tampered_golden_camera_frame(camera_binary, int8_program, tmp_path):
    """One block of one frame's luma bytes changed (what a wrong conversion looks like): the
    C++ check names the camera pair and the camera conversion, in one line."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    before = {p["name"]: p for p in _golden(camera_binary, int8_program)["camera_pairs"]}
    assert len(before) == 5
    for name in ("model.pte", "model.json"):
        shutil.copy(int8_program.with_name(name), tmp_path / name)
    with safe_open(str(golden_path(int8_program)), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(golden_path(int8_program)))
    frame = tensors["camera2.frame"].copy()
    middle = frame.size // 3
    frame[middle:middle + 512] = 255 - frame[middle:middle + 512]
    tensors["camera2.frame"] = frame
    save_file(tensors, str(golden_path(tmp_path / "model.pte")), metadata=meta)
    report = _golden(camera_binary, tmp_path / "model.pte")
    after = {p["name"]: p for p in report["camera_pairs"]}
    name = next(n for n in after if n.startswith("camera2 (i420, 180 deg)"))
    assert before[name]["preprocess_max_abs_diff"] == 0.0
    assert after[name]["preprocess_max_abs_diff"] > report["preprocess_tolerance"]
    cli = camera_binary.with_name("agiqa-score-cpp")
    refused = subprocess.run([str(cli), "--check-golden", str(tmp_path / "model.pte")], capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "golden camera pair 'camera" in line and "camera conversion is wrong" in line, line


def test_aarch64_camera_path(aarch64_binary, camera_binary, photo, int8_program, tmp_path):
    """The same bitwise cases on aarch64 under qemu (one CPU model), and the golden camera pairs
    preprocessed exactly as on the host."""
    binary = aarch64_binary.with_name("agiqa-bench-camera")
    qemu = ("qemu-aarch64", "-L", SYSROOT, "-cpu", QEMU_CPUS[1])
    jobs, expected = _cases(photo, tmp_path)
    _assert_bitwise(_jobs(binary, jobs, tmp_path, *qemu), jobs, expected)
    host = _golden(camera_binary, int8_program)["camera_pairs"]
    arm = _golden(binary, int8_program, *qemu)["camera_pairs"]
    assert len(arm) == 5
    assert [p["preprocess_max_abs_diff"] for p in arm] == [p["preprocess_max_abs_diff"] for p in host]


def test_camera_snippets_compile(tmp_path):
    """docs/edge.md's Android JNI glue and iOS glue compile against the real scorer.h."""
    script = REPO / "docs" / "snippets" / "check_camera.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if done.returncode == 2:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
