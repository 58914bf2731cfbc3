"""``agiqa-distill run`` killed (SIGKILL) at random instants resumes to the uninterrupted result.

Every stage of a run is restartable: the demo images, the label caches (shards, then their
commit), the demo teacher (``train_metrics.json`` last), the student's checkpoint (new tensors
under a new name, ``state.json`` last, old tensors removed after) and the report. One run folder
folder after another is started afresh and killed at an instant drawn uniformly over an
uninterrupted run's working time, resumed the way a user would (``--resume RUN``, or the original
command when the kill came before the run saved its ``config.json``), and that resume killed in
turn at an instant drawn over what was left of the work; one more run is killed by a hook exactly
between the checkpoint's two files. Every folder must end equal to the uninterrupted run's: the
same metrics, the same training log, bitwise the same student weights (PLCC and RMSE, fitted
by an iterative solver whose last digits follow memory alignment, to a relative 1e-5).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import REPO, metrics_differences

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FOLDERS, KILLS_PER_FOLDER = 6, 2
SETS = ["data.demo_images=40", "data.demo_unlabeled=8", "teacher.train.epochs=1", "teacher.train.maniqa_epochs=1",
        "student.variant=tiny", "train.epochs=5", "train.batch_size=8", "train.threads=1",
        "loss.semantic_components=8", "loss.quality_components=8", "data.val_fraction=0.2",
        "data.test_fraction=0.2", "train.checkpoint_every=1"]
# Runs the CLI with a hook that SIGKILLs the process when it is about to write the N-th checkpoint
# commit point: the new tensors are on disk, the state.json naming them is not.
KILL_BEFORE_COMMIT = """
import os, signal, sys
from pathlib import Path
import distill.train as train
stop_at, seen, real = int(os.environ["AGIQA_TEST_KILL_AT_COMMIT"]), [0], train.atomic_write_json
def commit(path, obj):
    if Path(path).name == "state.json":
        seen[0] += 1
        if seen[0] == stop_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, obj)
train.atomic_write_json = commit
from distill.cli import app
app(prog_name="agiqa-distill")
"""


def _run_args(out: Path) -> list[str]:
    return ["run", *(a for s in [f"out_dir={out}", *SETS] for a in ("--set", s)), "--no-progress"]


def _start(args: list[str], kill_at_commit: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill", *args]
    if kill_at_commit is not None:
        env["AGIQA_TEST_KILL_AT_COMMIT"] = str(kill_at_commit)
        command = [sys.executable, "-c", KILL_BEFORE_COMMIT, *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _continue(run_dir: Path) -> subprocess.Popen:
    """What a user does after a kill: resume the run, or start it again if it had not yet saved its config."""
    if (run_dir / "config.json").is_file():
        return _start(["run", "--resume", str(run_dir), "--no-progress"])
    return _start(_run_args(run_dir))


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _where(output: str, run_dir: Path) -> str:
    """The stage a killed process was in (its last progress line) and the committed checkpoint step."""
    stages = [line.split("]")[0] + "]" for line in output.splitlines() if line.startswith("[")]
    meta = run_dir / "checkpoint" / "state.json"
    step = json.loads(meta.read_text())["step"] if meta.is_file() else None
    return f"{stages[-1] if stages else 'start-up'}, checkpoint step {step}"


def _result(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("seconds"), metrics.pop("run_dir")
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in log:
        record.pop("train_seconds", None)
    return {"metrics": metrics, "log": log}


def _assert_same_run(run_dir: Path, reference: Path, outcomes: list[str] | None = None) -> None:
    """Bitwise the same student weights; the same metrics and log (fitted PLCC/RMSE to 1e-5)."""
    where = "; ".join(outcomes or [])
    for which in ("best", "last"):
        a, b = (load_file(str(d / "student" / which / "model.safetensors")) for d in (run_dir, reference))
        assert a.keys() == b.keys(), (which, where)
        assert [k for k in a if not torch.equal(a[k], b[k])] == [], (which, where)
    assert metrics_differences(_result(run_dir), _result(reference)) == [], where
    checkpoint = sorted(p.name for p in (run_dir / "checkpoint").iterdir())
    assert checkpoint == sorted(["state.json", json.loads((run_dir / "checkpoint/state.json").read_text())["tensors"]])


def test_run_killed_at_random_instants_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    started = time.monotonic()
    proc = _start(_run_args(reference))
    first_line = None
    for _ in proc.stdout:  # the run's working time starts when it prints (imports take seconds)
        first_line = first_line or time.monotonic() - started
    proc.wait()
    assert proc.returncode == 0 and first_line is not None
    duration = time.monotonic() - started

    # Each folder starts afresh, so its first kill lands anywhere in a whole run (a resumed run is
    # shorter: killing only resumes would crowd the kills into the early stages).
    rng = random.Random(20261204)
    outcomes: list[str] = []
    for folder in range(FOLDERS):
        run_dir = tmp_path / f"killed{folder}"
        proc, left = _start(_run_args(run_dir)), duration
        for _ in range(KILLS_PER_FOLDER):
            instant = rng.uniform(first_line * 0.8, max(first_line, left))
            try:
                proc.wait(timeout=instant)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            # Workers must die with the killed process, or they hold its output open forever.
            output, _ = proc.communicate(timeout=120)
            if proc.returncode == 0:  # it finished before the instant came
                outcomes.append(f"folder {folder}: {instant:.2f}s: finished before it")
                break
            assert proc.returncode == -signal.SIGKILL, output[-3000:]
            outcomes.append(f"folder {folder}: {instant:.2f}s: killed in {_where(output, run_dir)}")
            left -= instant - first_line  # a resume pays the start-up again, then does the rest
            proc = _continue(run_dir)
        else:
            _finish(proc)
        _assert_same_run(run_dir, reference, outcomes)
    print("\n".join(outcomes))  # -s shows where the kills landed
    assert sum("killed" in o for o in outcomes) >= FOLDERS, outcomes

    # Killed between the checkpoint's two files: the third commit point is never written.
    hooked = tmp_path / "hooked"
    proc = _start(_run_args(hooked), kill_at_commit=3)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, output[-3000:]
    checkpoint = hooked / "checkpoint"
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2
    assert len(list(checkpoint.glob("state-*.safetensors"))) == 2  # step 2's, and step 3's uncommitted
    _finish(_continue(hooked))
    _assert_same_run(hooked, reference)
