"""What the ``agiqa-distill`` commands decide lives in library functions, so Python and the
command line write the same folders: the ``--tiny`` teacher's place, train-teacher's split
and ``--resume``'s config; :func:`distill.run_distillation` returns a typed ``RunResult``."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from distill.cli import app
from distill.config import ConfigError, RunConfig, load_resume_config
from distill.run import RunResult
from tests import metrics_differences


def _mos_dataset(folder: Path, n: int = 30) -> Path:
    """``n`` flat grey images with a MOS rising with their brightness, as path,mos CSV."""
    folder.mkdir()
    rows = ["path,mos"]
    for i in range(n):
        value = 20 + 7 * i
        Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(folder / f"g{i:02d}.png")
        rows.append(f"g{i:02d}.png,{value / 60:.3f}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_train_teacher_from_python_writes_the_folder_the_cli_writes(tmp_path: Path) -> None:
    from distill.data import dataset_spec_for, load_records, load_splits
    from distill.teacher_train import TeacherTrainConfig, teacher_splits, train_teacher
    from teacher.labeler import tiny_teacher_for

    csv = _mos_dataset(tmp_path / "data")
    runner = CliRunner()
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["label", str(csv), "--tiny", "--out", str(cache), "--no-progress"])
    assert result.exit_code == 0, result.output
    # The CLI's --tiny teacher is where the library function puts it, and is reused, not rewritten.
    teacher_dir = tmp_path / "cache.tiny_teacher"
    written = (teacher_dir / "ma_agiqa.safetensors").stat().st_mtime_ns
    assert tiny_teacher_for(cache) == teacher_dir
    assert (teacher_dir / "ma_agiqa.safetensors").stat().st_mtime_ns == written

    result = runner.invoke(app, ["train-teacher", str(csv), "--teacher", str(teacher_dir), "--cache", str(cache),
                                 "--out", str(tmp_path / "by_cli"), "--epochs", "2", "--batch-size", "4",
                                 "--lr", "1e-4", "--split-seed", "7", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = load_records(dataset_spec_for(csv))
    train_teacher(teacher_dir, cache, records, None, tmp_path / "by_python",
                  TeacherTrainConfig(epochs=2, batch_size=4, lr=1e-4), split_seed=7, progress=False)

    by_cli, by_python = tmp_path / "by_cli", tmp_path / "by_python"
    assert sorted(p.name for p in by_cli.iterdir()) == sorted(p.name for p in by_python.iterdir()) == [
        "ma_agiqa.safetensors", "splits.json", "teacher.json", "train_metrics.json"]
    for name in ("splits.json", "teacher.json"):
        assert (by_cli / name).read_text() == (by_python / name).read_text(), name
    splits = load_splits(by_cli / "splits.json")
    assert splits == teacher_splits(records, seed=7) != teacher_splits(records)  # the seed is used
    assert {k: len(v) for k, v in splits.items()} == {"train": 21, "val": 3, "test": 6}  # 70/10/20
    assert json.loads((by_cli / "splits.json").read_text())["seed"] == 7
    # Same process, same threads: the same training, so the same weights and metrics.
    a, b = (load_file(str(d / "ma_agiqa.safetensors")) for d in (by_cli, by_python))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics_differences(json.loads((by_cli / "train_metrics.json").read_text()),
                               json.loads((by_python / "train_metrics.json").read_text())) == []
    # Splits that cannot be saved are refused before any training, and nothing is written.
    with pytest.raises(ValueError, match="splits must have exactly the keys train, val, test"):
        train_teacher(teacher_dir, cache, records, {"train": splits["train"], "validation": splits["val"]},
                      tmp_path / "refused", TeacherTrainConfig(epochs=1, batch_size=4), progress=False)
    assert not (tmp_path / "refused").exists()
    # train/val only (the Python API before splits.json held a test split): the rest is the test split.
    train_teacher(teacher_dir, cache, records, {"train": splits["train"], "val": splits["val"]},
                  tmp_path / "two", TeacherTrainConfig(epochs=1, batch_size=4), progress=False)
    saved = json.loads((tmp_path / "two" / "splits.json").read_text())["splits"]
    assert sorted(saved["test"]) == sorted(splits["test"])


def test_resume_config_is_the_saved_one_pinned_to_the_folder(tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    saved = RunConfig(out_dir=str(tmp_path / "where_it_ran")).to_dict()
    saved["train"]["epochs"] = 3
    (moved / "config.json").write_text(json.dumps(saved))
    cfg = load_resume_config(moved, ["train.lr=0.01"])
    assert (cfg.out_dir, cfg.train.epochs, cfg.train.lr) == (str(moved), 3, 0.01)
    with pytest.raises(ConfigError, match=r"config.json: missing; --resume needs a run folder"):
        load_resume_config(tmp_path / "empty")
    result = CliRunner().invoke(app, ["run", "--resume", str(moved), "--config", "x.yaml"])
    assert result.exit_code == 2 and "drop --config" in result.stderr


def test_run_result_is_typed_and_says_whether_this_process_evaluated() -> None:
    other_rank = RunResult(run_dir="runs/r1")  # what ranks other than 0 return
    assert not other_rank.evaluated and other_rank.test is None and other_rank.plots is None
    rank0 = RunResult(run_dir="runs/r1", test={"vs_teacher": {"srcc": 0.9, "n": 8}}, steps=4,
                      model_card="runs/r1/MODEL_CARD.md", plots=["runs/r1/plots/loss.png"])
    assert rank0.evaluated and not isinstance(rank0, dict)
    metrics = rank0.metrics()  # what metrics.json holds: every field but the card and the plots
    assert list(metrics) == [f.name for f in fields(RunResult)][:-2]
    assert metrics["steps"] == 4 and "model_card" not in metrics and "plots" not in metrics


@pytest.mark.slow
def test_two_stage_teacher_training_leaves_the_stage_one_maniqa_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--maniqa-epochs trains MANIQA alone first; --freeze-maniqa then trains only the fusion, so
    the saved MANIQA weights are exactly those stage 1 ended with."""
    from distill import teacher_train
    from distill.data import dataset_spec_for, load_records
    from teacher.model import official_to_ours

    csv = _mos_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["label", str(csv), "--tiny", "--out", str(cache), "--no-progress"])
    assert result.exit_code == 0, result.output
    teacher_dir = tmp_path / "cache.tiny_teacher"
    result = CliRunner().invoke(app, ["train-teacher", str(csv), "--teacher", str(teacher_dir), "--cache", str(cache),
                                      "--out", str(tmp_path / "by_cli"), "--epochs", "2", "--batch-size", "4",
                                      "--lr", "1e-3", "--maniqa-epochs", "1", "--freeze-maniqa", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "by_cli" / "train_metrics.json").read_text())
    assert len(metrics["maniqa_history"]) == 1 and len(metrics["history"]) == 2

    after_stage_one: dict[str, torch.Tensor] = {}
    stage_one = teacher_train._train_quality_branch

    def snapshot(maniqa, *args, **kwargs):  # type: ignore[no-untyped-def]
        history = stage_one(maniqa, *args, **kwargs)
        after_stage_one.update({f"maniqa.{k}": v.clone() for k, v in maniqa.state_dict().items()})
        return history

    monkeypatch.setattr(teacher_train, "_train_quality_branch", snapshot)
    records = load_records(dataset_spec_for(csv))
    for freeze in (True, False):
        out = tmp_path / f"freeze_{freeze}"
        teacher_train.train_teacher(teacher_dir, cache, records, None, out,
                                    teacher_train.TeacherTrainConfig(epochs=2, batch_size=4, lr=1e-3, maniqa_epochs=1,
                                                                     freeze_maniqa=freeze), progress=False)
        saved = official_to_ours(load_file(str(out / "ma_agiqa.safetensors")))[0]
        same = [torch.equal(saved[k], v) for k, v in after_stage_one.items() if k in saved]
        assert len(same) > 10 and all(same) == freeze, freeze  # stage 2 moves MANIQA unless it is frozen
