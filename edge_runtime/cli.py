"""``agiqa-score``: score and rank photos with an exported program (parsing and printing only).

    agiqa-score photos/ extra.jpg --model model.pte --format table

Folders expand to the image files inside them (recursively). Images that cannot be decoded
are skipped with their reason (stderr, and in the output); the command exits 0 when at least
one image was scored, 1 when none was, 2 when the model cannot be loaded (the codes of
:mod:`_agiqa.errors`, shared by all our commands).
"""

from __future__ import annotations

import csv
import io
import json
from enum import Enum
from pathlib import Path

import typer

from _agiqa.errors import EXIT_FAILED, EXIT_OK, exit_codes_help, exit_with, one_line_errors
from _agiqa.version import version_callback

from .scorer import Scorer, ScoreResult, find_images, rank_results

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=exit_codes_help(),
                  help="Score photos with an exported agiqa-edge program.")

class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class Order(str, Enum):
    rank = "rank"
    input = "input"


def expand_paths(paths: list[Path], on_skip=None) -> list[Path]:
    """Files as given (any suffix); folders -> their image files, sorted, hidden ones ignored.

    ``on_skip(folder, reason)`` hears about folders skipped in a scan (symlink loops)."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            expanded.extend(find_images(path, on_skip=on_skip))
        else:
            expanded.append(path)  # missing files are reported as skipped by the scorer
    return expanded


def _rows(results: list[ScoreResult], lower_better: bool) -> list[dict]:
    """One row per result, in the given order; "rank" is always the rank by score (1 = best)."""
    ranks = {id(r): i + 1 for i, r in enumerate(rank_results(results, lower_better)) if r.ok}
    return [{"rank": ranks.get(id(r)), "path": r.path, "score": r.score, "skipped": r.skipped}
            for r in results]


def render(results: list[ScoreResult], fmt: Format, scorer_info: dict) -> str:
    rows = _rows(results, bool(scorer_info.get("lower_better", False)))
    if fmt is Format.json:
        return json.dumps({**scorer_info, "results": rows}, indent=2) + "\n"
    if fmt is Format.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["rank", "path", "score", "skipped"],
                                lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return buffer.getvalue()
    lines = [f"{'rank':>4}  {'score':>12}  path"]
    for row in rows:
        if row["score"] is None:
            lines.append(f"{'-':>4}  {'skipped':>12}  {row['path']}  ({row['skipped']})")
        else:
            lines.append(f"{row['rank']:>4}  {row['score']:>12.6g}  {row['path']}")
    return "\n".join(lines) + "\n"


@app.command(epilog=exit_codes_help())
@one_line_errors(interrupted="interrupted: no scores were printed")
def score(
    paths: list[Path] = typer.Argument(..., help="Image files and/or folders of images."),
    model: Path = typer.Option(..., "--model", "-m", help="The .pte; its model.json must sit beside it."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    order: Order = typer.Option(Order.rank, help="rank: best first (skipped last); input: as given."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: the runtime's choice)."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="A progress bar on stderr (only when it is a terminal)."),
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Score PATHS with MODEL; unreadable images are skipped with their reason."""
    files = expand_paths(paths, on_skip=lambda folder, reason: typer.echo(
        f"skipped folder {folder}: {reason}", err=True))
    if not files:
        typer.echo("error: no images found in the given paths", err=True)
        raise typer.Exit(EXIT_FAILED)
    try:
        scorer = Scorer.from_file(model, threads=threads)
    except Exception as exc:  # ContractError, RuntimeUnavailableError, a missing file, ...
        exit_with(exc, context=f"cannot load {model}")
    results = scorer.score_many(_with_progress(files, progress))
    if order is Order.rank:
        results = rank_results(results, scorer.lower_better)
    contract = scorer.contract
    info = {"model": str(model), "lower_better": contract.lower_better,
            "score_range": contract.score_range, "quantization": contract.quantize}
    typer.echo(render(results, fmt, info), nl=False)
    skipped = [r for r in results if not r.ok]
    for r in skipped:
        typer.echo(f"skipped {r.path}: {r.skipped}", err=True)
    scored = len(results) - len(skipped)
    typer.echo(f"scored {scored} image(s), skipped {len(skipped)}"
               f" ({'lower' if contract.lower_better else 'higher'} is better)", err=True)
    raise typer.Exit(EXIT_OK if scored else EXIT_FAILED)


def _with_progress(files: list[Path], enabled: bool):
    """``files``, wrapped in a progress bar for a terminal (no bar in pipes, logs or tests)."""
    if not enabled or len(files) < 20:
        return files
    from tqdm import tqdm

    return tqdm(files, desc="scoring", unit="img", disable=None, leave=False)


if __name__ == "__main__":
    app()
