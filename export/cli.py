"""``agiqa-export``: the command line over :func:`export.export_executorch` (parsing only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export a distilled student for on-device scoring.")


@app.callback()
def _main() -> None:
    """Export a distilled student for on-device scoring."""


@app.command("executorch")
def executorch_command(
    source: Path = typer.Argument(..., help="A distillation run folder (uses student/best) or a "
                                            "student folder (then --images is required)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .pte to write; model.json and "
                                                      "model.report.json go beside it."),
    quantize: str = typer.Option("int8", help="int8 (PT2E static, XNNPACK) or fp32."),
    calibration: int = typer.Option(64, help="Real images used to calibrate int8 activations."),
    backend: str = typer.Option("xnnpack", help="Delegate; only xnnpack runs with this wheel."),
    images: Optional[Path] = typer.Option(None, help="Folder of real images for calibration and "
                                                     "verification (overrides a run's splits)."),
    min_srcc: Optional[float] = typer.Option(None, help="Fail below this SRCC vs the eager "
                                                        "fp32 student (int8 default 0.99)."),
    max_abs_diff: Optional[float] = typer.Option(None, help="Fail above this max abs score "
                                                            "diff (fp32 default 1e-4)."),
    verify_limit: int = typer.Option(200, help="At most this many held-out images to verify on."),
) -> None:
    """Export SOURCE to an ExecuTorch program, verify it on held-out images, write its contract."""
    from .executorch import ExportError, FidelityError, export_executorch

    try:
        report = export_executorch(source, out, quantize=quantize, calibration=calibration,
                                   backend=backend, images=images, min_srcc=min_srcc,
                                   max_abs_diff=max_abs_diff, verify_limit=verify_limit)
    except FidelityError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (ExportError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    v = report.verification
    srcc = "n/a" if v.srcc is None else f"{v.srcc:.4f}"
    typer.echo(f"wrote {report.program} ({report.program_bytes / 1e6:.2f} MB, {report.quantize}, "
               f"{report.nodes_outside_delegate} nodes outside the {report.backend} delegate)")
    typer.echo(f"verified on {v.num_images} images: max abs diff {v.max_abs_diff:.3g}, SRCC {srcc}, "
               f"median {v.latency_ms_median:.2f} ms/image")
    typer.echo(f"contract: {report.contract}\nreport:   {report.report}")


if __name__ == "__main__":
    app()
