"""Run artefacts for people: PNG plots and a short markdown model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from _agiqa.atomic import atomic_write_bytes, atomic_write_text
from student.layout import RunLayout
from student.model import CONFIG_NAME

from .config import LOSS_NAMES, RunConfig
from .losses import DistillTargets

__all__ = ["write_plots", "write_scatter", "write_model_card", "display_path"]


def _save_figure(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_scatter(path: Path, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, what: str) -> Path:
    """One held-out scatter with SRCC / PLCC in its title and readable ticks; returns ``path``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .metrics import iqa_metrics

    keep = np.isfinite(x) & np.isfinite(y)
    m = iqa_metrics(y[keep], x[keep])
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.scatter(x[keep], y[keep], s=12, alpha=0.7)
    ax.set(xlabel=xlabel, ylabel=ylabel,
           title=f"held-out {what}\nSRCC {m['srcc']:.3f}   PLCC {m['plcc']:.3f}   (n={m['n']})")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(useOffset=False)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
    plt.close(fig)
    return path


def write_plots(run_dir: Path, metrics_path: Path, test_pred: np.ndarray,
                test_targets: DistillTargets, best_step: int | None = None) -> list[Path]:
    """``plots/losses.png`` (per-loss curves, validation with the best checkpoint marked),
    ``plots/student_vs_teacher.png``, and when the test split has MOS
    ``plots/student_vs_mos.png`` and ``plots/teacher_vs_mos.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss/total" in r]
    evals = [r for r in records if "val/srcc" in r]
    out_dir = RunLayout(run_dir).plots
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for r in steps for k in r if k.startswith("loss/")}):
        values = [r[key] for r in steps]
        if max(values, default=0.0) <= 0.0:  # a loss that is off (weight 0 or no MOS): no line, no legend
            continue
        axes[0].plot([r["step"] for r in steps], values, label=key[5:], lw=1)
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
    axes[0].legend(fontsize=8)
    if evals:
        x = [r["step"] for r in evals]
        axes[1].plot(x, [r["val/srcc"] for r in evals], "o-", ms=3, label="SRCC")
        axes[1].plot(x, [r["val/plcc"] for r in evals], "s-", ms=3, label="PLCC")
        best = next((r for r in evals if r["step"] == best_step), None)
        if best is not None:
            axes[1].axvline(best["step"], color="k", ls=":", lw=1)
            axes[1].plot([best["step"]], [best["val/srcc"]], "*", ms=14, color="tab:red",
                         label=f"best checkpoint (step {best['step']}, SRCC {best['val/srcc']:.3f})")
        low = min(min(r["val/srcc"], r["val/plcc"]) for r in evals)
        axes[1].set_ylim(min(0.0, low) - 0.05, 1.02)
        axes[1].legend(fontsize=8, loc="lower right")
    axes[1].set(xlabel="step", title="validation: student vs teacher")
    _save_figure(fig, out_dir / "losses.png")
    plt.close(fig)
    written.append(out_dir / "losses.png")
    teacher, mos = test_targets.teacher.score.numpy(), test_targets.mos.numpy()
    scatters = [(teacher, test_pred, "teacher score", "student score", "student vs teacher", "student_vs_teacher.png")]
    if np.isfinite(mos).sum() >= 3:
        scatters += [(mos, test_pred, "MOS", "student score", "student vs MOS", "student_vs_mos.png"),
                     (mos, teacher, "MOS", "teacher score", "teacher vs MOS", "teacher_vs_mos.png")]
    for x, y, xlabel, ylabel, what, name in scatters:
        written.append(write_scatter(out_dir / name, x, y, xlabel, ylabel, what))
    return written


def _fmt(metrics: dict[str, float] | None) -> str:
    if not metrics:
        return "n/a"
    return (f"SRCC {metrics['srcc']:.4f}, PLCC {metrics['plcc']:.4f}, KRCC {metrics['krcc']:.4f}, "
            f"RMSE {metrics['rmse']:.4f} (n={metrics['n']})")


def display_path(path: str | Path, start: Path | None = None) -> str:
    """``path`` relative to ``start`` (default: the current folder) when below it (the card of
    ``runs/demo`` says ``runs/demo``, not the absolute path of the machine that trained it);
    otherwise as it is."""
    try:
        return Path(path).resolve().relative_to((start or Path.cwd()).resolve()).as_posix()
    except ValueError:
        return str(path)


def write_model_card(run_dir: Path, cfg: RunConfig, result: dict[str, Any], notice: str | None,
                     cwd: Path | None = None) -> Path:
    """``MODEL_CARD.md``: what the student is, its data, the three held-out SRCCs, how to use it.
    Paths are relative to ``cwd`` (default: the current folder), so the card reads the same anywhere."""
    test, images = result["test"], result["images"]
    run = display_path(run_dir, cwd)
    names = RunLayout(Path())  # paths relative to the run folder
    direction = "Lower scores mean better quality." if result.get("lower_better") else \
        "Higher scores mean better quality."
    sizes = ", ".join(f"{images[k]} {k}" for k in ("train", "val", "test") if k in images)
    srcc = {name: (m or {}).get("srcc") for name, m in (("teacher vs MOS", result.get("teacher_vs_mos")),
                                                          ("student vs MOS", test.get("vs_mos")),
                                                          ("student vs teacher", test.get("vs_teacher")))}
    lines = [
        f"# Student model card: {cfg.student.variant} ({result['student']['backbone']})", "",
        *(["> " + notice, ""] if notice else []),
        "## What it is",
        f"A {result['student']['params'] / 1e6:.2f}M-parameter student distilled from an MA-AGIQA teacher "
        f"(teacher fingerprint `{result['teacher_fingerprint'][:16]}`). It scores the whole "
        f"image, resized by the shared preprocessing (`{(names.student() / CONFIG_NAME).as_posix()}` -> "
        f"`preprocess`). {direction}", "",
        "## Held-out SRCC (test split)", "",
        "| teacher vs MOS | student vs MOS | student vs teacher |", "|---|---|---|",
        "| " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in srcc.values()) + " |", "",
        "## Data", f"- dataset: `{cfg.data.kind}`" + (f" in `{cfg.data.root}`" if cfg.data.root else ""),
        f"- images: {sizes} (split seed {cfg.data.split_seed})"
        + (f"; {images['unlabeled']} unlabeled images labelled by the teacher for distillation"
           if images.get("unlabeled") else "")
        + (f" ({images['unlabeled_holdout']} more held out for evaluation)" if images.get("unlabeled_holdout") else ""),
        f"- unreadable images skipped: {result['skipped_images']}", "",
        "## Held-out results in full (test split, best checkpoint by validation SRCC)",
        f"- student vs teacher: {_fmt(test.get('vs_teacher'))}",
        f"- student vs MOS: {_fmt(test.get('vs_mos'))}",
        f"- teacher vs MOS: {_fmt(result.get('teacher_vs_mos'))}", "",
        *(["## Fidelity where no MOS exists (held-out unlabeled images, never trained on)",
           f"- student vs teacher on {held['n']} images of `{held['images']}`: {_fmt(held['vs_teacher'])}",
           "- check your own images before shipping: "
           f"`agiqa-distill evaluate {run} YOUR_IMAGES_DIR`", ""] if (held := result.get("unlabeled_holdout")) else []),
        "## Training", f"- {result['steps']} steps, best at step {result['best_step']}; "
        f"{result['seconds']:.0f} s wall time for the whole run",
        "- losses: " + ", ".join(f"{k}={getattr(cfg.loss, k)}" for k in LOSS_NAMES),
        f"- plots: `{run}/{names.plots.as_posix()}/`", "",
        "## Use",
        f"`agiqa-export executorch {run} --out model.pte`, then `agiqa-score IMAGES --model model.pte`.",
        "", "## Limits",
        "- Trained and evaluated on the images above only: run `agiqa-distill evaluate` on the kind "
        "of images you will score.",
        "- The student imitates its teacher, including the teacher's errors.", "",
    ]
    path = RunLayout(run_dir).model_card
    atomic_write_text(path, "\n".join(lines))
    return path
