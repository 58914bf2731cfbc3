"""Streamed results: one row per image, written and flushed as soon as it is scored.

    with ResultsFile.open("scores.csv", resume=True) as out:   # or scores.jsonl
        todo = [p for p in paths if str(p) not in out.done]    # rows kept from an earlier run
        for result in scorer.iter_scores(todo):
            out.write(result)

A run killed after an hour keeps every row it wrote, and ``resume=True`` continues it: the rows
already there are kept (:attr:`ResultsFile.done`), a last line cut short by the kill is dropped
(its image is scored again), and new rows are appended. Rows come in input order, so a resumed
run ends with the same file as an uninterrupted one. This file is appended to on purpose, not
written atomically (a temp file renamed at the end would lose everything on a kill); the
append-only rows and the cut-line rule are what make it safe.

Formats: ``csv`` (header ``path,score,skipped``) and ``jsonl`` (one JSON object per line with
the same keys). Scores are written with Python's ``repr``, which reads back to the same float.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from .scorer import ScoreResult

__all__ = ["COLUMNS", "STREAM_FORMATS", "ResultsFile", "format_row", "parse_row", "stream_format"]

COLUMNS = ("path", "score", "skipped")
STREAM_FORMATS = ("csv", "jsonl")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_CSV_HEADER = ",".join(COLUMNS) + "\n"


def stream_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format of a results file: ``fmt`` when given, else from the suffix (.csv, .jsonl)."""
    if fmt is None:
        fmt = _SUFFIXES.get(Path(path).suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: cannot tell the output format from the suffix; name it "
                             f"*.csv or *.jsonl, or pass --format csv or --format jsonl")
    if fmt not in STREAM_FORMATS:
        raise ValueError(f"{path}: results are streamed as csv or jsonl, not {fmt}; pass "
                         "--format csv or --format jsonl")
    return fmt


def format_row(result: ScoreResult, fmt: str) -> str:
    """One result as one line of ``fmt`` (with its newline)."""
    if fmt == "jsonl":
        return json.dumps({"path": result.path, "score": result.score,
                           "skipped": result.skipped}) + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        [result.path, "" if result.score is None else repr(result.score), result.skipped or ""])
    return buffer.getvalue()


def parse_row(line: str, fmt: str) -> ScoreResult | None:
    """A line written by :func:`format_row` back to its result; None when it is not one."""
    try:
        if fmt == "jsonl":
            data: Any = json.loads(line)
            if not isinstance(data, dict) or set(data) != set(COLUMNS):
                return None
            path, score, skipped = data["path"], data["score"], data["skipped"]
        else:
            fields = next(csv.reader([line]))
            if len(fields) != len(COLUMNS):
                return None
            path, score, skipped = fields[0], fields[1] or None, fields[2] or None
        score = None if score is None else float(score)
    except (ValueError, TypeError, StopIteration, csv.Error):
        return None
    if not isinstance(path, str) or not path or (score is None) == (skipped is None):
        return None
    return ScoreResult(path, score=score, skipped=None if skipped is None else str(skipped))


class ResultsFile:
    """An append-only results file; create with :meth:`open`, use as a context manager."""

    def __init__(self, path: Path, fmt: str, done: dict[str, ScoreResult]) -> None:
        self.path = path
        self.fmt = fmt
        self.done = done  # rows kept from an earlier run, by path, in file order
        self.written = 0  # rows written by this one
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close)
        if fmt == "csv" and self._file.tell() == 0:
            self._file.write(_CSV_HEADER)
            self._file.flush()

    @classmethod
    def open(cls, path: str | os.PathLike, fmt: str | None = None, *,
             resume: bool = False) -> ResultsFile:
        """Open ``path`` to append results.

        Without ``resume`` the file must not already hold results (nothing is overwritten).
        With it, the rows already there are kept and a cut last line is dropped.

        Raises:
            ValueError: one line naming the file and the fix (it exists without ``resume``,
                or it is not a results file of this format).
        """
        path = Path(path)
        fmt = stream_format(path, fmt)
        done: dict[str, ScoreResult] = {}
        if path.is_file() and path.stat().st_size > 0:
            if not resume:
                raise ValueError(f"{path}: already holds results; pass --resume to continue it, "
                                 "or remove it or pick another --output")
            done = _read_and_trim(path, fmt)
        elif path.exists() and not path.is_file():
            raise ValueError(f"{path}: not a file; pick another --output")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, fmt, done)

    def write(self, result: ScoreResult) -> None:
        """Append one row and flush it to the OS, so a kill right after keeps it."""
        self._file.write(format_row(result, self.fmt))
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_and_trim(path: Path, fmt: str) -> dict[str, ScoreResult]:
    """The rows of ``path``; a last line without its newline (cut by a kill) is cut off the file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a cut line
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    if fmt == "csv" and lines:
        if lines[0] + "\n" != _CSV_HEADER:
            raise ValueError(f"{path}: not an agiqa-score csv stream (first line {lines[0][:60]!r}, "
                             f"expected {_CSV_HEADER.strip()!r}); remove it or pick another --output")
        lines = lines[1:]
    done: dict[str, ScoreResult] = {}
    for number, line in enumerate(lines, start=2 if fmt == "csv" else 1):
        result = parse_row(line, fmt)
        if result is None:
            raise ValueError(f"{path}:{number}: not a row of agiqa-score's {fmt} output "
                             f"({line[:60]!r}); fix or delete that line, or pick another --output")
        done[result.path] = result
    return done
