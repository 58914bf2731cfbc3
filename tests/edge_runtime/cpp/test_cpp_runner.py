"""The C++ scorer (edge_runtime/cpp) against Python: golden pairs, decoding, CLI, aarch64 (qemu).

Builds agiqa-score-cpp with CMake against the installed executorch wheel's C++ SDK, and for
aarch64 with Debian's cross compiler against the aarch64 wheel (downloaded by pip), then runs it
under qemu-user on pinned CPU models. Each part skips with the reason when its tools are
missing (.ci/run installs them). The builds go under pytest's tmp_path unless AGIQA_CPP_BUILD
names a folder to keep them in (then a rerun rebuilds only what changed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edge_runtime import Scorer
from edge_runtime.golden import golden_path, read_golden
from tests import REPO
from tests.contract_files import edit_fields, flip_one_byte_of_text
from tests.edge_runtime.cpp.builds import QEMU_CPUS
from tests.edge_runtime.cpp.builds import run as _run

pytestmark = [pytest.mark.cpp, pytest.mark.slow]  # builds the C++ scorer (native and aarch64)

def _golden(binary: Path, program: Path, cpu: str | None = None) -> dict:
    done = _run(binary, "--check-golden", str(program), cpu=cpu)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


# -- golden pairs, Python side -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "fp32"])
def test_python_scorer_reproduces_golden_pairs(programs, mode):
    golden = read_golden(golden_path(programs[mode]))
    scorer = Scorer.from_file(programs[mode])
    assert golden.program_sha256 == scorer.contract.program_sha256 and len(golden.pairs) == 3
    scores = []
    for pair in golden.pairs:
        assert pair.rgb.dtype == np.uint8 and pair.rgb.ndim == 3
        np.testing.assert_allclose(scorer.preprocess(pair.rgb)[None], pair.input,
                                   atol=golden.preprocess_tolerance, rtol=0)
        out = scorer.run(pair.input)
        assert abs(float(out["score"][0]) - float(pair.outputs["score"][0])) <= golden.score_tolerance
        assert np.abs(out["gate_weights"] - pair.outputs["gate_weights"]).max() <= golden.gate_tolerance
        scores.append(float(pair.outputs["score"][0]))
    # The pairs must tell a working kernel from one that returns a constant: within the tight
    # tolerances; the random tiny student's scores span 1e-4, inside int8-dynamic's 1e-2.
    if mode != "int8-dynamic":
        assert max(scores) - min(scores) > golden.score_tolerance
    else:
        assert (golden.score_tolerance, golden.gate_tolerance) == (1e-2, 5e-3)


# -- C++ on the host ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "fp32"])
def test_cpp_reproduces_golden_pairs(host_binary, programs, mode):
    report = _golden(host_binary, programs[mode])
    assert report["passed"], report
    for pair in report["pairs"]:
        assert pair["preprocess_max_abs_diff"] <= report["preprocess_tolerance"]
        assert pair["score_abs_diff"] <= report["score_tolerance"]


def _decoding_cases(folder: Path, realistic_images) -> list[Path]:
    """Real-photo crops plus the decoder's special cases: EXIF rotation, JPEG draft scaling,
    grayscale, alpha over white, palette transparency, 16-bit grayscale."""
    paths = sorted(realistic_images(folder / "photos", count=8).iterdir())
    photo = Image.open(paths[0]).convert("RGB")
    big = photo.resize((1400, 1000), Image.Resampling.BICUBIC)
    big.save(folder / "big_draft.jpg", quality=90)  # decodes at 1/2 (1400 // 448 = 3 -> 2)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(folder / "exif_rot6.jpg", quality=92, exif=exif)
    exif[0x0112] = 3
    photo.save(folder / "exif_rot3.jpg", quality=92, exif=exif)
    photo.convert("L").save(folder / "gray.jpg", quality=90)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(folder / "alpha.png")
    photo.quantize(64).save(folder / "palette.png", transparency=0)
    gray16 = (np.asarray(photo.convert("L"), np.uint16) * 257 + 100).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    photo.convert("LA").save(folder / "gray_alpha.png")
    return paths + sorted(p for p in folder.iterdir() if p.is_file())


def test_cpp_decoding_and_preprocessing_match_numpy(host_binary, programs, realistic_images, tmp_path):
    """Model inputs from the C++ decoders + resize vs edge_runtime's (Pillow + numpy)."""
    images = _decoding_cases(tmp_path / "images", realistic_images)
    dump = tmp_path / "inputs"
    dump.mkdir()
    program = programs["fp32"]
    done = _run(host_binary, "--dump-inputs", str(dump), str(program), *map(str, images))
    assert done.returncode == 0, done.stderr
    scorer = Scorer.from_file(program)
    from safetensors.numpy import load_file

    lines = done.stdout.splitlines()
    assert len(lines) == len(images)
    for i, (path, line) in enumerate(zip(images, lines)):
        expected = scorer.preprocess(path)[None]
        got = load_file(str(dump / f"{i}.safetensors"))["input"]
        assert got.shape == expected.shape, path.name
        assert np.abs(got - expected).max() <= 1e-5, path.name  # identical pixels
        score = float(line.split("\t")[0])
        assert abs(score - scorer.score(path)) <= 1e-5, path.name


