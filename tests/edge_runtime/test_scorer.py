"""The device runtime: contract, Scorer, agiqa-score, bad images, lean import.

The runtime is driven by the contract alone, so these tests use a micro program (a strided
conv and a linear layer, lowered to XNNPACK by the export toolchain in about a second) with a
hand-written contract; the student export itself is covered by tests/export/test_export.py. The
micro model reads pixels through a flatten + linear, so it is orientation sensitive, which
the EXIF test needs.
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
from PIL import Image
from typer.testing import CliRunner

from edge_runtime import ContractError, ModelContract, Scorer, ScoreResult
from edge_runtime.cli import app as score_app
from edge_runtime.contract import contract_path, read_program, sha256_bytes
from edge_runtime.scorer import RuntimeUnavailableError, rank_results
from tests import REPO
from tests.contract_files import edit_fields, flip_one_byte_of_text
from tests.edge_runtime.micro import SIZE, SPEC, make_corpus, photo, write_program


@pytest.fixture(scope="module")
def scorer(program) -> Scorer:
    return Scorer.from_file(program, threads=2)


def test_contract_round_trip_and_errors(program, tmp_path):
    data, contract = read_program(program)
    assert ModelContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    assert contract.preprocess == SPEC and contract.quantize == "fp32"

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
    stored = json.loads(contract_path(program).read_text())
    no_mean = edit_fields(stored, lambda f: f["preprocess"].pop("mean"), rehash=True)
    contract_path(copy).write_text(json.dumps(no_mean))  # never silently ImageNet: it must say
    with pytest.raises(ContractError, match="preprocessing lacks mean.*re-export it"):
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
    grey = np.full((*SIZE, 3), 51, np.uint8)  # 0.2 on the [0, 1] scale
    expected = (0.2 - np.asarray(SPEC.mean)) / np.asarray(SPEC.std)  # the contract's mean/std
    np.testing.assert_allclose(scorer.preprocess(grey)[:, 0, 0], expected, rtol=1e-5)


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


def _tampered_copy(program: Path, folder: Path, edit, rehash: bool = False) -> Path:
    """A copy of ``program`` and its model.json, with ``edit(fields)`` applied to its fields."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / program.name
    shutil.copy(program, copy)
    data = json.loads(contract_path(program).read_text())
    contract_path(copy).write_text(json.dumps(edit_fields(data, edit, rehash=rehash)))
    return copy


@pytest.mark.parametrize("field", ["mean", "lower_better"])
def test_edited_contract_is_refused(program, tmp_path, field):
    def edit(data):
        if field == "mean":
            data["preprocess"]["mean"] = [0.5, 0.5, 0.5]
        else:
            data["lower_better"] = not data["lower_better"]

    edited = _tampered_copy(program, tmp_path / "edited", edit)
    with pytest.raises(ContractError, match="edited after export"):
        Scorer.from_file(edited)
    photo().save(tmp_path / "a.png")
    result = CliRunner().invoke(score_app, [str(tmp_path / "a.png"), "--model", str(edited)])
    assert result.exit_code == 2 and "edited after export" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    # Also recompute model.json's own digest: the program still knows.
    forged = _tampered_copy(program, tmp_path / "forged", edit, rehash=True)
    ModelContract.read(contract_path(forged))  # consistent in itself...
    with pytest.raises(ContractError, match="not the contract this program was exported with"):
        Scorer.from_file(forged)  # ...but not what the program embeds


