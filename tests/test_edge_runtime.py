"""The device runtime: contract, Scorer, agiqa-score, bad images, lean import.

The runtime is driven by the contract alone, so these tests use a micro program (a strided
conv and a linear layer, lowered to XNNPACK by the export toolchain in about a second) with a
hand-written contract; the student export itself is covered by tests/test_export.py. The
micro model reads pixels through a flatten + linear, so it is orientation sensitive, which
the EXIF test needs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edge_runtime import ContractError, ModelContract, PreprocessSpec, Scorer, ScoreResult
from edge_runtime.cli import app as score_app
from edge_runtime.contract import contract_path, read_program, sha256_bytes
from edge_runtime.scorer import RuntimeUnavailableError, rank_results

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 64)


class MicroIQA(torch.nn.Module):
    """``(1, 3, 64, 64) -> (score (1,), gate_weights (1, 3))``, like an exported student."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.fc = torch.nn.Linear(4 * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fc(torch.relu(self.conv(x)).reshape(1, -1))
        return out[:, 0:1].reshape(-1), out[:, 1:4].softmax(dim=-1)


def write_program(directory: Path, lower_better: bool = False) -> Path:
    from export.executorch import lower_with_contract

    torch.manual_seed(0)
    example = torch.zeros(1, 3, *SIZE)
    contract = ModelContract(program_sha256="", preprocess=PreprocessSpec(input_size=SIZE),
                             input_shape=(1, 3, *SIZE),
                             expert_names=("semantic_0", "semantic_1", "quality"),
                             lower_better=lower_better, quantization={"mode": "fp32"})
    lowered, contract = lower_with_contract(MicroIQA().eval(), example, contract)
    assert lowered.outside_delegate == ()
    program = directory / "micro.pte"
    directory.mkdir(parents=True, exist_ok=True)
    program.write_bytes(lowered.buffer)
    contract.save(contract_path(program))
    return program


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    return write_program(tmp_path_factory.mktemp("micro"))


@pytest.fixture(scope="module")
def scorer(program) -> Scorer:
    return Scorer.from_file(program, threads=2)


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


def test_contract_round_trip_and_errors(program, tmp_path):
    data, contract = read_program(program)
    assert ModelContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    assert contract.preprocess == PreprocessSpec(input_size=SIZE) and contract.quantize == "fp32"

    copy = tmp_path / "copy.pte"
    shutil.copy(program, copy)
    with pytest.raises(ContractError, match="missing.*re-export it"):
        Scorer.from_file(copy)
    contract_path(copy).write_text("{not json")
    with pytest.raises(ContractError, match="malformed JSON.*re-export it"):
        ModelContract.load(copy)
    contract_path(copy).write_text(json.dumps({**contract.to_dict(), "format_version": 99}))
    with pytest.raises(ContractError, match="format_version 99"):
        ModelContract.load(copy)
    shutil.copy(contract_path(program), contract_path(copy))
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ContractError, match="does not match.*re-export it"):
        Scorer.from_file(copy)


def test_score_path_and_array_agree(scorer, tmp_path):
    image = photo()
    image.save(tmp_path / "a.png")
    by_path = scorer.score(tmp_path / "a.png")
    by_array = scorer.score(np.asarray(image))
    assert isinstance(by_path, float) and by_path == pytest.approx(by_array, abs=1e-6)
    out = scorer.run(scorer.preprocess(np.asarray(image))[None])
    assert set(out) == {"score", "gate_weights"} and out["gate_weights"].shape == (1, 3)
    with pytest.raises(ValueError, match="uint8"):
        scorer.score(np.zeros((8, 8, 3), np.float32))


