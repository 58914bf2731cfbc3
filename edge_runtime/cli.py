"""``agiqa-score``: score and rank photos with an exported program (parsing and printing only).

    agiqa-score photos/ extra.jpg --model model.pte --format table
    agiqa-score photos/ -m model.pte --output scores.csv [--resume]    # streamed, resumable

Folders expand to the image files inside them (recursively). Images that cannot be decoded
are skipped with their reason (stderr, and in the output); the command exits 0 when at least
one image was scored, 1 when none was, 2 when the model cannot be loaded (the codes of
:mod:`_agiqa.errors`, shared by all our commands).

Decoding runs ahead on ``--decode-threads`` threads while the program scores
(:meth:`Scorer.iter_scores`). With ``--output`` every row is appended and flushed as it is
scored (:mod:`edge_runtime.results`), so an interrupted run keeps what it scored and
``--resume`` continues it; ``--format jsonl --order input`` streams to stdout the same way.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path

import typer

from _agiqa.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, exit_codes_help, exit_with, one_line_errors
from _agiqa.version import version_callback

from .golden import golden_path
from .results import ResultsFile, format_row, stream_format
from .scorer import Scorer, ScoreResult, find_images, rank_results

app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=exit_codes_help(),
                  help="Score photos with an exported agiqa-edge program.")

class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


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
    if fmt is Format.jsonl:
        return "".join(json.dumps(row) + "\n" for row in rows)
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
    fmt: Format | None = typer.Option(None, "--format", "-f", show_default=False,
                                      help="Output format [default: table; with --output, from "
                                           "its suffix: csv or jsonl]."),
    order: Order | None = typer.Option(None, show_default=False,
                                       help="rank: best first (skipped last; the default); input: "
                                            "as given (always, with --output)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Append one row per image (csv or jsonl) to this file "
                                            "as it is scored, flushed: an interrupted run keeps "
                                            "what it scored."),
    resume: bool = typer.Option(False, "--resume",
                                help="With --output: keep its rows and score only the files not "
                                     "in it yet."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: the runtime's choice)."),
    decode_threads: int | None = typer.Option(
        None, "--decode-threads", min=0, show_default=False,
        help="Threads decoding ahead of the model [default: 2, or 1 on one core]; 0 decodes "
             "one image at a time in the scoring thread."),
    verify_golden: bool = typer.Option(
        True, "--verify-golden/--no-verify-golden",
        help="Reproduce model.golden.safetensors at load and refuse the program when it "
             "disagrees (as agiqa-score-cpp does); off only for benchmarks or diagnosis."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="A progress bar on stderr (only when it is a terminal)."),
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Score PATHS with MODEL; unreadable images are skipped with their reason."""
    if output is not None:
        stream_format(output, None if fmt is None else fmt.value)  # a bad choice fails before the load
        if order is Order.rank:
            raise typer.BadParameter("--output rows come in input order; sort the file "
                                     "afterwards", param_hint="--order")
    elif resume:
        raise typer.BadParameter("--resume continues an --output file; name it", param_hint="--resume")
    files = expand_paths(paths, on_skip=lambda folder, reason: typer.echo(
        f"skipped folder {folder}: {reason}", err=True))
    if not files:
        typer.echo("error: no images found in the given paths", err=True)
        raise typer.Exit(EXIT_FAILED)
    try:
        scorer = Scorer.from_file(model, threads=threads, verify_golden=verify_golden)
    except Exception as exc:  # ContractError, GoldenError, RuntimeUnavailableError, a missing file, ...
        exit_with(exc, context=f"cannot load {model}")
    if verify_golden and not scorer.golden_checked:
        typer.echo(f"note: {golden_path(model)} not found (a program exported before golden "
                   "pairs): scoring without the golden check; re-export to add it", err=True)
    if output is not None:
        results = _score_to_file(scorer, files, output, fmt, resume, decode_threads, progress)
    elif fmt is Format.jsonl and order is Order.input:
        results = []
        for r in _with_progress(scorer.iter_scores(files, decode_threads=decode_threads),
                                len(files), progress):
            sys.stdout.write(format_row(r, "jsonl"))
            sys.stdout.flush()
            results.append(r)
    else:
        results = scorer.score_many(_with_progress(files, len(files), progress),
                                    decode_threads=decode_threads)
        if order is not Order.input:
            results = rank_results(results, scorer.lower_better)
        contract = scorer.contract
        info = {"model": str(model), "lower_better": contract.lower_better,
                "score_range": contract.score_range, "quantization": contract.quantize}
        typer.echo(render(results, fmt or Format.table, info), nl=False)
    _summary(results, scorer.lower_better)


def _score_to_file(scorer: Scorer, files: list[Path], output: Path, fmt: Format | None,
                   resume: bool, decode_threads: int | None, progress: bool) -> list[ScoreResult]:
    """Append a row per file not yet in ``output``; every row of these files, in input order."""
    with ResultsFile.open(output, None if fmt is None else fmt.value, resume=resume) as sink:
        todo = [f for f in files if str(f) not in sink.done]
        if sink.done:
            typer.echo(f"resuming {output}: {len(files) - len(todo)} image(s) already there, "
                       f"{len(todo)} to score", err=True)
        rows = dict(sink.done)
        try:
            for r in _with_progress(scorer.iter_scores(todo, decode_threads=decode_threads),
                                    len(files), progress, initial=len(files) - len(todo)):
                sink.write(r)
                rows[r.path] = r
        except KeyboardInterrupt:
            typer.echo(f"\ninterrupted: {len(rows)} row(s) kept in {output}; rerun with "
                       "--resume to continue", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(f"wrote {sink.written} row(s) to {output}", err=True)
    return [rows[str(f)] for f in files if str(f) in rows]


def _summary(results: list[ScoreResult], lower_better: bool) -> None:
    skipped = [r for r in results if not r.ok]
    for r in skipped:
        typer.echo(f"skipped {r.path}: {r.skipped}", err=True)
    scored = len(results) - len(skipped)
    typer.echo(f"scored {scored} image(s), skipped {len(skipped)}"
               f" ({'lower' if lower_better else 'higher'} is better)", err=True)
    raise typer.Exit(EXIT_OK if scored else EXIT_FAILED)


def _with_progress(items: Iterable, total: int, enabled: bool, initial: int = 0) -> Iterator | Iterable:
    """``items``, wrapped in a progress bar for a terminal (no bar in pipes, logs or tests)."""
    if not enabled or total < 20:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="scoring", unit="img", total=total, initial=initial, disable=None,
                leave=False)


if __name__ == "__main__":
    app()
