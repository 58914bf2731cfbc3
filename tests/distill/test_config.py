"""Run config: typed values at load and override time; checkpoints and their commit point
(the CLI kill/resume test is tests/distill/test_kill_resume.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from distill.config import ConfigError, RunConfig, load_config
from tests import REPO


def test_numbers_written_as_strings_become_numbers(tmp_path: Path) -> None:
    # YAML reads 1e-05 (no dot) as a string; a run's saved config.json holds such values.
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  min_lr: 1e-05\n  epochs: '7'\n  amp: 'false'\n")
    cfg = load_config(path, ["train.weight_decay=5e-4", "data.root=2024"])
    assert (cfg.train.lr, cfg.train.min_lr, cfg.train.epochs, cfg.train.amp) == (1e-3, 1e-5, 7, False)
    assert cfg.train.weight_decay == 5e-4 and cfg.data.root == "2024"
    assert isinstance(cfg.train.lr, float) and isinstance(cfg.train.epochs, int)
    # A round trip through the run folder's config.json gives the same config.
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(cfg.to_dict()))
    assert load_config(saved) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.epochs=ten", "train.epochs='ten': expected an integer"),
    ("train.batch_size=-4", "train.batch_size=-4: expected an integer >= 1"),
    ("train.lr=fast", "train.lr='fast': expected a number"),
    ("train.lr=0", "train.lr=0.0: expected a value > 0"),
    ("teacher.train.maniqa_lr=0", "teacher.train.maniqa_lr=0.0: expected a value > 0"),
    ("teacher.train.maniqa_epochs=-1", "teacher.train.maniqa_epochs=-1: expected a value >= 0"),
    ("train.amp=maybe", "train.amp='maybe': expected true or false"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5: expected a fraction in [0, 1)"),
    ("data.root=[a]", "data.root=['a']: expected a string"),
    ("data.kind=imagenet", "data.kind='imagenet': expected one of demo"),
    ("student.variant=huge", "student.variant='huge': expected one of"),
    ("student.overrides={input_size: [96, x]}", "student.overrides.input_size[1]='x': expected an integer"),
    ("student.overrides={checkpoint_path: w.pth}", "unknown student config field(s) ['checkpoint_path']"),
    ("train.min_lr=0.5", "train.min_lr=0.5 is above train.lr"),
])
def test_bad_values_are_one_line_errors_naming_key_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_bad_yaml_file_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  test_fraction: 0.5\n  val_fraction: 0.5\n")
    with pytest.raises(ConfigError, match="must leave images to train on"):
        load_config(path)
    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(path)
    bad_json = tmp_path / "config.json"
    bad_json.write_text('{"train": {"lr": ')
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        load_config(bad_json)


def test_resume_of_a_foreign_checkpoint_is_one_line(tmp_path: Path) -> None:
    from distill.train import TrainState, load_checkpoint, save_checkpoint
    from student.model import create_student

    model = create_student("tiny")
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, model, optimizer, TrainState(step=3))
    assert load_checkpoint(ckpt, model, optimizer).step == 3
    tensors = ckpt / json.loads((ckpt / "state.json").read_text())["tensors"]
    # A pickle where safetensors belongs, with a state.json made to match it.
    torch.save({"x": torch.zeros(2)}, tensors)
    meta = json.loads((ckpt / "state.json").read_text())
    import hashlib

    meta["sha256"] = hashlib.sha256(tensors.read_bytes()).hexdigest()
    (ckpt / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{tensors.name}: not a safetensors file") as info:
        load_checkpoint(ckpt, model, optimizer)
    assert "\n" not in str(info.value)
    # Safetensors of another model.
    payload = save({"model.other": torch.zeros(2)})
    tensors.write_bytes(payload)
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (ckpt / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit this run's student"):
        load_checkpoint(ckpt, model, optimizer)
    # A commit point that names a file outside its folder.
    (ckpt / "state.json").write_text(json.dumps({**meta, "tensors": "../model.safetensors"}))
    with pytest.raises(ValueError, match="'tensors' must name a file in the checkpoint folder"):
        load_checkpoint(ckpt, model, optimizer)
    (ckpt / "state.json").write_text("{")
    with pytest.raises(ValueError, match="state.json: not a checkpoint written by agiqa-distill"):
        load_checkpoint(ckpt, model, optimizer)


def test_checkpoint_commit_point_always_names_a_complete_state(tmp_path: Path) -> None:
    """The new tensors never replace the committed ones before state.json names them: stopped
    between the two files, the folder still loads as the previous state; after the commit point,
    only the new file is left. A checkpoint written before state.json named its file still loads."""
    from distill import train as train_module
    from distill.train import TrainState, load_checkpoint, save_checkpoint
    from student.model import create_student

    model = create_student("tiny")
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, model, optimizer, TrainState(step=3))
    first = json.loads((ckpt / "state.json").read_text())["tensors"]
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    class Stop(Exception):
        pass

    def stop_before_commit(path, obj):  # type: ignore[no-untyped-def]
        raise Stop  # the tensors of step 4 are on disk; the commit point is not

    real = train_module.atomic_write_json
    train_module.atomic_write_json = stop_before_commit
    try:
        with pytest.raises(Stop):
            save_checkpoint(ckpt, model, optimizer, TrainState(step=4))
    finally:
        train_module.atomic_write_json = real
    assert len(list(ckpt.glob("state-*.safetensors"))) == 2
    fresh = create_student("tiny")
    assert load_checkpoint(ckpt, fresh, torch.optim.AdamW(fresh.parameters())).step == 3
    save_checkpoint(ckpt, model, optimizer, TrainState(step=4))
    second = json.loads((ckpt / "state.json").read_text())["tensors"]
    assert second != first and sorted(p.name for p in ckpt.iterdir()) == sorted(["state.json", second])
    assert load_checkpoint(ckpt, fresh, torch.optim.AdamW(fresh.parameters())).step == 4
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    # The layout of earlier releases: fixed state.safetensors, no "tensors" entry.
    meta = json.loads((ckpt / "state.json").read_text())
    (ckpt / second).rename(ckpt / "state.safetensors")
    del meta["tensors"]
    (ckpt / "state.json").write_text(json.dumps(meta))
    assert load_checkpoint(ckpt, fresh, torch.optim.AdamW(fresh.parameters())).step == 4


def test_cli_resume_of_a_damaged_checkpoint_exits_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(RunConfig(out_dir=str(run_dir)).to_dict()))
    (run_dir / "checkpoint" / "state.json").write_text("not json")
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "state.json: not a checkpoint" in result.output and "Traceback" not in result.output


def test_shipped_configs_load_cite_real_sections_and_need_no_remote_code() -> None:
    """configs/*.yaml are valid, the README sections they cite exist, and none switches on
    remote code: the paper's mPLUG-Owl2 runs on our own port (teacher/semantic.py), flag-free."""
    import re

    readme_sections = set(re.findall(r"^## (.+)$", (REPO / "README.md").read_text(), flags=re.M))
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 2
    for path in configs:
        assert load_config(path).teacher.trust_remote_code is False, path.name
        cited = set(re.findall(r'README "([^"]+)"', path.read_text()))
        assert cited <= readme_sections, (path.name, cited - readme_sections)
    teacher = json.loads((REPO / "configs" / "teacher_mplug_owl2.json").read_text())
    assert "trust_remote_code" not in teacher["semantic"]
