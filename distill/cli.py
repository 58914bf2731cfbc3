"""``agiqa-distill``: typer commands that parse arguments and call the typed library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from _agiqa.errors import exit_codes_help, one_line_errors

from .config import TEACHER_SPLIT_SEED, TeacherTrainConfig, demo_teacher_train
from .data import DATASET_KINDS

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=exit_codes_help(),
                  help="Distil the MA-AGIQA teacher into a mobile student (run, evaluate, label, train-teacher).")


def _version(value: bool) -> None:
    from _agiqa.version import version_callback

    version_callback(value)


@app.callback()
def _setup(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """Keep third-party import noise out of the user's output (our own progress bars stay)."""
    from _agiqa.quiet import quiet_toolchain

    quiet_toolchain()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-shard "Loading weights" bars of the MLLM
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


# Ctrl-C leaves every file consistent (atomic writes, checkpoints), so the same command continues.
_friendly_errors = one_line_errors(
    interrupted="interrupted: everything written so far is kept; run the same command "
                "(or `agiqa-distill run --resume RUN_DIR`) to continue")


@app.command(epilog=exit_codes_help())
@_friendly_errors
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML/JSON run config "
                                          "(configs/agiqa3k.yaml); default: the built-in demo"),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.epochs=5 "
                                   "(repeatable; values are YAML)"),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this folder "
                                          "from its last checkpoint, with its saved config"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars"),
) -> None:
    """Label (if needed), distil, evaluate and report. With no arguments: a complete demo
    (generated images with a MOS, a tiny MA-AGIQA teacher trained on them, the default student) in
    about twelve minutes on 2 CPU cores."""
    from .config import ConfigError, load_config
    from .run import resume_distillation, run_distillation

    if resume is not None:
        if config is not None:
            raise ConfigError("--resume uses the run's saved config.json; drop --config")
        result = resume_distillation(resume, set_, progress=progress)
    else:
        result = run_distillation(load_config(config, set_), progress=progress)
    if result.evaluated:  # rank 0 (the other ranks of a torchrun job only return run_dir)
        from .report import display_path

        run_dir = display_path(result.run_dir)
        srcc = {"teacher vs MOS": (result.teacher_vs_mos or {}).get("srcc"),
                "student vs MOS": result.test.get("vs_mos", {}).get("srcc"),
                "student vs teacher": result.test["vs_teacher"]["srcc"]}
        typer.echo(f"done in {result.seconds:.0f} s -> {run_dir}\n"
                   f"held-out SRCC (n={result.test['vs_teacher']['n']}): "
                   + ", ".join(f"{k} {v:.3f}" for k, v in srcc.items() if v is not None))
        held = result.unlabeled_holdout
        if held:
            m = held["vs_teacher"]
            typer.echo(f"held-out unlabeled (n={held['n']}, {held['images']}, never trained on): student vs "
                       f"teacher SRCC {m['srcc']:.3f}, PLCC {m['plcc']:.3f}, KRCC {m['krcc']:.3f}")
        typer.echo(f"model card: {display_path(result.model_card)}\n"
                   f"plots:      {', '.join(display_path(p) for p in result.plots or [])}\n"
                   f"export:     agiqa-export executorch {run_dir} --out model.pte")


