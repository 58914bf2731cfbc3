"""MA-AGIQA fusion (official checkpoint layout and forward) and the full tiny teacher."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from teacher.model import (
    MAAGIQA,
    CheckpointError,
    FusionConfig,
    TeacherOutput,
    load_official_checkpoint,
    ours_to_official,
)

SEM = 24  # tiny semantic width for these tests


def _official_state(model: MAAGIQA) -> dict[str, torch.Tensor]:
    """Our weights under the official names, plus the official code's never-used layers."""
    state = dict(ours_to_official(model.state_dict()))
    g = torch.Generator().manual_seed(1)
    unused = {  # shapes as built by the official MA_AGIQA.__init__ (4096 -> SEM here)
        "fc39_784.0.weight": (392, 39), "fc39_784.3.weight": (784, 392),
        "encoder_layer.linear1.weight": (2048, 784), "fc_output.0.weight": (392, 784),
        "fc4096_784_a.weight": (784, SEM), "fc4096_784_b.bias": (784,),
        "quality.0.weight": (128, 784 * 3), "fc784x3_1.1.weight": (1, 128),
        "fc4096_1024_a.weight": (1024, SEM), "fc4096_1024_b.weight": (1024, SEM),
    }
    state.update({k: torch.randn(*shape, generator=g) for k, shape in unused.items()})
    return state


def _reference_forward(state: dict[str, torch.Tensor], quality: torch.Tensor,
                       content: torch.Tensor, coherence: torch.Tensor) -> torch.Tensor:
    """The published fusion (models/MA_AGIQA.py forward, eval mode), written from the paper's code."""
    lin = lambda x, name: x @ state[f"{name}.weight"].T + state[f"{name}.bias"]  # noqa: E731
    key = lin(quality, "fc784_784")
    query1 = torch.relu(lin(content, "fc4096_784_a2.0"))
    query2 = torch.relu(lin(coherence, "fc4096_784_b2.0"))
    gating = lin(torch.cat([query1, query2, key], dim=1), "gating")  # no softmax
    mixed = torch.bmm(gating.unsqueeze(1), torch.stack([query1, query2, key], dim=1)).squeeze(1)
    return lin(mixed, "output_fc").squeeze(-1)


def test_official_checkpoint_loads_and_matches_published_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = MAAGIQA("tiny", FusionConfig(semantic_dim=SEM)).eval()
    official = _official_state(source)
    path = tmp_path / "AGIQA_3k.pt"
    torch.save(official, path)  # what the official main.py writes: a plain state dict

    torch.manual_seed(123)
    model = MAAGIQA("tiny", FusionConfig(semantic_dim=SEM)).eval()
    skipped = load_official_checkpoint(model, path)
    assert sorted(skipped) == sorted(k for k in official if k.split(".")[0] in {
        "fc39_784", "encoder_layer", "fc_output", "fc4096_784_a", "fc4096_784_b", "quality",
        "fc784x3_1", "fc4096_1024_a", "fc4096_1024_b"})
    images = torch.rand(2, 3, 224, 224) * 2 - 1
    semantic = torch.randn(2, 2, SEM)
    with torch.no_grad():
        out = model(images, semantic)
        expected = _reference_forward(official, out.quality_features, semantic[:, 0], semantic[:, 1])
        assert torch.allclose(out.score, expected, atol=1e-5)
        assert torch.allclose(out.score, source(images, semantic).score, atol=1e-6)
    assert out.gate_weights.shape == (2, 3) and out.quality_features.shape == (2, 784)


def test_checkpoint_mismatches_fail_clearly(tmp_path: Path) -> None:
    model = MAAGIQA("tiny", FusionConfig(semantic_dim=SEM))
    state = _official_state(model)
    bad = dict(state, extra_layer_weight=torch.zeros(1))
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_official_checkpoint(model, tmp_path / "extra.pt")
    missing = {k: v for k, v in state.items() if not k.startswith("gating.")}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing.*gate"):
        load_official_checkpoint(model, tmp_path / "missing.pt")
    wide = MAAGIQA("tiny", FusionConfig(semantic_dim=SEM * 2))
    torch.save(state, tmp_path / "narrow.pt")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_official_checkpoint(wide, tmp_path / "narrow.pt")


