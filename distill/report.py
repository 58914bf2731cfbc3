"""Run artefacts for people: PNG plots and a short markdown model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_runtime.atomic import atomic_write_bytes, atomic_write_text

from .config import RunConfig

__all__ = ["write_plots", "write_model_card"]


def _save_figure(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_plots(run_dir: Path, metrics_path: Path, test_pred: np.ndarray,
                test_targets: dict[str, torch.Tensor]) -> list[Path]:
    """``plots/losses.png`` (per-loss curves), ``plots/student_vs_teacher.png``,
    ``plots/student_vs_mos.png`` (when the test split has MOS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss/total" in r]
    evals = [r for r in records if "val/srcc" in r]
    out_dir = run_dir / "plots"
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for r in steps for k in r if k.startswith("loss/")}):
        axes[0].plot([r["step"] for r in steps], [r[key] for r in steps], label=key[5:], lw=1)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
    axes[0].legend(fontsize=8)
    axes[1].plot([r["step"] for r in evals], [r["val/srcc"] for r in evals], "o-", label="SRCC")
    axes[1].plot([r["step"] for r in evals], [r["val/plcc"] for r in evals], "s-", label="PLCC")
    axes[1].set(xlabel="step", title="validation: student vs teacher", ylim=(min(0, *(r["val/srcc"] for r in evals)) if evals else 0, 1))
    axes[1].legend()
    _save_figure(fig, out_dir / "losses.png")
    plt.close(fig)
    written.append(out_dir / "losses.png")
    pairs = [("teacher score", test_targets["score"].numpy(), "student_vs_teacher.png")]
    mos = test_targets["mos"].numpy()
    if np.isfinite(mos).sum() >= 3:
        pairs.append(("MOS", mos, "student_vs_mos.png"))
    for label, target, name in pairs:
        keep = np.isfinite(target)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(target[keep], test_pred[keep], s=10, alpha=0.7)
        lo, hi = float(np.min(target[keep])), float(np.max(target[keep]))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=label, ylabel="student score", title=f"held-out: student vs {label}")
        _save_figure(fig, out_dir / name)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def _fmt(metrics: dict[str, float] | None) -> str:
    if not metrics:
        return "n/a"
    return (f"SRCC {metrics['srcc']:.4f}, PLCC {metrics['plcc']:.4f}, KRCC {metrics['krcc']:.4f}, "
            f"RMSE {metrics['rmse']:.4f} (n={metrics['n']})")


def write_model_card(run_dir: Path, cfg: RunConfig, result: dict[str, Any], notice: str | None) -> Path:
    test = result["test"]
    lines = [
        f"# Student model card: {cfg.student.variant} ({result['student']['backbone']})", "",
        *(["> " + notice, ""] if notice else []),
        "## What it is",
        f"A {result['student']['params'] / 1e6:.2f}M-parameter student distilled from an MA-AGIQA teacher "
        f"(teacher fingerprint `{result['teacher_fingerprint'][:16]}`). It scores the whole "
        "image, resized by the shared preprocessing (`student/best/config.json` -> `preprocess`). "
        "Higher scores mean better quality.", "",
        "## Data", f"- dataset: `{cfg.data.kind}` {cfg.data.root or ''}",
        f"- images per split: {result['images']} (split seed {cfg.data.split_seed}); "
        f"skipped unreadable images: {result['skipped_images']}", "",
        "## Held-out results (test split, best checkpoint by validation SRCC)",
        f"- student vs teacher: {_fmt(test.get('vs_teacher'))}",
        f"- student vs MOS: {_fmt(test.get('vs_mos'))}",
        f"- teacher vs MOS: {_fmt(result.get('teacher_vs_mos'))}", "",
        "## Training", f"- {result['steps']} steps, best at step {result['best_step']}; "
        f"{result['seconds']:.0f} s wall time",
        f"- losses: {', '.join(f'{k}={getattr(cfg.loss, k)}' for k in ('score', 'mos', 'semantic', 'quality', 'gate', 'rank'))}",
        "", "## Use",
        f"`agiqa-export executorch {run_dir} --out model.pte` then `agiqa-score IMAGES --model model.pte`.",
        "", "## Limits",
        "- Trained and evaluated on the dataset above only; scores on other kinds of images are untested.",
        "- The student imitates its teacher, including the teacher's errors.", "",
    ]
    path = run_dir / "MODEL_CARD.md"
    atomic_write_text(path, "\n".join(lines))
    return path