def test_bad_image_corpus_through_cli(program, scorer, tmp_path):
    expected = make_corpus(tmp_path / "corpus")
    result = CliRunner().invoke(score_app, [str(tmp_path / "corpus"), "--model", str(program),
                                            "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)["results"]}
    assert set(rows) == set(expected)
    for name, reason in expected.items():
        if reason is None:
            assert rows[name]["score"] is not None and rows[name]["skipped"] is None, rows[name]
        else:
            assert rows[name]["score"] is None and reason in rows[name]["skipped"], rows[name]
            assert f"skipped {tmp_path / 'corpus' / name}:" in result.stderr
    # Skipped images come after every scored one, ranked best first.
    order = [r for r in json.loads(result.stdout)["results"]]
    assert [r["rank"] for r in order if r["score"] is not None] == [1, 2, 3, 4, 5]
    assert all(r["score"] is None for r in order[5:])

    # EXIF: the rotated JPEG scores as its pixels turned upright would, not as stored.
    rotated = tmp_path / "corpus" / "exif_rotated.jpg"
    with Image.open(rotated) as raw:
        stored = np.asarray(raw.convert("RGB"))
    Image.fromarray(np.ascontiguousarray(np.rot90(stored, k=-1))).save(tmp_path / "upright.png")
    Image.fromarray(stored).save(tmp_path / "stored.png")
    upright = scorer.score(tmp_path / "upright.png")
    assert rows["exif_rotated.jpg"]["score"] == pytest.approx(upright, abs=1e-5)
    assert abs(scorer.score(tmp_path / "stored.png") - upright) > 1e-4  # the test can tell


def test_table_and_csv_and_nothing_scored(program, tmp_path):
    make_corpus(tmp_path / "c")
    runner = CliRunner()
    table = runner.invoke(score_app, [str(tmp_path / "c" / "good.jpg"), str(tmp_path / "c" / "empty.jpg"),
                                      "--model", str(program)])
    assert table.exit_code == 0 and "good.jpg" in table.stdout and "empty file" in table.stdout
    csv_out = runner.invoke(score_app, [str(tmp_path / "c"), "-m", str(program), "-f", "csv",
                                        "--order", "input"])
    assert csv_out.stdout.splitlines()[0] == "rank,path,score,skipped"
    none = runner.invoke(score_app, [str(tmp_path / "c" / "empty.jpg"), "-m", str(program)])
    assert none.exit_code == 1 and "scored 0 image(s), skipped 1" in none.stderr
    missing = runner.invoke(score_app, [str(tmp_path / "c"), "-m", str(tmp_path / "nope.pte")])
    assert missing.exit_code == 2 and "cannot load" in missing.stderr


def test_rank_respects_direction(scorer, tmp_path):
    results = [ScoreResult("a", 0.2), ScoreResult("b", None, "empty file"), ScoreResult("c", 0.9),
               ScoreResult("d", 0.5)]
    assert [r.path for r in rank_results(results, lower_better=False)] == ["c", "d", "a", "b"]
    assert [r.path for r in rank_results(results, lower_better=True)] == ["a", "d", "c", "b"]
    make_corpus(tmp_path)
    ranked = scorer.rank([tmp_path / "good.jpg", tmp_path / "notes.jpg", tmp_path / "cmyk.jpg"])
    assert [r.ok for r in ranked] == [True, True, False] and ranked[0].score >= ranked[1].score


def test_missing_native_runtime_is_a_clear_error(program, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    with pytest.raises(RuntimeUnavailableError, match="ExecuTorch runtime is not available"):
        Scorer.from_file(program)


def test_lean_import(program):
    code = f"""
import sys
import edge_runtime
heavy = [m for m in ("torch", "timm", "transformers", "executorch") if m in sys.modules]
assert not heavy, f"import edge_runtime pulled in {{heavy}}"
scorer = edge_runtime.Scorer.from_file({str(program)!r})
assert isinstance(scorer.score(__import__("numpy").zeros((32, 48, 3), "uint8")), float)
banned = ("timm", "transformers", "teacher", "student", "distill", "export")
loaded = [m for m in sys.modules if m.split(".")[0] in banned]
assert not loaded, f"Scorer.from_file pulled in {{sorted(loaded)[:5]}}"
print("lean ok")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "lean ok"
    assert "cpuinfo" not in done.stderr and "KernelPreference" not in done.stderr, done.stderr