def test_gate_softmax_option() -> None:
    model = MAAGIQA("tiny", FusionConfig(semantic_dim=SEM, gate_softmax=True)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224), torch.randn(1, 2, SEM))
    assert torch.allclose(out.gate_weights.sum(-1), torch.ones(1))


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((16 + 4 * i, 24, 3)) * 255).astype(np.uint8)  # any size: resized to 224
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_tiny_teacher_labels_from_cli_and_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.cli import app
    from teacher import labeler as labeler_module
    from teacher.cache_read import LabelCache
    from teacher.labeler import Teacher, save_tiny_teacher

    folder = _images(tmp_path / "imgs", 6)
    runner = CliRunner()
    result = runner.invoke(app, ["label", str(folder), "--tiny", "--out", str(tmp_path / "full"),
                                 "--batch-size", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["labelled"] == 6 and summary["skipped"] == 1
    full = LabelCache.open(tmp_path / "full")
    assert "broken.jpg" in dict(full.skipped)

    # Same teacher, killed after 4 images (the batch that would pass 5), then resumed.
    teacher_dir = tmp_path / "full.tiny_teacher"
    real_label = Teacher.label_prepared  # what the cache calls, on the workers' prepared inputs
    calls = {"n": 0}

    def dying_label(self, inputs):  # type: ignore[no-untyped-def]
        calls["n"] += len(inputs)
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_label(self, inputs)

    monkeypatch.setattr(labeler_module.Teacher, "label_prepared", dying_label)
    args = ["label", str(folder), "--teacher", str(teacher_dir), "--out", str(tmp_path / "resumed"),
            "--batch-size", "2", "--no-progress", "--workers", "2"]
    assert runner.invoke(app, args).exit_code == 130
    monkeypatch.setattr(labeler_module.Teacher, "label_prepared", real_label)
    assert runner.invoke(app, args).exit_code == 0
    resumed = LabelCache.open(tmp_path / "resumed")
    assert resumed.image_ids == full.image_ids
    a, b = full.tensors(), resumed.tensors()
    assert isinstance(a, TeacherOutput) and all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.semantic_vectors.dtype == torch.float16 and a.quality_features.shape[1] == 784

    # A different tiny teacher has a different fingerprint and is refused on that cache.
    other = save_tiny_teacher(tmp_path / "other", seed=1)
    result = runner.invoke(app, ["label", str(folder), "--teacher", str(other), "--out",
                                 str(tmp_path / "full"), "--no-progress"])
    assert result.exit_code == 2 and "fingerprint" in result.output.lower()
    weights = load_file(str(teacher_dir / "ma_agiqa.safetensors"))
    assert "gating.weight" in weights and "fc784_784.weight" in weights  # official names on disk


def test_train_teacher_official_recipe_writes_a_loadable_teacher(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    from distill.cli import app
    from teacher.labeler import Teacher

    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["path,mos"]
    for i in range(21):  # 13 train, 3 val (train-teacher's minimum), 5 test
        value = 20 + 10 * i
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(folder / f"g{i:02d}.png")
        rows.append(f"g{i:02d}.png,{value / 60:.3f}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    teacher_dir = tiny_teacher_dir
    runner = CliRunner()
    assert runner.invoke(app, ["label", str(folder / "labels.csv"), "--teacher", str(teacher_dir),
                               "--out", str(tmp_path / "cache"), "--no-progress"]).exit_code == 0
    result = runner.invoke(app, ["train-teacher", str(folder / "labels.csv"), "--teacher", str(teacher_dir),
                                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "trained"),
                                 "--epochs", "2", "--batch-size", "4", "--lr", "1e-4", "--no-progress"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output.strip().splitlines()[-1])
    assert best["epoch"] in (1, 2) and np.isfinite(best["plcc"])
    trained = Teacher.from_pretrained(tmp_path / "trained", device="cpu")
    before = load_file(str(teacher_dir / "ma_agiqa.safetensors"))
    after = load_file(str(tmp_path / "trained" / "ma_agiqa.safetensors"))
    assert set(before) == set(after)
    assert not torch.equal(before["output_fc.weight"], after["output_fc.weight"])
    assert trained.fingerprint() != Teacher.from_pretrained(teacher_dir, device="cpu").fingerprint()


def test_teacher_config_errors_name_the_file(tmp_path: Path) -> None:
    from distill.cli import app

    runner = CliRunner()
    folder = _images(tmp_path / "imgs", 2)
    result = runner.invoke(app, ["label", str(folder), "--teacher", str(tmp_path / "none"),
                                 "--out", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 2 and "teacher.json: missing" in result.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "teacher.json").write_text("{not json")
    result = runner.invoke(app, ["label", str(folder), "--teacher", str(tmp_path / "bad"),
                                 "--out", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 2 and "not a valid teacher config" in result.output
    assert "Traceback" not in result.output
    # "maniqa" names a preset; anything else (a typo, a whole config) is one line listing the presets.
    from teacher.labeler import save_tiny_teacher

    valid = json.loads((save_tiny_teacher(tmp_path / "tiny") / "teacher.json").read_text())
    for maniqa in ("huge", {"stem": "contrast"}):
        (tmp_path / "bad" / "teacher.json").write_text(json.dumps({**valid, "maniqa": maniqa}))
        result = runner.invoke(app, ["label", str(folder), "--teacher", str(tmp_path / "bad"),
                                     "--out", str(tmp_path / "c"), "--no-progress"])
        assert result.exit_code == 2 and "valid names: base, tiny, demo" in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / "c").exists()


def _remote_code_teacher(folder: Path) -> Path:
    """A teacher folder whose teacher.json asks for remote code and whose MLLM needs it."""
    (folder / "mllm").mkdir(parents=True)
    (folder / "mllm" / "config.json").write_text(json.dumps({
        "model_type": "my_remote_mllm", "auto_map": {"AutoModelForCausalLM": "modeling.Model"}}))
    (folder / "teacher.json").write_text(json.dumps({
        "maniqa": "tiny", "semantic": {"model_path": "mllm", "trust_remote_code": True}}))
    return folder


def test_a_teacher_folder_cannot_grant_itself_remote_code(tmp_path: Path) -> None:
    from distill.cli import app
    from teacher.labeler import Teacher, read_teacher_config, teacher_fingerprint
    from teacher.semantic import RemoteCodeWarning

    teacher_dir = _remote_code_teacher(tmp_path / "downloaded")
    with pytest.raises(ValueError, match="--trust-remote-code"):
        Teacher.from_pretrained(teacher_dir, device="cpu")
    folder = _images(tmp_path / "imgs", 2)
    result = CliRunner().invoke(app, ["label", str(folder), "--teacher", str(teacher_dir),
                                      "--out", str(tmp_path / "c"), "--no-progress"])
    assert result.exit_code == 2 and "pass --trust-remote-code" in result.output
    # The caller's flag does enable it, with a warning (loading then fails: there is no code).
    with pytest.warns(RemoteCodeWarning, match="running the Python code shipped in"):
        with pytest.raises(ValueError, match=re.escape(str(teacher_dir / "mllm"))) as info:
            Teacher.from_pretrained(teacher_dir, device="cpu", trust_remote_code=True)
    assert "--trust-remote-code" not in str(info.value)  # past the gate: transformers found no code
    # Trust does not change labels, so it is no part of the cache fingerprint.
    config = read_teacher_config(teacher_dir)
    from dataclasses import replace

    untrusted = replace(config, semantic=replace(config.semantic, trust_remote_code=False))
    assert teacher_fingerprint(config, teacher_dir) == teacher_fingerprint(untrusted, teacher_dir)


def test_fingerprint_depends_on_content_not_folder_names(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    import shutil

    from distill.data import DatasetSpec, load_records
    from teacher.cache import build_label_cache
    from teacher.cache_read import LabelCache
    from teacher.labeler import Teacher, read_teacher_config, save_tiny_teacher, teacher_fingerprint

    first = tiny_teacher_dir
    moved = tmp_path / "elsewhere" / "renamed_teacher"
    shutil.copytree(first, moved)
    (moved / "mllm").rename(moved / "llava_tiny")
    (moved / "ma_agiqa.safetensors").rename(moved / "AGIQA_3k.safetensors")
    config = json.loads((moved / "teacher.json").read_text())
    config["weights"] = "AGIQA_3k.safetensors"
    config["semantic"]["model_path"] = str(moved / "llava_tiny")  # absolute this time
    (moved / "teacher.json").write_text(json.dumps(config))
    fp_first = teacher_fingerprint(read_teacher_config(first), first)
    assert teacher_fingerprint(read_teacher_config(moved), moved) == fp_first
    # ... so a cache built with one is opened, not relabelled, with the other.
    records = load_records(DatasetSpec(kind="folder", root=str(_images(tmp_path / "imgs", 3))))
    build_label_cache(records, Teacher.from_pretrained(first, device="cpu"), tmp_path / "cache", progress=False)
    moved_fp = Teacher.from_pretrained(moved, device="cpu").fingerprint()
    assert len(LabelCache.open(tmp_path / "cache", fingerprint=moved_fp)) == 3
    # Content still counts: other weights, another fingerprint.
    other = save_tiny_teacher(tmp_path / "teacher_b", seed=1)
    assert teacher_fingerprint(read_teacher_config(other), other) != fp_first
