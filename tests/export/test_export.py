"""Export: wrapper parity, fp32 program parity and delegation, int8 export, contract, CLI.

The tiny student's fp32 and int8 programs (``tiny_exports`` in conftest.py, shared with the C++
tests) and one more fp32 export through the CLI, failing a deliberately impossible threshold.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from typer.testing import CliRunner

from edge_runtime import ContractError, ModelContract, Scorer
from edge_runtime.contract import contract_path, report_path, sha256_bytes
from edge_runtime.golden import golden_path
from edge_runtime.preprocess import resize_rgb
from export import QUANTIZE_MODES, EdgeStudent, ExportError, export_executorch
from export.backends import EXPORT_BACKENDS, INT8_ACTIVATIONS, SUPPORTED_BACKENDS, get_backend
from export.cli import Backend, Quantize
from export.cli import app as export_app
from student.model import StudentIQA, create_student


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def student_dir(tiny_student_dir) -> Path:
    return tiny_student_dir


@pytest.fixture(scope="module")
def images(realistic_image_dir) -> Path:
    return realistic_image_dir


@pytest.fixture(scope="module")
def fp32(tiny_exports):
    return tiny_exports["fp32"]


def test_wrapper_matches_student():
    torch.manual_seed(0)
    student = create_student("tiny").eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        eager = student(x)
        score, gate = EdgeStudent(student)(x)
    torch.testing.assert_close(score, eager.score, rtol=0, atol=1e-6)
    torch.testing.assert_close(gate, eager.gate_weights, rtol=0, atol=1e-6)
    assert any(isinstance(m, torch.nn.Hardsigmoid) for m in student.modules())  # untouched


def test_wrapper_runs_the_students_own_head_and_swaps_only_its_table():
    torch.manual_seed(0)
    student = create_student("tiny").eval()
    hardsigmoids = sum(isinstance(m, torch.nn.Hardsigmoid) for m in student.modules())
    wrapper = EdgeStudent(student)
    assert hardsigmoids > 0 and wrapper.swapped == {torch.nn.Hardsigmoid: hardsigmoids}
    assert not any(isinstance(m, torch.nn.Hardsigmoid) for m in wrapper.modules())
    assert wrapper.describe_changes() == [f"{hardsigmoids} nn.Hardsigmoid -> "
                                          "hardtanh(x + 3, 0, 6) / 6 (float constants)"]
    # Without swaps the wrapper is the student itself: same ops, so the same bits.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        score, gate = EdgeStudent(student, swaps={})(x)
        eager = student(x)
    assert torch.equal(score, eager.score) and torch.equal(gate, eager.gate_weights)


def test_fp32_parity_and_full_delegation(fp32, images):
    v = fp32.verification
    assert fp32.passed and fp32.failures == []
    assert v.max_abs_diff <= 1e-4 and v.gate_max_abs_diff <= 1e-4, v
    assert v.num_images == 8 and v.latency_ms_median > 0
    assert fp32.nodes_outside_delegate == 0, fp32.outside_ops
    report = json.loads(report_path(fp32.program).read_text())
    for key in ("max_abs_diff", "srcc", "plcc", "latency_ms_median", "num_images"):
        assert key in report["verification"]
    assert report["program_bytes"] == Path(fp32.program).stat().st_size
    assert report["nodes_outside_delegate"] == 0


def test_contract_describes_program(fp32, student_dir):
    contract = ModelContract.load(fp32.program)
    student = StudentIQA.from_pretrained(student_dir)
    assert contract.preprocess == student.config.preprocess
    assert contract.input_shape == (1, 3, 64, 64)
    assert contract.output_names == ("score", "gate_weights")
    assert contract.expert_names == ("semantic_0", "semantic_1", "quality")
    assert contract.teacher_fingerprint == "t" * 64
    assert len(contract.student_weights_sha256) == 64
    assert contract.quantization == {"mode": "fp32"} and contract.backend == "xnnpack"
    assert {"torch", "torchao", "executorch"} <= set(contract.versions)
    assert contract.partitioner == EXPORT_BACKENDS["xnnpack"].partitioner
    assert ModelContract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    # Written as format version 2: the fields as text, hashed as stored bytes.
    stored = json.loads(contract_path(fp32.program).read_text())
    assert stored["format_version"] == contract.format_version == 2
    assert stored["contract"] == contract.text() and contract.contract_sha256 == stored["contract_sha256"]
    assert stored["contract_sha256"] == sha256_bytes(stored["contract"].encode("utf-8"))


def test_scorer_matches_eager_student(fp32, student_dir, images):
    student = StudentIQA.from_pretrained(student_dir)
    scorer = Scorer.from_file(fp32.program)
    for path in sorted(images.iterdir())[:3]:
        x = torch.from_numpy(student.config.preprocess.load(path))[None]
        with torch.no_grad():
            expected = float(student(x).score[0])
        assert scorer.score(path) == pytest.approx(expected, abs=1e-4)


def test_backbone_normalisation_reaches_the_contract_and_the_runtime(workdir, images):
    """A backbone whose timm pretrained_cfg normalises with 0.5 / 0.5 (not ImageNet): the
    student, its config.json, the contract and the device runtime all use those values."""
    torch.manual_seed(0)
    student = create_student("tiny", backbone="test_resnet").eval()
    assert student.config.mean == (0.5, 0.5, 0.5) and student.config.std == (0.5, 0.5, 0.5)
    report = export_executorch(student.save_pretrained(workdir / "half"), workdir / "half.pte",
                               quantize="fp32", images=images)
    contract = ModelContract.load(report.program)
    assert contract.preprocess.mean == (0.5, 0.5, 0.5) and contract.preprocess.std == (0.5, 0.5, 0.5)
    path = sorted(images.iterdir())[0]
    rgb = contract.preprocess.decode(path)
    resized = resize_rgb(rgb, (64, 64), contract.preprocess.interpolation).astype(np.float32)  # normalised by hand
    x = torch.from_numpy(((resized / 255 - 0.5) / 0.5).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        expected = float(student(x).score[0])
    assert Scorer.from_file(report.program).score(path) == pytest.approx(expected, abs=1e-4)


def test_hash_mismatch_is_refused(fp32, tmp_path):
    other = tmp_path / "model.pte"
    data = Path(fp32.program).read_bytes()
    other.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    shutil.copy(contract_path(fp32.program), contract_path(other))
    with pytest.raises(ContractError, match="re-export it"):
        Scorer.from_file(other)


@pytest.mark.slow
def test_threshold_failure_exits_nonzero(workdir, student_dir, images):
    out = workdir / "rejected" / "model.pte"
    result = CliRunner().invoke(export_app, [
        "executorch", str(student_dir), "--out", str(out), "--quantize", "fp32",
        "--images", str(images), "--max-abs-diff", "1e-9"])
    assert result.exit_code == 1, result.output
    assert "fidelity below threshold" in result.stderr and "max abs score diff" in result.stderr
    assert not out.exists()  # a failed program never takes the requested name
    rejected = out.with_name("model.rejected.pte")
    report = json.loads(report_path(rejected).read_text())
    assert report["passed"] is False and report["quantize"] == "fp32"
    assert report["verification"]["num_images"] == 8
    assert not contract_path(rejected).exists()  # the runtime must refuse a program that failed
    with pytest.raises(ContractError, match="re-export it"):
        Scorer.from_file(rejected)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_int8_program_ranks_like_the_eager_student(tiny_exports, student_dir, images):
    int8, fp32 = tiny_exports["int8"], tiny_exports["fp32"]
    assert int8.passed and int8.failures == [], int8.failures  # SRCC >= 0.95 (see tiny_exports)
    report = json.loads(report_path(int8.program).read_text())
    assert report["calibration_images"] == 8 and report["verification"]["num_images"] == 8
    assert report["verification"]["srcc"] >= 0.95
    assert report["nodes_outside_delegate"] == 0, report["outside_ops"]
    assert report["quantization"]["weight"]["qscheme"] == "per_channel_symmetric"
    assert report["quantization"]["input_activation"]["is_dynamic"] is False
    assert "'student.backbone'" in report["quantization"]["scope"]
    assert report["quantization"]["dynamic_scope"] == list(EdgeStudent.INT8_DYNAMIC_SCOPE)
    # Checked here too, not only by the exporter's own verification: every test image (calibration
    # ones included), int8 program against the eager fp32 student. Measured: 0.985 over 16 images.
    student = StudentIQA.from_pretrained(student_dir)
    scorer = Scorer.from_file(int8.program)
    eager, program = [], []
    for path in sorted(images.iterdir()):
        with torch.no_grad():
            eager.append(float(student(torch.from_numpy(student.config.preprocess.load(path))[None]).score[0]))
        program.append(scorer.score(path))
    assert len(eager) == 16 and spearmanr(eager, program)[0] >= 0.9, (eager, program)
    # No pair ranked the wrong way round whose eager scores are further apart than the int8
    # program's largest error: int8 may swap near-ties, never images it can tell apart.
    noise = max(abs(a - b) for a, b in zip(eager, program))
    inverted = [(i, j) for i in range(16) for j in range(16)
                if eager[i] - eager[j] > 2 * noise and program[i] <= program[j]]
    assert inverted == [], (inverted, noise)
    # The head's outputs stay fp32, so the score is not snapped to int8 levels: no ties among 8 images.
    assert len(set(program[:8])) == 8, program
    assert Path(int8.program).stat().st_size < Path(fp32.program).stat().st_size / 2


def test_dynamic_int8_activations_are_the_default_need_no_calibration_and_run_everywhere(
        student_dir, images, tmp_path):
    """int8's default, --int8-activations dynamic: int8 weights, each image's activation ranges
    measured by the program itself. Nothing is calibrated (and the report says so), the contract
    records it, the golden pairs carry int8-dynamic's tolerances, the program is verified like any
    other and the Python runtime scores it like the eager student."""
    from safetensors import safe_open

    from export.golden import TOLERANCES

    out = tmp_path / "dynamic.pte"
    result = CliRunner().invoke(export_app, ["executorch", str(student_dir), "--out", str(out), "-q",
                                             "--images", str(images), "--min-srcc", "0.9"])
    assert result.exit_code == 0, result.output
    assert "dynamic activations, no calibration" in result.output
    saved = json.loads(report_path(out).read_text())
    quantization = saved["quantization"]
    assert quantization["activations"] == "dynamic" and quantization["input_activation"]["is_dynamic"] is True
    assert quantization["output_activation"] is None
    assert quantization["global_config"].endswith("is_dynamic=True, is_qat=False)")
    assert quantization["dynamic_int8_ops"] == ["convolution before a ReLU"]
    with safe_open(str(golden_path(out)), "np") as golden:
        meta = golden.metadata()
    assert (float(meta["score_tolerance"]), float(meta["gate_tolerance"])) == \
        (TOLERANCES["int8-dynamic"]["score"], TOLERANCES["int8-dynamic"]["gate"])
    assert saved["calibration_images"] == 0 and quantization["calibration"]["images"] == 0
    assert saved["nodes_outside_delegate"] == 0, saved["outside_ops"]
    contract = json.loads(json.loads(contract_path(out).read_text())["contract"])
    assert contract["quantization"]["activations"] == "dynamic"
    student = StudentIQA.from_pretrained(student_dir)
    path = sorted(images.iterdir())[0]
    with torch.no_grad():
        expected = float(student(torch.from_numpy(student.config.preprocess.load(path))[None]).score[0])
    assert Scorer.from_file(out).score(path) == pytest.approx(expected, abs=0.05)
    bad = CliRunner().invoke(export_app, ["executorch", str(student_dir), "--out", str(out), "-q",
                                          "--int8-activations", "sometimes"])
    assert bad.exit_code == 2 and "sometimes" in bad.output


@pytest.mark.slow
def test_failed_reexport_keeps_the_earlier_good_program(fp32, student_dir, images):
    out = Path(fp32.program)
    before = out.read_bytes(), contract_path(out).read_text()
    result = CliRunner().invoke(export_app, [
        "executorch", str(student_dir), "--out", str(out), "--quantize", "fp32",
        "--images", str(images), "--max-abs-diff", "0"])  # XNNPACK fp32 is never bit-exact to eager
    assert result.exit_code == 1, result.output
    assert (out.read_bytes(), contract_path(out).read_text()) == before
    Scorer.from_file(out)  # still loads: its contract still matches



@pytest.mark.parametrize("name", sorted(EXPORT_BACKENDS))
def test_backend_declares_what_its_toolchain_builds(name):
    """The contract records each backend's declared recipe; it must be what the quantizer and
    partitioner named by import path really are (a toolchain upgrade that changes them fails here)."""
    from export import _toolchain as tc

    backend = get_backend(name)
    assert type(tc._resolve(backend.partitioner)()).__name__ == backend.partitioner.rsplit(".", 1)[-1]
    if backend.int8 is None:
        assert backend.modes == ("fp32",)
        return
    assert backend.modes == ("int8", "fp32")
    for activations in INT8_ACTIVATIONS:
        recipe = tc.int8_recipe(backend, activations)
        assert recipe.activations == activations
        built = tc._int8_quantizer(recipe).global_config
        assert built.is_qat == recipe.is_qat
        for role in ("input_activation", "output_activation", "weight", "bias"):
            spec, declared = getattr(built, role), getattr(recipe, role)
            if declared is None:
                assert spec is None, (activations, role)
                continue
            observer = spec.observer_or_fake_quant_ctr()  # an instance: its class is the observer
            assert {"dtype": str(spec.dtype).replace("torch.", ""), "quant_min": spec.quant_min,
                    "quant_max": spec.quant_max, "qscheme": str(spec.qscheme).replace("torch.", ""),
                    "ch_axis": spec.ch_axis, "is_dynamic": spec.is_dynamic,
                    "observer": type(observer).__name__} == dataclasses.asdict(declared), (activations, role)
    with pytest.raises(ValueError, match="int8 activations must be one of"):
        tc.int8_recipe(backend, "per-image")
    with pytest.raises(ValueError, match=r"backend 'vulkan' is not supported; only 'xnnpack' "):
        get_backend("vulkan")

def test_bad_arguments_are_clear(student_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_app, ["executorch", str(student_dir), "--out", str(tmp_path / "m.pte"),
                                        "--backend", "vulkan"])
    assert result.exit_code == 2 and "'vulkan' is not" in result.stderr, result.output
    with pytest.raises(ExportError, match="not supported; only 'xnnpack'.*no Vulkan or CUDA backend"):
        export_executorch(student_dir, tmp_path / "m.pte", backend="vulkan")
    help_text = runner.invoke(export_app, ["executorch", "--help"]).stdout
    assert "int8|fp32" in help_text and "<xnnpack>" in help_text
    assert [m.value for m in Quantize] == list(QUANTIZE_MODES)
    assert [b.value for b in Backend] == list(SUPPORTED_BACKENDS)
    result = runner.invoke(export_app, ["executorch", str(student_dir), "--out", str(tmp_path / "m.pte")])
    assert result.exit_code == 2 and "--images" in result.stderr
    with pytest.raises(ExportError, match="must end in .pte"):
        export_executorch(student_dir, tmp_path / "m.bin")


def test_golden_file_bytes_are_reproducible(fp32, images, tmp_path):
    """Writing the golden pairs again gives the same bytes (the safetensors writer emits its
    metadata in hash order; write_golden sorts the header) and the same contents."""
    from safetensors import safe_open

    from export.golden import write_golden

    program = tmp_path / "model.pte"
    shutil.copy(fp32.program, program)
    shutil.copy(contract_path(Path(fp32.program)), contract_path(program))
    first = write_golden(program, sorted(images.iterdir())).read_bytes()
    second = write_golden(program, sorted(images.iterdir())).read_bytes()
    assert first == second
    with safe_open(str(program.with_name("model.golden.safetensors")), "np") as golden:
        meta = golden.metadata()
        assert meta["pairs"] == "3" and meta["program_sha256"] == fp32.program_sha256
        assert golden.get_tensor("pair0.rgb").dtype == np.uint8  # the offsets survived the rewrite


def test_files_are_readable_by_others_under_umask_022(fp32):
    for path in (fp32.program, fp32.contract, fp32.report):
        assert Path(path).stat().st_mode & 0o777 == 0o644, path


def test_mismatched_student_config_is_one_line(student_dir, images, tmp_path):
    broken = tmp_path / "student"
    shutil.copytree(student_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["config"]["expert_width"] = config["config"]["expert_width"] * 2
    (broken / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(export_app, ["executorch", str(broken), "--out",
                                             str(tmp_path / "m.pte"), "--images", str(images),
                                             "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0] and "Traceback" not in result.output, lines
    # The weights carry the config they were trained with, so the edit is caught by name before
    # any tensor is loaded.
    assert "expert_width changed after training" in lines[0], lines


@pytest.mark.slow
def test_verify_images_are_named_and_a_killed_exports_staging_is_removed(
        student_dir, images, realistic_images, tmp_path):
    other = realistic_images(tmp_path / "other", count=6)
    out = tmp_path / "out" / "model.pte"
    stale = out.parent / ".model.staging-999999999-abc"  # no such process: a killed export
    (stale / "sub").mkdir(parents=True)
    lines: list[str] = []
    report = export_executorch(student_dir, out, quantize="fp32", images=images,
                               verify_images=other, progress=lines.append)
    assert report.verification.num_images == 6 and str(other) in report.verification.image_set
    assert "--verify-images" in report.verification.image_set
    saved = json.loads(report_path(out).read_text())
    assert saved["verification"]["image_set"] == report.verification.image_set
    assert report.quantization == {"mode": "fp32"} and report.calibration_images == 0
    assert any("verifying" in line and str(other) in line for line in lines), lines
    assert not stale.exists() and sorted(p.name for p in out.parent.iterdir()) == [
        "model.golden.safetensors", "model.json", "model.pte", "model.report.json"]


def test_run_folder_is_read_through_the_shared_layout(student_dir, images, tmp_path):
    """A folder laid out by student.layout (as `agiqa-distill run` writes it) is an export source:
    student/best, calibration on its train split, verification on its test split."""
    from export.source import SourceError, resolve_source
    from student.layout import RunLayout, write_data_index

    run = RunLayout(tmp_path / "run")
    shutil.copytree(student_dir, run.student())
    found = sorted(images.iterdir())
    write_data_index(run.data_index, {"train": [str(p) for p in found[:4]], "val": [],
                                      "test": [str(p) for p in found[4:6]]}, [])
    source = resolve_source(run.root)
    assert source.student_dir == run.student() and run.is_run()
    assert list(source.calibration_images) == found[:4] and list(source.verification_images) == found[4:6]
    assert "unlabeled" not in source.images_from
    # With an unlabeled pool, calibration alternates train and pool images, each seeded-shuffled:
    # any first N hold both halves, spread over each; the test split still verifies.
    pool = [tmp_path / f"pool{i}.png" for i in range(7)]
    write_data_index(run.data_index, {"train": [str(p) for p in found[:4]], "val": [],
                                      "test": [str(p) for p in found[4:6]]}, [str(p) for p in pool])
    source = resolve_source(run.root)
    mixed = list(source.calibration_images)
    assert sorted(mixed) == sorted(found[:4] + pool) and list(source.verification_images) == found[4:6]
    assert [p in found[:4] for p in mixed[:8]] == [True, False] * 4
    assert mixed[1::2][:4] != pool[:4] and "unlabeled pool" in source.images_from
    run.data_index.write_text('{"splits": [1, 2]}')
    with pytest.raises(SourceError, match="data_index.json: not a data index") as info:
        resolve_source(run.root)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_contrast_stem_student_exports_whole_to_the_delegate_and_stays_fp32(workdir, images):
    """The demo students read local contrast normalisation (student.model.LuminanceMSCNStem): every op
    of it is taken by XNNPACK, and int8 quantizes only the backbone, never the stem's moments."""
    torch.manual_seed(0)
    student = create_student("tiny", contrast_stem=True).eval()
    folder = student.save_pretrained(workdir / "contrast")
    fp32 = export_executorch(folder, workdir / "contrast.pte", quantize="fp32", images=images)
    assert fp32.passed and fp32.nodes_outside_delegate == 0, fp32.outside_ops
    assert fp32.verification.max_abs_diff <= 1e-4
    # A random tiny student ranks 8 images with near ties; the demo student's int8 program keeps
    # SRCC 0.998 against eager on 200 held-out images (bench/edge_latency.py).
    int8 = export_executorch(folder, workdir / "contrast.int8.pte", quantize="int8", images=images, min_srcc=0.9)
    assert int8.passed and int8.nodes_outside_delegate == 0, int8.outside_ops
    assert "'student.backbone'" in json.loads(report_path(int8.program).read_text())["quantization"]["scope"]
    path = sorted(images.iterdir())[0]
    with torch.no_grad():
        expected = float(student(torch.from_numpy(student.config.preprocess.load(path))[None]).score[0])
    assert Scorer.from_file(fp32.program).score(path) == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_calibration_images_are_named_and_int8_fidelity_is_shown_on_both_sets(
        student_dir, images, realistic_images, tmp_path):
    """--calibration-images replaces the calibration set; the report names it and shows the int8
    program's fidelity (SRCC vs eager fp32, distinct scores) on it and on the verification set."""
    other = realistic_images(tmp_path / "calibrate", count=6)
    out = tmp_path / "out" / "model.pte"
    result = CliRunner().invoke(export_app, ["executorch", str(student_dir), "--out", str(out), "-q",
                                             "--calibration-images", str(other), "--verify-images",
                                             str(images), "--min-srcc", "-1", "--int8-activations", "static"])
    assert result.exit_code == 0, result.output
    saved = json.loads(report_path(out).read_text())
    assert saved["calibration_images"] == 6 and str(other) in saved["images_from"]
    assert "--calibration-images" in saved["quantization"]["calibration"]["source"]
    assert saved["verification"]["num_images"] == 16 and "0 also used" in saved["verification"]["image_set"]
    fidelity = saved["calibration_fidelity"]
    assert fidelity["num_images"] == 6 and fidelity["image_set"] == saved["images_from"]
    assert 1 <= fidelity["distinct_scores"] <= fidelity["reference_distinct_scores"] <= 6
    assert 1 <= saved["verification"]["distinct_scores"] <= saved["verification"]["reference_distinct_scores"] <= 16
    assert "distinct scores" in result.output and f"calibrated on 6 images from {other}" in result.output
    # A bare student folder needs photos to verify on besides the calibration set.
    lines = CliRunner().invoke(export_app, ["executorch", str(student_dir), "--out", str(out), "-q",
                                            "--calibration-images", str(other)]).output.strip().splitlines()
    assert len(lines) == 1 and "--verify-images" in lines[0], lines


