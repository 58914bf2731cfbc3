"""The C++ CLI as a gallery scorer: decoding ahead on a thread pool, streamed results, --resume.

The pipelined rows must equal the one-at-a-time rows byte for byte (same decoder, same program,
in input order), a run killed with SIGKILL and resumed must end with the rows of an uninterrupted
run, and the results files must be the ones agiqa-score writes: either tool resumes the other's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from edge_runtime.results import format_row, parse_row
from tests import REPO
from tests.edge_runtime.cpp.builds import run as _run

pytestmark = [pytest.mark.cpp, pytest.mark.slow]  # builds the C++ scorer


def _gallery(folder: Path, realistic_images, copies: int = 1) -> list[Path]:
    """The realistic crops (as given and as a 1200 x 900 JPEG, JPEG-draft decoded) and the three
    kinds of bad file, each ``copies`` times under its own name, in a fixed order."""
    photos = sorted(realistic_images(folder / "src", count=6).iterdir())
    Image.open(photos[0]).convert("RGB").resize((1200, 900)).save(folder / "src" / "big.jpg", quality=90)
    (folder / "src" / "empty.jpg").write_bytes(b"")
    (folder / "src" / "text.png").write_text("not an image\n")
    sources = sorted((folder / "src").iterdir())
    paths = []
    for k in range(copies):
        for source in sources:
            target = folder / f"{k:03d}_{source.name}"
            os.link(source, target)
            paths.append(target)
    return paths + [folder / "missing.jpg"]


def _python_cli(program: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", "--no-verify-golden", "-m",
                           str(program), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cpp_pipelined_rows_equal_one_at_a_time(host_binary, programs, realistic_images, tmp_path):
    paths = [str(p) for p in _gallery(tmp_path / "g", realistic_images, copies=2)]
    outputs = {}
    for threads in (0, 1, 3):
        for fmt in ("csv", "jsonl"):
            out = tmp_path / f"{threads}.{fmt}"
            done = _run(host_binary, "--decode-threads", str(threads), "-o", str(out),
                        str(programs["int8"]), *paths)
            assert done.returncode == 0, done.stderr
            assert f"wrote {len(paths)} row(s)" in done.stderr
            outputs[threads, fmt] = out.read_text()
        tab = _run(host_binary, "--decode-threads", str(threads), str(programs["int8"]), *paths)
        outputs[threads, "tab"] = tab.stdout
    for fmt in ("csv", "jsonl", "tab"):
        assert outputs[1, fmt] == outputs[0, fmt] and outputs[3, fmt] == outputs[0, fmt], fmt
    rows = [parse_row(line, "csv") for line in outputs[0, "csv"].splitlines()[1:]]
    assert [r.path for r in rows] == paths  # input order
    reasons = {Path(r.path).name: r.skipped for r in rows if not r.ok}
    assert reasons["000_empty.jpg"] == "empty file (0 bytes)" and reasons["missing.jpg"] == "file not found"
    assert "not an image" in reasons["001_text.png"]
    assert sum(r.ok for r in rows) == len(paths) - 5
    # The tab output carries the same scores (%.9g of the same float).
    tab_scores = [float(line.split("\t")[0]) for line in outputs[0, "tab"].splitlines()
                  if not line.startswith("skipped")]
    assert tab_scores == pytest.approx([r.score for r in rows if r.ok], rel=1e-8, abs=0)


def test_cpp_killed_run_resumes_to_the_rows_of_an_uninterrupted_one(host_binary, programs,
                                                                    realistic_images, tmp_path):
    paths = [str(p) for p in _gallery(tmp_path / "g", realistic_images, copies=40)]
    program = str(programs["int8"])
    whole = tmp_path / "whole.jsonl"
    assert _run(host_binary, "-o", str(whole), program, *paths).returncode == 0
    killed = tmp_path / "killed.jsonl"
    run = subprocess.Popen([str(host_binary), "--decode-threads", "1", "-o", str(killed), program,
                            *paths], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        if killed.is_file() and killed.read_bytes().count(b"\n") >= 20:
            run.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    kept = killed.read_text().count("\n")
    assert 20 <= kept < len(paths)
    with killed.open("a") as f:  # what a kill in the middle of a write leaves
        f.write('{"path": "' + paths[kept])
    resumed = _run(host_binary, "--resume", "-o", str(killed), program, *paths)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} image(s) already there, {len(paths) - kept} to score" in resumed.stderr
    assert killed.read_text() == whole.read_text()  # same rows, each once, in input order
    again = _run(host_binary, "--resume", "-o", str(killed), program, *paths)
    assert "wrote 0 row(s)" in again.stderr and killed.read_text() == whole.read_text()
    refused = _run(host_binary, "-o", str(killed), program, *paths)
    assert refused.returncode == 2 and "already holds results; pass --resume" in refused.stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_python_and_cpp_resume_each_others_results(host_binary, programs, realistic_images,
                                                   tmp_path, fmt):
    paths = [str(p) for p in _gallery(tmp_path / "g", realistic_images)]
    # Paths as a user types them; both tools write str(Path(p)).
    typed = [p.replace("/g/", "/g//./") for p in paths]
    half = len(paths) // 2
    program = programs["int8"]
    cpp_first, python_first, python_only = (tmp_path / f"{n}.{fmt}" for n in ("c", "p", "o"))
    assert _run(host_binary, "-o", str(cpp_first), str(program), *typed[:half]).returncode == 0
    done = _python_cli(program, "--resume", "-o", str(cpp_first), *typed)
    assert done.returncode == 0 and f"{half} image(s) already there" in done.stderr, done.stderr
    assert _python_cli(program, "-o", str(python_first), *typed[:half]).returncode == 0
    done = _run(host_binary, "--resume", "-o", str(python_first), str(program), *typed)
    assert done.returncode == 0 and f"{half} image(s) already there" in done.stderr, done.stderr
    assert _python_cli(program, "-o", str(python_only), *typed).returncode == 0

    def rows(path: Path) -> list:
        lines = path.read_text().splitlines()[1 if fmt == "csv" else 0:]
        parsed = [parse_row(line, fmt) for line in lines]
        for line, row in zip(lines, parsed):  # the text Python would write for the same row
            assert row is not None and format_row(row, fmt) == line + "\n", line
        return parsed

    expected = rows(python_only)
    assert [r.path for r in expected] == paths
    for mixed in (rows(cpp_first), rows(python_first)):
        assert [(r.path, r.ok) for r in mixed] == [(r.path, r.ok) for r in expected]
        for got, want in zip(mixed, expected):  # C++ decoding matches Python's within 1e-5
            if got.ok:
                assert abs(got.score - want.score) <= 1e-5, got.path
            elif not got.path.endswith("text.png"):  # each decoder words "not an image" its own way
                assert got.skipped == want.skipped, got.path


def test_cpp_results_options_fail_in_one_line(host_binary, programs, tmp_path):
    photo = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(photo)
    program = str(programs["int8"])
    for args, expected in (
            (["-o", str(tmp_path / "out.txt")], "cannot tell the output format from the suffix"),
            (["--resume"], "--resume continues an --output file"),
            (["--format", "tsv"], "results are streamed as csv or jsonl"),
            (["--decode-threads", "-1"], "--decode-threads takes a count >= 0")):
        done = _run(host_binary, *args, program, str(photo))
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("rank,path,score\n")
    done = _run(host_binary, "--resume", "-o", str(bad), program, str(photo))
    assert done.returncode == 2 and "not an agiqa-score csv stream" in done.stderr


def test_cpp_jsonl_escapes_paths_as_python_json_dumps(host_binary, programs, tmp_path):
    """One escaper for the v1 digest and the results (contract_v1.h): a DEL, a non-ASCII letter,
    a character above U+FFFF and a byte that is not UTF-8 are written as json.dumps writes them."""
    names = [b"del\x7f.jpg", "caf\u00e9.jpg".encode(), "\U0001f600.jpg".encode(), b"bad\xff.jpg"]
    paths = [os.fsencode(tmp_path) + b"/" + name for name in names]  # missing files: one row each
    out = tmp_path / "rows.jsonl"
    done = subprocess.run([str(host_binary), "-o", str(out), "--format", "jsonl", str(programs["int8"]), *paths],
                          capture_output=True, timeout=300)
    assert done.returncode == 1 and b"skipped 4" in done.stderr, done.stderr  # nothing scored: exit 1
    lines = out.read_bytes().decode("ascii").splitlines()
    expected = [json.dumps(os.fsdecode(p)) for p in paths]
    assert [line.split(", ")[0].removeprefix('{"path": ') for line in lines] == expected
