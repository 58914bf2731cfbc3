"""``agiqa-export``: the command line over :func:`export.export_executorch` (parsing only)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import typer

from _agiqa.errors import exit_codes_help, one_line_errors
from _agiqa.version import version_callback

from .backends import DEFAULT_INT8_ACTIVATIONS, INT8_ACTIVATIONS, QUANTIZE_MODES, SUPPORTED_BACKENDS

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=exit_codes_help(),
                  help="Export a distilled student for on-device scoring.")


# One choice per export.backends.QUANTIZE_MODES entry (typer lists them and refuses others).
Quantize = Enum("Quantize", {mode: mode for mode in QUANTIZE_MODES}, type=str)
Int8Activations = Enum("Int8Activations", {mode: mode for mode in INT8_ACTIVATIONS}, type=str)


# One choice per entry of export.backends.EXPORT_BACKENDS (typer lists them and refuses others).
Backend = Enum("Backend", {name: name for name in SUPPORTED_BACKENDS}, type=str)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=version_callback,
                                       is_eager=True, help="Print the version and exit.")) -> None:
    """Export a distilled student for on-device scoring."""


def _progress() -> Callable[[str], None]:
    """One line per phase on stderr, with the seconds since the export started."""
    start = time.perf_counter()

    def say(line: str) -> None:
        typer.echo(f"[{time.perf_counter() - start:6.1f} s] {line}", err=True)
        sys.stderr.flush()
    return say


@app.command("executorch", epilog=exit_codes_help())
@one_line_errors(interrupted="interrupted: the export did not finish; run the same command again")
def executorch_command(
    source: Path = typer.Argument(..., help="A distillation run folder (uses student/best) or a "
                                            "student folder (then --images is required)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .pte to write; model.json and "
                                                      "model.report.json go beside it."),
    quantize: Quantize = typer.Option(Quantize.int8, help="int8 (PT2E, the backbone and the stream "
                                                          "heads' weights; see --int8-activations) or fp32."),
    calibration: int = typer.Option(64, help="Real images used to calibrate static int8 activations."),
    int8_activations: Int8Activations = typer.Option(
        Int8Activations(DEFAULT_INT8_ACTIVATIONS), "--int8-activations",
        help="int8: 'dynamic' ranges measured on each image by the program (no calibration set to "
             "miss: faithful on photos unlike it) or 'static' ones calibrated once (slightly faster, "
             "less faithful on photos unlike the calibration set); see docs/edge.md."),
    backend: Backend = typer.Option(Backend.xnnpack, help="Delegate; only xnnpack runs with "
                                                          "this ExecuTorch wheel."),
    images: Path | None = typer.Option(None, help="Folder of real images for calibration and "
                                                     "verification (overrides a run's splits)."),
    verify_images: Path | None = typer.Option(None, help="Folder of images to verify on "
                                                 "instead (e.g. photos unlike the calibration "
                                                 "set); the report names it."),
    calibration_images: Path | None = typer.Option(None, help="Folder of images to calibrate "
                                                      "int8 on instead (photos like those users "
                                                      "score); the report names it."),
    keep_fp32: list[str] = typer.Option([], "--keep-fp32", metavar="MODULE",
                                        help="int8: leave this backbone module in fp32 (repeatable; "
                                             "e.g. student.backbone.conv_stem; bench/int8_sensitivity.py "
                                             "measures which cost the ranking most)."),
    min_srcc: float | None = typer.Option(None, help="Fail below this SRCC vs the eager "
                                                        "fp32 student (int8 default 0.99)."),
    max_abs_diff: float | None = typer.Option(None, help="Fail above this max abs score "
                                                            "diff (fp32 default 1e-4)."),
    verify_limit: int = typer.Option(200, help="At most this many held-out images to verify on."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Export SOURCE to an ExecuTorch program, verify it on held-out images, write its contract."""
    from .executorch import export_executorch

    report = export_executorch(source, out, quantize=quantize.value, calibration=calibration,
                               backend=backend.value, images=images,
                               verify_images=verify_images,
                               calibration_images=calibration_images, min_srcc=min_srcc,
                               max_abs_diff=max_abs_diff, verify_limit=verify_limit,
                               keep_fp32=tuple(keep_fp32), int8_activations=int8_activations.value,
                               progress=None if quiet else _progress())
    v = report.verification
    srcc = "n/a" if v.srcc is None else f"{v.srcc:.4f}"
    typer.echo(f"wrote {report.program} ({report.program_bytes / 1e6:.2f} MB, {report.quantize}, "
               f"{report.nodes_outside_delegate} nodes outside the {report.backend} delegate)")
    typer.echo(f"verified on {v.num_images} images from {v.image_set}: max abs diff "
               f"{v.max_abs_diff:.3g}, SRCC {srcc}, {v.distinct_scores} distinct scores "
               f"(eager fp32: {v.reference_distinct_scores}), "
               f"median {v.latency_ms_median:.2f} ms/image")
    c = report.calibration_fidelity
    if c is not None:
        calibrated = (f"calibrated on {report.calibration_images} images from"
                      if report.quantization.get("activations") != "dynamic"
                      else "dynamic activations, no calibration; on the images calibration would use,")
        typer.echo(f"{calibrated} {report.images_from}: "
                   f"SRCC {'n/a' if c.srcc is None else f'{c.srcc:.4f}'} on {c.num_images} of them, "
                   f"{c.distinct_scores} distinct scores (eager fp32: {c.reference_distinct_scores})")
    typer.echo(f"contract: {report.contract}\nreport:   {report.report}")


if __name__ == "__main__":
    app()