def test_int8_global_pool_gets_its_own_parameters():
    """A global average pool stays fp32, so its output is quantized (for the next layer) with
    parameters observed on pooled values: a finer step than the feature map's. The quantizer's
    default gives the pool its input's parameters, which left a student's pooled features a few
    levels and real photos tied scores."""
    from export import _toolchain as tc
    from export.backends import FP32_OPS, get_backend

    torch.manual_seed(0)
    toy = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    example = torch.randn(1, 3, 16, 16)
    module, _ = tc.quantize_int8(toy, example, iter([torch.randn(1, 3, 16, 16) for _ in range(8)]))
    pools = [n for n in module.graph.nodes if n.op == "call_function" and "adaptive_avg_pool2d" in str(n.target)]
    assert len(pools) == 1
    before = pools[0].args[0]  # the feature map's int8 parameters: the nearest dequantize upstream
    while "dequantize" not in str(before.target):
        assert "quantize" not in str(before.target) and before.op == "call_function", before
        before = before.args[0]
    after = pools[0]  # the pooled values' parameters: the nearest quantize downstream
    while "quantize_per_tensor" not in str(after.target):
        assert len(after.users) == 1 and "dequantize" not in str(after.target), after
        after = next(iter(after.users))
    assert after.args[1] < 0.5 * before.args[1], (after.args[1], before.args[1])  # its own, finer step
    assert "global average pool" in FP32_OPS
    assert get_backend("xnnpack").int8.record("student.backbone")["fp32_ops"] == list(FP32_OPS)


