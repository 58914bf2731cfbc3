"""The distiller: config, metrics, compression, losses, and a tiny end-to-end run with resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.config import ConfigError, LossConfig, load_config
from distill.losses import DistillationLoss, pairwise_rank_loss
from distill.metrics import iqa_metrics
from student.compression import LinearCompression, load_compressions, save_compressions
from student.model import StudentIQA, create_student


def test_config_defaults_file_and_overrides(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.is_demo and cfg.student.variant == "mnv3s"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nstudent:\n  overrides: {input_size: [96, 96]}\n")
    cfg = load_config(path, ["train.lr=0.01", "data.kind=folder", "student.variant=tiny"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.kind) == (3, 0.01, "folder")
    assert cfg.student.overrides == {"input_size": [96, 96]}
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_metrics_against_known_values() -> None:
    x = np.linspace(0, 1, 50)
    m = iqa_metrics(x, 3 / (1 + np.exp(-(x - 0.5) * 8)) + 1)  # monotone, non-linear
    assert m["srcc"] == pytest.approx(1.0) and m["krcc"] == pytest.approx(1.0)
    assert m["plcc"] > 0.999 and m["rmse"] < 1e-2  # the logistic fit undoes the non-linearity
    assert iqa_metrics(x, -x)["srcc"] == pytest.approx(-1.0)
    assert np.isnan(iqa_metrics(np.ones(5), x[:5])["srcc"])


def test_compression_fit_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    basis = torch.randn(4, 32)
    x = torch.randn(40, 4) @ basis + 3.0  # rank 4 + offset
    comp = LinearCompression.fit(x, k=4)
    codes = comp.encode(x)
    assert codes.shape == (40, 4)
    assert torch.allclose(comp.decode(codes), x, atol=1e-4)
    assert codes.var(dim=0).mean() == pytest.approx(1.0, rel=0.05)
    assert LinearCompression.fit(x, k=100).dim == 32  # clamped to min(N - 1, D)
    save_compressions(tmp_path, {"quality": comp})
    back = load_compressions(tmp_path)["quality"]
    # The stored basis is bitwise the fitted one; encoding may differ in the last bits because
    # the matmul kernel can pick another reduction order for a reloaded tensor (AVX-512 CPUs do).
    for name in ("mean", "components", "scale"):
        assert torch.equal(getattr(back, name), getattr(comp, name)), name
    torch.testing.assert_close(back.encode(x), codes, rtol=1e-5, atol=1e-5)


def test_losses_are_zero_at_the_teacher_and_rank_orders() -> None:
    model = create_student("tiny").eval()
    out = model(torch.randn(4, 3, 64, 64))
    targets = {"score": out.score.detach(), "mos": torch.full((4,), float("nan")),
               "semantic": out.semantic.detach(), "quality": out.quality.detach(),
               "gate": out.gate_logits.detach()}
    losses = DistillationLoss(LossConfig(), score_std=1.0)(out, targets)
    for name in ("score", "mos", "semantic", "quality", "gate"):
        assert float(losses[name].detach()) == pytest.approx(0.0, abs=1e-5), name
    t = torch.tensor([0.0, 1.0, 2.0])
    assert pairwise_rank_loss(t * 10, t) < pairwise_rank_loss(-t * 10, t)


def _tiny_overrides(out: Path) -> list[str]:
    return [f"out_dir={out}", "data.demo_images=40", "student.variant=tiny", "train.epochs=3",
            "train.batch_size=8", "loss.semantic_components=8", "loss.quality_components=8",
            "data.val_fraction=0.2", "data.test_fraction=0.2"]


def test_tiny_run_end_to_end_and_resume_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill import run as run_module
    from distill import train as train_module
    from distill.run import run_distillation

    full = run_distillation(load_config(None, _tiny_overrides(tmp_path / "full")), progress=False)
    run_dir = Path(full["run_dir"])
    for name in ("config.json", "splits.json", "data_index.json", "metrics.jsonl", "metrics.json",
                 "MODEL_CARD.md", "plots/losses.png", "plots/student_vs_teacher.png",
                 "student/best/model.safetensors", "student/best/compression.safetensors",
                 "student/last/config.json", "checkpoint/state.safetensors"):
        assert (run_dir / name).is_file(), name
    assert np.isfinite(full["test"]["vs_teacher"]["srcc"])
    split_paths = json.loads((run_dir / "data_index.json").read_text())["splits"]
    assert all(Path(p).is_file() for p in split_paths["test"])

    # Interrupt the same run after step 4 (mid epoch 2), then resume it.
    real_get_lr = train_module.get_lr

    def interrupting_get_lr(step: int, total: int, cfg):  # type: ignore[no-untyped-def]
        if step == 4:
            raise KeyboardInterrupt
        return real_get_lr(step, total, cfg)

    cfg = load_config(None, _tiny_overrides(tmp_path / "resumed") + ["train.checkpoint_every=2"])
    monkeypatch.setattr(train_module, "get_lr", interrupting_get_lr)
    with pytest.raises(KeyboardInterrupt):
        run_distillation(cfg, progress=False)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    monkeypatch.setattr(train_module, "get_lr", real_get_lr)
    resumed = run_distillation(cfg, resume=True, progress=False)
    assert resumed["test"] == full["test"]
    a = StudentIQA.from_pretrained(run_dir / "student" / "last").state_dict()
    b = StudentIQA.from_pretrained(tmp_path / "resumed" / "student" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
             if "loss/total" in line]
    assert steps == sorted(set(steps))  # no step logged twice after the resume
    assert run_module.DEMO_NOTICE  # the demo says it is a demo


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--set", "train.epochz=1"])
    assert result.exit_code == 2
    assert "unknown config key" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "config.json" in result.output
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert "--config" in help_text and "--resume" in help_text