@pytest.mark.slow
def test_corrupt_program_with_matching_hash_is_one_line(program, tmp_path):
    data = program.read_bytes()
    for name, garbage in (("truncated", data[: len(data) // 2]), ("garbage", b"\x00garbage" * 64)):
        bad = tmp_path / name / "model.pte"
        bad.parent.mkdir()
        bad.write_bytes(garbage)

        fixed = json.loads(contract_path(program).read_text())  # sha256 of the bad bytes
        fixed.update(program_sha256=sha256_bytes(garbage), program_bytes=len(garbage))
        contract_path(bad).write_text(json.dumps(fixed))
        with pytest.raises(ContractError, match="not a loadable ExecuTorch program"):
            Scorer.from_file(bad)
        photo().save(tmp_path / "a.png")
        result = subprocess.run([sys.executable, "-m", "edge_runtime", str(tmp_path / "a.png"),
                                 "-m", str(bad)],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "not a loadable ExecuTorch program" in lines[0] and "re-export it" in lines[0]


def test_order_input_keeps_the_rank_by_score(program, scorer, tmp_path):
    make_corpus(tmp_path)
    files = [tmp_path / n for n in ("good.jpg", "empty.jpg", "cmyk.jpg", "gray16.png")]
    out = CliRunner().invoke(score_app, [*map(str, files), "-m", str(program), "-f", "json",
                                         "--order", "input"])
    rows = json.loads(out.stdout)["results"]
    assert [Path(r["path"]).name for r in rows] == [f.name for f in files]
    by_score = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    assert [r["rank"] for r in by_score] == [1, 2, 3] and rows[1]["rank"] is None


def test_folder_scan_avif_and_symlink_loop(tmp_path):
    from PIL import features

    from edge_runtime.images import IMAGE_SUFFIXES, find_images

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    photo().save(root / "a.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    if features.check("avif"):
        photo().save(root / "sub" / "b.avif")
        assert ".avif" in IMAGE_SUFFIXES
    skipped = []
    found = find_images(root, on_skip=lambda path, reason: skipped.append((path, reason)))
    expected = [root / "a.png"] + ([root / "sub" / "b.avif"] if features.check("avif") else [])
    assert found == expected
    assert len(skipped) == 1 and skipped[0][0] == root / "sub" / "loop" and "symlink" in skipped[0][1]
    with pytest.warns(UserWarning, match="symlink"):
        assert find_images(root) == expected


def test_written_files_respect_the_umask(tmp_path):
    from _agiqa.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        assert (atomic_write_text(tmp_path / "a.json", "{}").stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (atomic_write_text(tmp_path / "b.json", "{}").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)


def test_version_option():
    result = CliRunner().invoke(score_app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("agiqa-edge ")


# -- golden pairs, checked at load as the C++ scorer does ----------------------------------------
@pytest.fixture(scope="module")
def golden_program(tmp_path_factory) -> Path:
    """The micro program with its golden pairs, made by the exporter's own writer."""
    from export.golden import write_golden

    folder = tmp_path_factory.mktemp("golden")
    program = write_program(folder / "model")
    images = []
    for i, size in enumerate([(120, 90), (200, 130), (90, 150), (64, 64)]):
        images.append(folder / "photos" / f"{i}.jpg")
        images[-1].parent.mkdir(exist_ok=True)
        photo(size).rotate(40 * i).save(images[-1], quality=90)
    write_golden(program, images)
    return program


def _copy_with_golden(program: Path, folder: Path, edit=None) -> Path:
    """A copy of ``program`` + model.json + its golden file, ``edit(tensors)`` applied to the latter."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from edge_runtime.golden import golden_path

    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / program.name
    shutil.copy(program, copy)
    shutil.copy(contract_path(program), contract_path(copy))
    with safe_open(str(golden_path(program)), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(golden_path(program)))
    if edit is not None:
        edit(tensors, meta)
    save_file(tensors, str(golden_path(copy)), metadata=meta)
    return copy


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=180)


def test_golden_pairs_are_reproduced_at_load(golden_program):
    scorer = Scorer.from_file(golden_program)
    report = scorer.golden_report
    assert scorer.golden_checked and report.passed and len(report.pairs) == 3
    assert report.score_tolerance == 1e-5  # an fp32 program
    for pair in report.pairs:  # the same runtime and preprocessing as at export: exact
        assert pair.score_abs_diff == 0 and pair.preprocess_max_abs_diff == 0
    assert len({p.expected_score for p in report.pairs}) == 3  # a constant output would fail
    assert Scorer.from_file(golden_program, verify_golden=False).golden_report is None


def test_golden_camera_pairs_cover_every_layout_and_are_reproduced(golden_program):
    """The camera frames stored with the program: every layout, rotation and colour setting
    (export.golden.CAMERA_FRAMES), one of them on the reduction path, all reproduced exactly."""
    from edge_runtime.camera import frame_to_rgb, reduce_factor
    from edge_runtime.golden import golden_path, read_golden
    from export.golden import CAMERA_FRAMES

    scorer = Scorer.from_file(golden_program)
    golden = read_golden(golden_path(golden_program))
    assert len(scorer.golden_report.camera_pairs) == len(golden.camera_pairs) == len(CAMERA_FRAMES)
    for result in scorer.golden_report.camera_pairs:
        assert result.preprocess_max_abs_diff == 0 and result.score_abs_diff == 0
    seen = {(p.frame.format, p.frame.matrix, p.frame.range, p.rotation) for p in golden.camera_pairs}
    assert {fmt for fmt, *_ in seen} == {"yuv420", "rgba", "bgra"}
    assert {rot for *_, rot in seen} == {0, 90, 180, 270} and len(seen) == len(CAMERA_FRAMES)
    factors = [reduce_factor(p.crop[2:], SPEC.input_size, p.rotation) for p in golden.camera_pairs]
    assert factors.count(1) == len(factors) - 1 and max(factors) == 2
    # Each frame's content is its source image (rotated upright): not a blank frame.
    first = golden.camera_pairs[1]
    assert frame_to_rgb(first.frame, rotation=first.rotation, crop=first.crop).std() > 10


def test_tampered_golden_camera_frame_is_refused(golden_program, tmp_path):
    from edge_runtime.golden import GoldenError

    def swap_chroma(tensors, meta):  # an NV21 frame read as NV12: what a wrong conversion does
        layout = json.loads(meta["camera0.layout"])
        (_, _, _), (u, *u_rest), (v, *v_rest) = layout["planes"]
        layout["planes"][1], layout["planes"][2] = [v, *u_rest], [u, *v_rest]
        meta["camera0.layout"] = json.dumps(layout)

    bad = _copy_with_golden(golden_program, tmp_path / "bad", swap_chroma)
    with pytest.raises(GoldenError, match=r"refused: golden camera pair 'camera0 \(nv21, 90 deg\).*"
                                          r"preprocesses differently.*camera conversion is wrong"):
        Scorer.from_file(bad)
    assert Scorer.from_file(bad, verify_golden=False).golden_report is None


@pytest.mark.slow
def test_tampered_golden_score_is_refused_in_one_line(golden_program, tmp_path):
    from edge_runtime.golden import GoldenError

    def plus_half(tensors, meta):
        tensors["pair1.score"] = tensors["pair1.score"] + np.float32(0.5)

    bad = _copy_with_golden(golden_program, tmp_path / "bad", plus_half)
    with pytest.raises(GoldenError, match=r"refused: golden pair '.*' scores .*expected"):
        Scorer.from_file(bad)
    assert Scorer.from_file(bad, verify_golden=False).golden_report is None
    photo().save(tmp_path / "a.png")
    refused = _cli(str(tmp_path / "a.png"), "-m", str(bad))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and refused.stdout == "" and len(lines) == 1, refused.stderr
    assert str(bad) in lines[0] and "golden.safetensors" in lines[0]  # the files...
    assert "--no-verify-golden" in lines[0] and "re-export" in lines[0]  # ...and the fixes
    forced = _cli(str(tmp_path / "a.png"), "-m", str(bad), "--no-verify-golden", "-f", "csv")
    assert forced.returncode == 0 and "a.png" in forced.stdout, forced.stderr
    assert "golden" not in forced.stderr  # no note either: the user turned the check off


def test_golden_preprocessing_and_other_program_and_missing(golden_program, program, tmp_path):
    from edge_runtime.golden import GoldenError, golden_path

    def shift_pixel(tensors, meta):  # stored RGB no longer gives the stored input
        rgb = tensors["pair0.rgb"]
        rgb[..., 0] = np.where(rgb[..., 0] < 128, rgb[..., 0] + 40, rgb[..., 0] - 40)

    moved = _copy_with_golden(golden_program, tmp_path / "pre", shift_pixel)
    with pytest.raises(GoldenError, match="preprocesses differently from numpy"):
        Scorer.from_file(moved)

    def other_program(tensors, meta):
        meta["program_sha256"] = "0" * 64

    other = _copy_with_golden(golden_program, tmp_path / "other", other_program)
    with pytest.raises(GoldenError, match="made for another program.*re-export"):
        Scorer.from_file(other)

    # No golden file (an older export): loads unchecked, as the C++ does, and says so.
    assert not golden_path(program).exists()
    assert Scorer.from_file(program).golden_report is None
    with pytest.raises(GoldenError, match="missing; re-export"):
        Scorer.from_file(program, verify_golden="required")
    photo().save(tmp_path / "a.png")
    result = CliRunner().invoke(score_app, [str(tmp_path / "a.png"), "-m", str(program)])
    assert result.exit_code == 0 and "without the golden check" in result.stderr


# -- the contract's format: version 2 written, version 1 still read -----------------------------
def test_v2_contract_is_its_stored_text(program):
    """model.json holds the envelope only; the digest is the sha256 of the stored text's bytes,
    the same digest the program embeds, and the text spells out every field."""
    data = json.loads(contract_path(program).read_text())
    assert sorted(data) == ["contract", "contract_sha256", "format", "format_version",
                            "program_bytes", "program_sha256"]
    assert data["format_version"] == 2
    assert data["contract_sha256"] == sha256_bytes(data["contract"].encode("utf-8"))
    fields = json.loads(data["contract"])
    contract = ModelContract.load(program)
    assert fields["format_version"] == 2 and fields["preprocess"]["mean"] == list(SPEC.mean)
    assert set(fields) | {"program_sha256", "program_bytes", "contract_sha256"} == set(contract.to_dict())
    assert contract.digest() == data["contract_sha256"] and contract.text() == data["contract"]
    assert contract.program_bytes == program.stat().st_size


def test_v2_refuses_missing_fields_and_stray_keys(program, tmp_path):
    """A version-2 reader fills in no defaults, and a field put beside the envelope (where a
    version-1 reader would have looked) is refused rather than silently ignored."""
    data = json.loads(contract_path(program).read_text())
    copy = tmp_path / program.name
    shutil.copy(program, copy)
    contract_path(copy).write_text(json.dumps(edit_fields(data, lambda f: f.pop("lower_better"),
                                                          rehash=True)))
    with pytest.raises(ContractError, match=r"missing fields \['lower_better'\].*re-export it"):
        ModelContract.load(copy)
    contract_path(copy).write_text(json.dumps(edit_fields(data, lambda f: f["preprocess"].pop("jpeg_draft"),
                                                          rehash=True)))
    with pytest.raises(ContractError, match="preprocessing lacks jpeg_draft"):
        ModelContract.load(copy)
    contract_path(copy).write_text(json.dumps({**data, "lower_better": True}))
    with pytest.raises(ContractError, match=r"unexpected top-level keys \['lower_better'\]"):
        ModelContract.load(copy)
    contract_path(copy).write_text(json.dumps({**data, "format_version": 1}))  # a downgrade
    with pytest.raises(ContractError, match="missing fields"):  # read as version 1: no fields
        ModelContract.load(copy)


def test_one_byte_of_contract_text_or_program_is_refused_by_the_cli(program, tmp_path):
    photo().save(tmp_path / "a.png")
    text = tmp_path / "text" / program.name
    text.parent.mkdir()
    shutil.copy(program, text)
    stored = json.loads(contract_path(program).read_text())
    contract_path(text).write_text(json.dumps(flip_one_byte_of_text(stored), indent=2))
    byte = tmp_path / "byte" / program.name
    byte.parent.mkdir()
    shutil.copy(contract_path(program), contract_path(byte))
    data = bytearray(program.read_bytes())
    data[len(data) // 2] ^= 0x01
    byte.write_bytes(bytes(data))
    for copy, expected in ((text, "edited after export (its contract text no longer matches"),
                           (byte, "does not match")):
        done = _cli(str(tmp_path / "a.png"), "-m", str(copy))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
        assert expected in lines[0] and "re-export it" in lines[0], lines[0]


def test_v1_contract_still_loads(program, tmp_path):
    """A model.json written as version-1 exporters wrote it loads, scores like the version-2
    program (same weights), and its digest still catches an edit."""
    old = write_program(tmp_path / "v1", format_version=1)
    data = json.loads(contract_path(old).read_text())
    assert data["format_version"] == 1 and "contract" not in data and data["lower_better"] is False
    scorer = Scorer.from_file(old)
    assert scorer.contract.format_version == 1 and scorer.contract.preprocess == SPEC
    photo().save(tmp_path / "a.png")
    assert scorer.score(tmp_path / "a.png") == Scorer.from_file(program).score(tmp_path / "a.png")
    done = _cli(str(tmp_path / "a.png"), "-m", str(old))
    assert done.returncode == 0 and str(tmp_path / "a.png") in done.stdout, done.stderr
    contract_path(old).write_text(json.dumps(edit_fields(data, lambda f: f.update(lower_better=True))))
    with pytest.raises(ContractError, match=r"edited after export \(its fields no longer match"):
        Scorer.from_file(old)
    contract_path(old).write_text(json.dumps(edit_fields(data, lambda f: f.update(lower_better=True),
                                                         rehash=True)))
    with pytest.raises(ContractError, match="not the contract this program was exported with"):
        Scorer.from_file(old)