def test_head_linears_get_int8_weights_and_dynamic_activations_with_either_recipe(student_dir):
    """The stream heads' linears (``EdgeStudent.INT8_DYNAMIC_SCOPE``) get int8 weights and an
    activation quantized per call, with fp32 outputs, whether the backbone's activations are
    static or dynamic; the experts, the gate and the score head keep fp32 weights."""
    from export import _toolchain as tc
    from export.build import load_student

    wrapper = EdgeStudent(load_student(student_dir)).eval()
    example = torch.rand(1, 3, *wrapper.student.config.preprocess.input_size)
    for activations in ("static", "dynamic"):
        module, _ = tc.quantize_int8(wrapper, example, iter([example] * 4), only_under=EdgeStudent.INT8_SCOPE,
                                     activations=activations, dynamic_under=EdgeStudent.INT8_DYNAMIC_SCOPE)
        linears: dict[str, tuple[bool, bool]] = {}
        for node in module.graph.nodes:
            if node.op == "call_function" and "linear" in str(node.target):
                path = list((node.meta.get("nn_module_stack") or {}).values())[-1][0]
                weight_int8 = "dequantize" in str(getattr(node.args[1], "target", ""))
                # a dynamic activation: dequantize(quantize(x, *choose_qparams(x))), a few nodes up
                upstream, frontier = set(), [node.args[0]]
                for _ in range(4):
                    frontier = [a for n in frontier if isinstance(n, torch.fx.Node) for a in n.args
                                if isinstance(a, torch.fx.Node)]
                    upstream |= {str(n.target) for n in frontier}
                linears[path] = (weight_int8, any("choose_qparams" in target for target in upstream))
        heads = {path: flags for path, flags in linears.items() if path.startswith(EdgeStudent.INT8_DYNAMIC_SCOPE)}
        others = {path: flags for path, flags in linears.items() if path not in heads}
        assert len(heads) == 2 and all(flags == (True, True) for flags in heads.values()), (activations, linears)
        assert others and not any(weight for weight, _ in others.values()), (activations, linears)


