"""The gallery pipeline: decoding ahead on threads, bounded read-ahead, streamed and resumable output.

Uses the micro program of tests/edge_runtime/micro.py (a strided conv + linear, lowered in about
a second). Speed is measured by bench/gallery.py, never here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime import Scorer, ScoreResult
from edge_runtime.cli import app as score_app
from edge_runtime.results import ResultsFile, format_row, parse_row
from tests import REPO
from tests.edge_runtime.micro import make_corpus, photo


@pytest.fixture(scope="module")
def scorer(program) -> Scorer:
    return Scorer.from_file(program, threads=1)


def gallery(folder: Path, count: int = 12, size: tuple[int, int] = (160, 120)) -> list[Path]:
    """``count`` JPEG/PNG views of a real photo (rotated, so their scores differ), plus a text
    file and an empty file among them (skipped); sorted as a folder scan returns them."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(size)
    for i in range(count):
        image = base.rotate(7 * i, expand=False)
        image.save(folder / f"{i:03d}.{'png' if i % 3 == 0 else 'jpg'}", quality=90)
    (folder / "004b.jpg").write_text("not a photo\n")
    (folder / "008b.png").write_bytes(b"")
    return sorted(p for p in folder.iterdir())


def one_at_a_time(scorer: Scorer, paths: list[Path]) -> list[ScoreResult]:
    """The reference: main's loop, each image decoded then scored in the calling thread."""
    from edge_runtime.images import ImageLoadError

    results = []
    for path in paths:
        try:
            results.append(ScoreResult(str(path), score=scorer.score(path)))
        except ImageLoadError as exc:
            results.append(ScoreResult(str(path), skipped=exc.reason))
    return results


def test_pipelined_scores_equal_one_at_a_time(scorer, tmp_path):
    paths = gallery(tmp_path / "g")
    expected = one_at_a_time(scorer, paths)
    assert sum(r.ok for r in expected) == 12 and len({r.score for r in expected if r.ok}) == 12
    for threads in (0, 1, 3):
        assert scorer.score_many(paths, decode_threads=threads) == expected, threads  # bit for bit
    ranked = scorer.rank(paths, decode_threads=2)
    assert [r.score for r in ranked if r.ok] == sorted((r.score for r in expected if r.ok), reverse=True)
    with pytest.raises(ValueError, match="decode_threads"):
        scorer.score_many(paths, decode_threads=-1)


def test_scorer_decode_path_equals_the_spec(scorer, tmp_path):
    """The Scorer resizes in Pillow without the numpy round trip: the same input, bit for bit,
    as ``PreprocessSpec.load`` (training, export, golden pairs), for every kind of file."""
    expected = make_corpus(tmp_path)
    photo((1024, 768)).save(tmp_path / "large.jpg", quality=90)  # JPEG draft decode (1/4)
    photo((64, 64)).save(tmp_path / "exact.png")  # already the input size: no resize
    spec = scorer.contract.preprocess
    for name in [n for n, reason in expected.items() if reason is None] + ["large.jpg", "exact.png"]:
        np.testing.assert_array_equal(scorer.preprocess(tmp_path / name), spec.load(tmp_path / name),
                                      err_msg=name)
    from edge_runtime.images import load_rgb

    rgb = load_rgb(tmp_path / "large.jpg", min_size=spec.input_size)
    assert rgb.flags.writeable and rgb.shape == (192, 256, 3)  # its own, writable pixels


def test_read_ahead_is_bounded(scorer, tmp_path):
    """Memory stays flat: the input is read at most ``window`` paths ahead of the results."""
    paths = gallery(tmp_path / "g", count=10)
    pulled = 0

    def source():
        nonlocal pulled
        for path in paths:
            pulled += 1
            yield path

    leads = []
    for k, _ in enumerate(scorer.iter_scores(source(), decode_threads=2, window=3)):
        leads.append(pulled - (k + 1))
    assert len(leads) == len(paths)
    assert max(leads) == 3 and leads[0] == 3  # it does read ahead, never beyond the window
    # Stopping early leaves no thread busy with the rest.
    pulled = 0
    first = next(iter(scorer.iter_scores(source(), decode_threads=2, window=2)))
    assert first.ok and pulled == 3