@app.command(epilog=exit_codes_help())
@_friendly_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished run folder (agiqa-distill run)"),
    images: Path = typer.Argument(..., help="A folder of your own images (no MOS needed)"),
    device: str | None = typer.Option(None, "--device", help="cuda | cpu (default: the run's, else cuda if available)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """How faithfully the run's student copies its teacher on IMAGES: the run's teacher labels them
    (cached in the run), its best student scores them; SRCC/PLCC/KRCC printed and written to
    RUN/evaluations/ with a scatter plot. Check your own gallery before shipping."""
    from .evaluate import evaluate_folder
    from .report import display_path

    result = evaluate_folder(run_dir, images, device=device, progress=progress)
    m = result.vs_teacher
    typer.echo(f"student vs teacher on {result.n} images of {display_path(result.images)}"
               + (f" ({result.skipped} unreadable skipped)" if result.skipped else "")
               + f": SRCC {m['srcc']:.3f}, PLCC {m['plcc']:.3f}, KRCC {m['krcc']:.3f}\n"
               f"report: {display_path(result.report)}\nplot:   {display_path(result.plot)}")


@app.command(epilog=exit_codes_help())
@_friendly_errors
def label(
    dataset: Path = typer.Argument(..., help="Dataset root (AGIQA-3k, AIGCQA-20k, an image folder) or a CSV"),
    out: Path = typer.Option(..., "--out", "-o", help="Label cache folder (created; resumable)"),
    teacher: Path | None = typer.Option(None, "--teacher", help="Teacher folder with teacher.json"),
    tiny: bool = typer.Option(False, "--tiny", help="Use the tiny random teacher (pipeline tests)"),
    kind: str | None = typer.Option(None, "--kind", help=" | ".join(DATASET_KINDS)
                                       + " (default: guessed from the files)"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    device: str | None = typer.Option(None, "--device", help="cuda | cpu (default: cuda if available)"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Run the MLLM folder's own Python code (only for model "
                                                "types neither ported here, as mPLUG-Owl2 is, nor in transformers)"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Allow a pickled MA-AGIQA checkpoint (runs arbitrary code)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    workers: int | None = typer.Option(None, "--workers", min=0,
                                       help="Processes that decode, hash and make both teacher views ahead "
                                            "of the model (0: none; default min(4, CPUs)); labels are the same"),
) -> None:
    """Run the teacher over a dataset and write a label cache (resumable; torchrun-aware)."""
    from teacher.cache import build_label_cache
    from teacher.labeler import Teacher, tiny_teacher_for

    from .data import dataset_spec_for, load_records

    if (teacher is None) == (not tiny):
        raise ValueError("pass exactly one of --teacher DIR or --tiny")
    if tiny:
        teacher = tiny_teacher_for(out)
    records = load_records(dataset_spec_for(dataset, kind))
    labeler = Teacher.from_pretrained(teacher, device=device, trust_remote_code=trust_remote_code,
                                      allow_pickle=allow_pickle)
    report = build_label_cache(records, labeler, out, batch_size=batch_size, progress=progress,
                               num_workers=workers)
    typer.echo(json.dumps({"labelled": report.n_labeled, "skipped": report.n_skipped,
                           "images_per_s": round(report.images_per_s, 2), "cache": str(out)}))


# train-teacher's defaults are TeacherTrainConfig's (the official recipe); the demo's differ as stated there.
_OFFICIAL, _DEMO = TeacherTrainConfig(), demo_teacher_train()


@app.command("train-teacher", epilog=exit_codes_help())
@_friendly_errors
def train_teacher_cmd(
    dataset: Path = typer.Argument(..., help="Dataset root with MOS (AGIQA-3k, AIGCQA-20k) or a CSV with path,mos"),
    teacher: Path = typer.Option(..., "--teacher", help="Teacher folder giving the MLLM, prompts and MANIQA preset"),
    cache: Path = typer.Option(..., "--cache", help="Label cache of this dataset made with that MLLM and prompts "
                               "(agiqa-distill label); its semantic vectors are reused"),
    out: Path = typer.Option(..., "--out", "-o", help="New teacher folder to write"),
    kind: str | None = typer.Option(None, "--kind", help=" | ".join(DATASET_KINDS)
                                   + " with MOS (default: guessed)"),
    vit_weights: Path | None = typer.Option(None, "--vit-weights", help="Local ImageNet "
                                               "vit_base_patch8_224 weights (safetensors) to start from, as the paper"),
    epochs: int = typer.Option(_OFFICIAL.epochs, help=f"Official: {_OFFICIAL.epochs}"),
    batch_size: int = typer.Option(_OFFICIAL.batch_size, help=f"Official: {_OFFICIAL.batch_size}"),
    lr: float = typer.Option(_OFFICIAL.lr, help=f"Official: {_OFFICIAL.lr:g} (Adam)"),
    maniqa_epochs: int = typer.Option(_OFFICIAL.maniqa_epochs, min=0,
                                      help="Train the MANIQA branch alone on MOS for this many epochs first "
                                      f"(for a start from random weights: the demo uses {_DEMO.maniqa_epochs}; "
                                      f"official: {_OFFICIAL.maniqa_epochs})"),
    freeze_maniqa: bool = typer.Option(_OFFICIAL.freeze_maniqa, "--freeze-maniqa/--no-freeze-maniqa",
                                       help="Then train only the fusion, on the fixed quality features"),
    split_seed: int = typer.Option(TEACHER_SPLIT_SEED, help="Official split: 70/10/20 with seed 20"),
    device: str | None = typer.Option(None, "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train MA-AGIQA end to end with the official recipe (writes a teacher folder).

    Without ImageNet weights (no --vit-weights), add --maniqa-epochs 16 --freeze-maniqa: the
    demo's two-stage recipe (distill.config.demo_teacher_train), which lets a MANIQA from random
    weights learn quality.
    """
    from .data import dataset_spec_for, load_records
    from .teacher_train import train_teacher

    records = load_records(dataset_spec_for(dataset, kind))
    cfg = TeacherTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                             maniqa_epochs=maniqa_epochs, freeze_maniqa=freeze_maniqa)
    best = train_teacher(teacher, cache, records, None, out, cfg, split_seed=split_seed,
                         vit_weights=str(vit_weights) if vit_weights else None, progress=progress)
    typer.echo(json.dumps({"teacher": str(out), **{k: v for k, v in best.items() if k not in ("score", "history")}}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