def test_cpp_cli_skips_bad_files_with_a_reason(host_binary, programs, realistic_images, tmp_path):
    good = sorted(realistic_images(tmp_path / "ok", count=2).iterdir())[0]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    Image.open(good).convert("RGB").save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:400])
    done = _run(host_binary, str(programs["int8"]), str(empty), str(good), str(text), str(truncated),
                str(tmp_path / "missing.jpg"))
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows[1][1] == str(good) and np.isfinite(float(rows[1][0]))
    reasons = {Path(r[1]).name: r[2] for r in rows if r[0] == "skipped"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["missing.jpg"] == "file not found"
    assert "not an image" in reasons["notes.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "scored 1 image(s), skipped 4" in done.stderr
    only_bad = _run(host_binary, str(programs["int8"]), str(empty))
    assert only_bad.returncode == 1


def test_cpp_refuses_a_program_that_misses_its_golden_pairs(host_binary, programs, realistic_images, tmp_path):
    """The load-time guard: outputs that disagree with the golden pairs (what an SME-enabled CPU
    produced, docs/edge.md) make the runtime refuse, in one line, instead of scoring."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    for name in ("model.pte", "model.json"):
        shutil.copy(programs["int8"].with_name(name), tmp_path / name)
    source = golden_path(programs["int8"])
    with safe_open(str(source), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(source))
    tensors["pair1.score"] = tensors["pair1.score"] + 0.5
    save_file(tensors, str(golden_path(tmp_path / "model.pte")), metadata=meta)
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]
    refused = _run(host_binary, str(tmp_path / "model.pte"), str(photo))
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "refused: golden pair" in refused.stderr and "docs/edge.md" in refused.stderr
    forced = _run(host_binary, "--no-golden-check", str(tmp_path / "model.pte"), str(photo))
    assert forced.returncode == 0, forced.stderr
    # A contract that does not describe the program is refused too (sha256).
    (tmp_path / "model.pte").write_bytes((tmp_path / "model.pte").read_bytes() + b"\0")
    tampered = _run(host_binary, "--no-golden-check", str(tmp_path / "model.pte"), str(photo))
    assert tampered.returncode == 2 and "sha256" in tampered.stderr


def _contract_copy(programs, tmp_path) -> tuple[Path, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("model.pte", "model.json"):
        shutil.copy(programs["int8"].with_name(name), tmp_path / name)
    return tmp_path / "model.pte", json.loads((tmp_path / "model.json").read_text())


def _refusal(host_binary, program: Path, photo: Path) -> str:
    done = _run(host_binary, "--no-golden-check", str(program), str(photo))
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def _write_json(path: Path, data: dict, **dump) -> None:
    path.write_text(json.dumps(data, **({"indent": 2} | dump)))


def test_cpp_refuses_an_edited_contract(host_binary, programs, realistic_images, tmp_path):
    """model.json's digest of its stored contract text: a flipped lower_better is refused, as in
    Python."""
    program, data = _contract_copy(programs, tmp_path)
    assert data["format_version"] == 2
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]
    assert _run(host_binary, "--no-golden-check", str(program), str(photo)).returncode == 0
    edited = edit_fields(data, lambda f: f.update(lower_better=not f["lower_better"]))
    _write_json(tmp_path / "model.json", edited)
    error = _refusal(host_binary, program, photo)
    assert "model.json: edited after export (its contract text" in error and "re-export" in error
    del edited["contract_sha256"]
    _write_json(tmp_path / "model.json", edited)
    assert "has no contract_sha256" in _refusal(host_binary, program, photo)
    # No defaults in a version-2 reader, and nothing read from beside the envelope.
    _write_json(tmp_path / "model.json", edit_fields(data, lambda f: f.pop("score_output"), rehash=True))
    assert "missing field 'score_output'" in _refusal(host_binary, program, photo)
    _write_json(tmp_path / "model.json", {**data, "lower_better": True})
    assert "unexpected top-level key 'lower_better'" in _refusal(host_binary, program, photo)


def test_cpp_refuses_a_contract_with_a_forged_digest(host_binary, programs, realistic_images, tmp_path):
    """An edit whose contract_sha256 was recomputed passes the file's own check but not the
    digest inside the program."""
    program, data = _contract_copy(programs, tmp_path)
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]
    forged = edit_fields(data, lambda f: f.update(lower_better=not f["lower_better"]), rehash=True)
    _write_json(tmp_path / "model.json", forged, indent=1, ensure_ascii=False)
    error = _refusal(host_binary, program, photo)
    assert "model.json is not the contract this program was exported with" in error, error


def test_cpp_refuses_one_byte_of_contract_text_or_program(host_binary, programs, realistic_images,
                                                         tmp_path):
    """Both runtimes refuse the same tampering, each in one line through its command line."""
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]
    program, data = _contract_copy(programs, tmp_path / "text")
    _write_json(program.with_suffix(".json"), flip_one_byte_of_text(data))
    other, _ = _contract_copy(programs, tmp_path / "byte")
    blob = bytearray(other.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    other.write_bytes(bytes(blob))
    for path, expected in ((program, "edited after export (its contract text no longer matches"),
                           (other, "does not match")):
        cpp = _refusal(host_binary, path, photo)
        python = subprocess.run([sys.executable, "-m", "edge_runtime", "--no-verify-golden", "-m",
                                 str(path), str(photo)], capture_output=True, text=True, timeout=300,
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = python.stderr.strip().splitlines()
        assert python.returncode == 2 and python.stdout == "" and len(lines) == 1, python.stderr
        for error in (cpp, lines[0]):
            assert expected in error and "re-export it" in error, error


@pytest.fixture(scope="module")
def v1_program(programs, tmp_path_factory) -> Path:
    """A program whose model.json is written as version-1 exporters wrote it (fields at top
    level, digest over Python's canonical JSON): the int8 export's fields around a small model."""
    import dataclasses

    from edge_runtime.contract import ModelContract, contract_path
    from export.build import lower_with_contract

    contract = dataclasses.replace(ModelContract.load(programs["int8"]), format_version=1,
                                   program_sha256="", program_bytes=0, contract_sha256=None)
    lowered, contract = lower_with_contract(_MeanScore(), torch.zeros(contract.input_shape), contract)
    program = tmp_path_factory.mktemp("v1") / "model.pte"
    program.write_bytes(lowered.buffer)
    contract.save(contract_path(program))
    assert "contract" not in json.loads(contract_path(program).read_text())
    return program


def test_cpp_reads_a_v1_contract(host_binary, v1_program, realistic_images, tmp_path):
    """A version-1 model.json loads in both runtimes and scores the same; its digest, still
    recomputed the way Python wrote it (contract_v1.cpp), catches edits. The unusual values
    prove the C++ canonical JSON is Python's: were it not, the forged file would be refused
    as "edited after export" instead."""
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]
    done = _run(host_binary, str(v1_program), str(photo))
    assert done.returncode == 0, done.stderr
    assert abs(float(done.stdout.split("\t")[0]) - Scorer.from_file(v1_program).score(photo)) <= 1e-5
    for name in ("model.pte", "model.json"):
        shutil.copy(v1_program.with_name(name), tmp_path / name)
    program, data = tmp_path / "model.pte", json.loads((tmp_path / "model.json").read_text())
    _write_json(tmp_path / "model.json", edit_fields(data, lambda f: f.update(lower_better=True)))
    assert "edited after export (its fields no longer match" in _refusal(host_binary, program, photo)

    def unusual(fields: dict) -> None:
        fields["lower_better"] = not fields["lower_better"]
        fields["preprocess"]["mean"] = [0.1, 1e-05, 1 / 3]
        fields["zz_unusual"] = {"floats": [1e16, 1e22, 123456789.125, -0.0, 5e-324, 0.0001, 2.5e-7,
                                           1.7976931348623157e308, 224.0, -1.5e-10, 1234567890123456.0],
                                "ints": [0, -7, 2**63 - 1, 2**64 - 1],
                                "text": "caf\u00e9 \U0001f600 \x7f \"q\" \\ \n\t\x01/",
                                "B": None, "a": True, "\u00e9": False}

    _write_json(tmp_path / "model.json", edit_fields(data, unusual, rehash=True), indent=1,
                ensure_ascii=False)
    error = _refusal(host_binary, program, photo)
    assert "model.json is not the contract this program was exported with" in error, error


class _MeanScore(torch.nn.Module):
    """(1, 3, H, W) -> (score (1,), gate_weights (1, 3)): a program with the student's signature."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(1, 2, 3)), x.mean(dim=(2, 3)).softmax(dim=1)


def test_cpp_refuses_a_program_without_its_contract_digest(host_binary, programs, realistic_images, tmp_path):
    """A program lowered without the agiqa_contract_sha256 method (an older export) is refused."""
    from edge_runtime.contract import ModelContract, sha256_bytes
    from export import _toolchain as tc

    program, data = _contract_copy(programs, tmp_path)
    photo = sorted(realistic_images(tmp_path / "img", count=1).iterdir())[0]

    lowered = tc.lower_to_executorch(
        tc.export_program(_MeanScore(), torch.zeros(ModelContract.load(program).input_shape)), "xnnpack")
    program.write_bytes(lowered.buffer)
    data["program_sha256"] = sha256_bytes(lowered.buffer)  # not covered by contract_sha256
    (tmp_path / "model.json").write_text(json.dumps(data, indent=2))
    error = _refusal(host_binary, program, photo)
    assert "carries no contract digest" in error and "re-export" in error, error


# -- aarch64 under qemu-user --------------------------------------------------------------------
@pytest.mark.parametrize("cpu", QEMU_CPUS)
def test_aarch64_reproduces_golden_pairs(aarch64_binary, programs, cpu):
    # int8, static and dynamic (the default export), on every CPU model; fp32 (slow under
    # emulation) on one. Dynamic programs are checked within their own, wider tolerance.
    for mode in ("int8", "int8-dynamic", "fp32") if cpu == "cortex-a76" else ("int8", "int8-dynamic"):
        report = _golden(aarch64_binary, programs[mode], cpu=cpu)
        assert report["passed"], (mode, cpu, report)
        for pair in report["pairs"]:
            assert pair["preprocess_max_abs_diff"] <= report["preprocess_tolerance"], (mode, cpu)