def test_results_file_rows_round_trip_and_cut_lines(tmp_path):
    rows = [ScoreResult("a,b.jpg", score=0.1 + 0.2), ScoreResult('q"uote.png', skipped="empty file (0 bytes)"),
            ScoreResult("ünï.jpg", score=-1e-30)]
    for fmt in ("csv", "jsonl"):
        for r in rows:
            assert parse_row(format_row(r, fmt), fmt) == r  # scores read back bit for bit
        path = tmp_path / f"out.{fmt}"
        with ResultsFile.open(path) as out:
            for r in rows:
                out.write(r)
        whole = path.read_bytes()
        path.write_bytes(whole + format_row(ScoreResult("cut.jpg", score=0.5), fmt).encode()[:7])
        with pytest.raises(ValueError, match="already holds results; pass --resume"):
            ResultsFile.open(path)
        with ResultsFile.open(path, resume=True) as out:
            assert list(out.done.values()) == rows
        assert path.read_bytes() == whole  # the cut line is gone, the rest kept
    (tmp_path / "x.csv").write_text("rank,path,score,skipped\n1,a.jpg,0.5,\n")
    with pytest.raises(ValueError, match="not an agiqa-score csv stream"):
        ResultsFile.open(tmp_path / "x.csv", resume=True)
    (tmp_path / "y.jsonl").write_text('{"path": "a.jpg", "score": 0.5, "skipped": null}\nnonsense\n')
    with pytest.raises(ValueError, match=r"y.jsonl:2: not a row"):
        ResultsFile.open(tmp_path / "y.jsonl", resume=True)
    with pytest.raises(ValueError, match="suffix"):
        ResultsFile.open(tmp_path / "z.txt")


def _cli(*args: str, slow: bool = False) -> subprocess.Popen:
    """``agiqa-score ARGS`` in a subprocess; ``slow``: each decode sleeps 50 ms first, so a
    kill lands mid-run (the code under test is unchanged; only the decoder is slowed)."""
    patch = ("import time, edge_runtime.scorer as p\nreal = p.load_image\n"
             "def slow(*a, **k):\n    time.sleep(0.05)\n    return real(*a, **k)\n"
             "p.load_image = slow\n") if slow else ""
    code = patch + "from edge_runtime.cli import app\napp(prog_name='agiqa-score')\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_killed_run_resumes_to_the_uninterrupted_output(program, tmp_path, fmt):
    folder = tmp_path / "photos"
    paths = gallery(folder, count=40, size=(96, 72))
    full, part = tmp_path / f"full.{fmt}", tmp_path / f"part.{fmt}"
    done = _cli(str(folder), "-m", str(program), "-o", str(full))
    _, err = done.communicate(timeout=180)
    assert done.returncode == 0 and f"wrote {len(paths)} row(s)" in err, err

    victim = _cli(str(folder), "-m", str(program), "-o", str(part), "--decode-threads", "1", slow=True)
    deadline = time.monotonic() + 120
    while not part.exists() or part.read_text().count("\n") < 6:
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    kept = part.read_bytes()
    assert 0 < kept.count(b"\n") < len(paths), kept  # killed mid-way, rows flushed as they came
    assert full.read_bytes().startswith(kept)
    cut = kept.rfind(b"\n", 0, len(kept) - 1) + 1
    part.write_bytes(kept[: cut + (len(kept) - cut) // 2])  # as if the kill landed mid-write

    resumed = _cli(str(folder), "-m", str(program), "-o", str(part), "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0 and "resuming" in err, err
    assert part.read_bytes() == full.read_bytes()
    assert f"scored {len(paths) - 2} image(s), skipped 2" in err


def test_cli_streams_jsonl_and_refuses_contradictions(program, tmp_path):
    paths = gallery(tmp_path / "g", count=4)
    runner = CliRunner()
    out = runner.invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "-f", "jsonl",
                                    "--order", "input", "--decode-threads", "2"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    reference = Scorer.from_file(program).score(paths[1])
    assert rows[1]["score"] == reference and rows[-1]["skipped"] == "empty file (0 bytes)"
    bad = runner.invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "-o",
                                    str(tmp_path / "o.csv"), "--order", "rank"])
    assert bad.exit_code == 2 and "input order" in bad.output
    bad = runner.invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "--resume"])
    assert bad.exit_code == 2 and "--output" in bad.output
    bad = runner.invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "-o", str(tmp_path / "o.txt")])
    assert bad.exit_code == 2 and "suffix" in bad.stderr and not (tmp_path / "o.txt").exists()
    assert np.isfinite(reference)


def test_cli_output_keeps_an_existing_file(program, tmp_path):
    gallery(tmp_path / "g", count=3)
    existing = tmp_path / "scores.csv"
    existing.write_text("path,score,skipped\nsomething.jpg,0.25,\n")
    result = CliRunner().invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "-o", str(existing)])
    assert result.exit_code == 2 and "--resume" in result.stderr
    assert existing.read_text() == "path,score,skipped\nsomething.jpg,0.25,\n"
    Image.new("RGB", (8, 8)).save(tmp_path / "g" / "new.png")
    result = CliRunner().invoke(score_app, [str(tmp_path / "g"), "-m", str(program), "-o",
                                            str(existing), "--resume"])
    assert result.exit_code == 0 and existing.read_text().count("\n") == 2 + 6