def test_dynamic_recipe_gives_int8_weights_to_every_dense_conv_even_before_a_relu(student_dir):
    """Under dynamic activations every non-grouped backbone convolution gets int8 weights, also
    those a ReLU consumes (the squeeze-excitation reductions, which the quantizer leaves to its
    static-only conv+relu pattern); depthwise convolutions stay fp32, as the quantizer wants."""
    from export import _toolchain as tc
    from export.build import load_student

    wrapper = EdgeStudent(load_student(student_dir)).eval()
    example = torch.rand(1, 3, *wrapper.student.config.preprocess.input_size)
    module, _ = tc.quantize_int8(wrapper, example, iter([]), only_under=EdgeStudent.INT8_SCOPE,
                                 activations="dynamic", dynamic_under=EdgeStudent.INT8_DYNAMIC_SCOPE)
    dense, grouped = {}, {}
    for node in module.graph.nodes:
        if node.op != "call_function" or "conv2d" not in str(node.target):
            continue
        path = list((node.meta.get("nn_module_stack") or {}).values())[-1][0]
        if not path.startswith(EdgeStudent.INT8_SCOPE + "."):
            continue
        before_relu = len(node.users) == 1 and "relu" in str(next(iter(node.users)).target)
        groups = node.args[6] if len(node.args) > 6 else 1
        weight_int8 = "dequantize" in str(getattr(node.args[1], "target", ""))
        (grouped if groups != 1 else dense)[path] = (weight_int8, before_relu)
    assert any(before_relu for _, before_relu in dense.values()), dense  # the case this is about
    assert all(weight_int8 for weight_int8, _ in dense.values()), dense
    assert grouped and not any(weight_int8 for weight_int8, _ in grouped.values()), grouped


def test_keep_fp32_leaves_just_the_named_modules_unquantized(student_dir, images, tmp_path):
    """``quantize_int8(keep_fp32=...)``: the named backbone modules' convs keep fp32 weights (no
    dequantize feeds them), every other backbone conv is quantized; a name that is no module of
    the int8 scope is refused in one line before any calibration."""
    from export import _toolchain as tc
    from export.build import load_student

    wrapper = EdgeStudent(load_student(student_dir)).eval()
    example = torch.rand(1, 3, *wrapper.student.config.preprocess.input_size)
    convs = [name for name, m in wrapper.named_modules()
             if isinstance(m, torch.nn.Conv2d) and name.startswith(EdgeStudent.INT8_SCOPE + ".")]
    assert len(convs) >= 2, convs
    kept = convs[0]

    def quantized_convs(keep: tuple[str, ...]) -> dict[str, bool]:
        module, _ = tc.quantize_int8(wrapper, example, iter([example] * 4),
                                     only_under=EdgeStudent.INT8_SCOPE, keep_fp32=keep)
        found: dict[str, bool] = {}
        for node in module.graph.nodes:
            if node.op == "call_function" and "conv2d" in str(node.target):
                stack = node.meta.get("nn_module_stack") or {}
                path = list(stack.values())[-1][0] if stack else ""
                weight = node.args[1]
                found[path] = "dequantize" in str(getattr(weight, "target", ""))
        return found

    everything = quantized_convs(())
    assert all(everything[name] for name in convs), everything
    one_kept = quantized_convs((kept,))
    assert not one_kept[kept] and all(one_kept[name] for name in convs if name != kept), one_kept
    result = CliRunner().invoke(export_app, ["executorch", str(student_dir), "--out", str(tmp_path / "m.pte"),
                                             "--images", str(images), "--keep-fp32", kept + "x", "-q"])
    assert result.exit_code == 2 and f"--keep-fp32 {kept}x: not a module" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ExportError, match="int8 exports only"):
        export_executorch(student_dir, tmp_path / "m.pte", quantize="fp32", images=images, keep_fp32=(kept,))
