"""One error -> exit code mapping (_agiqa/errors.py) for agiqa-distill, agiqa-export and
agiqa-score: the same kind of failure ends each of them with the same code and one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from _agiqa.errors import (
    EXIT_BAD_INPUT,
    EXIT_CODE_MEANINGS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CheckFailedError,
    exit_code_for,
)
from tests import REPO


class _BelowThreshold(RuntimeError, CheckFailedError):
    """Shaped like export's FidelityError: a RuntimeError that is a failed check."""


ERRORS = [  # (the error a library function raises, the code every command must exit with)
    (ValueError("x.json: not valid JSON; fix the file"), EXIT_BAD_INPUT),
    (FileNotFoundError("x.json: missing; write it first"), EXIT_BAD_INPUT),
    (PermissionError("x.json: not readable"), EXIT_BAD_INPUT),
    (RuntimeError("cache corrupt; delete it"), EXIT_BAD_INPUT),
    (ImportError("the ExecuTorch runtime is not available"), EXIT_BAD_INPUT),
    (_BelowThreshold("fidelity below threshold"), EXIT_FAILED),
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
]


def _run_each_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                      exc: BaseException) -> dict:
    """Each command, with the library function it calls replaced by one that raises ``exc``."""
    import distill.run
    import edge_runtime.cli
    import export.executorch
    from distill.cli import app as distill_app
    from export.cli import app as export_app

    def raise_it(*args, **kwargs):
        raise exc

    monkeypatch.setattr(distill.run, "run_distillation", raise_it)
    monkeypatch.setattr(export.executorch, "export_executorch", raise_it)
    monkeypatch.setattr(edge_runtime.cli.Scorer, "from_file", raise_it)
    runner = CliRunner()
    return {
        "agiqa-distill": runner.invoke(distill_app, ["run", "--set", f"out_dir={tmp_path / 'run'}",
                                                     "--no-progress"]),
        "agiqa-export": runner.invoke(export_app, ["executorch", str(tmp_path), "--out",
                                                   str(tmp_path / "m.pte"), "--quiet"]),
        "agiqa-score": runner.invoke(edge_runtime.cli.app, [str(tmp_path / "a.jpg"), "--model",
                                                            str(tmp_path / "m.pte")]),
    }


@pytest.mark.parametrize("exc, code", ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_the_three_commands_exit_alike_for_the_same_error(monkeypatch, tmp_path, exc, code):
    assert exit_code_for(exc) == code
    results = _run_each_command(monkeypatch, tmp_path, exc)
    assert {name: r.exit_code for name, r in results.items()} == dict.fromkeys(results, code)
    for name, result in results.items():
        assert "Traceback" not in result.output, name
        lines = result.stderr.strip().splitlines()
        if code == EXIT_INTERRUPTED:
            assert lines[-1].startswith("interrupted"), (name, lines)
        else:
            assert len(lines) == 1 and lines[0].startswith("error: ") and str(exc) in lines[0], (name, lines)
    if code != EXIT_INTERRUPTED:  # the scorer names what it could not load
        assert "cannot load" in results["agiqa-score"].stderr


class TorchaoError(RuntimeError):  # stands in for an error class defined in torchao
    __module__ = "torchao.quantization.pt2e"


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory"), TorchaoError("observer"),
                                 KeyError("bug")],
                         ids=lambda e: type(e).__name__)
def test_torch_errors_and_bugs_keep_their_traceback_in_all_three(monkeypatch, tmp_path, exc):
    assert exit_code_for(exc) is None
    for name, result in _run_each_command(monkeypatch, tmp_path, exc).items():
        assert result.exception is exc and result.exit_code == 1, name


def test_usage_errors_exit_2_in_all_three() -> None:
    from distill.cli import app as distill_app
    from edge_runtime.cli import app as score_app
    from export.cli import app as export_app

    runner = CliRunner()
    codes = [runner.invoke(distill_app, ["run", "--no-such-option"]).exit_code,
             runner.invoke(export_app, ["executorch", "--no-such-option"]).exit_code,
             runner.invoke(score_app, ["a.jpg", "--no-such-option"]).exit_code]
    assert codes == [EXIT_BAD_INPUT] * 3


def test_exit_codes_are_documented_in_help_and_readme() -> None:
    from distill.cli import app as distill_app
    from edge_runtime.cli import app as score_app
    from export.cli import app as export_app

    runner = CliRunner()
    for app, args in ((distill_app, ["run", "--help"]), (distill_app, ["label", "--help"]),
                      (distill_app, ["train-teacher", "--help"]), (export_app, ["executorch", "--help"]),
                      (score_app, ["--help"])):
        text = " ".join(runner.invoke(app, args, terminal_width=200).stdout.split())
        assert "Exit codes: 0 done; 1 ran" in text and "130 interrupted" in text, args
    readme = (REPO / "README.md").read_text()
    table = {int(m) for m in re.findall(r"^\| (\d+) \|", readme, flags=re.M)}
    assert table == set(EXIT_CODE_MEANINGS)


@pytest.mark.slow
def test_real_bad_input_exits_2_with_one_line_through_each_command(tmp_path: Path) -> None:
    """The mapping seen from a shell: a missing file given to each command."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = {
        "distill": ["run", "--resume", str(tmp_path / "no_run"), "--no-progress"],
        "export": ["executorch", str(tmp_path / "no_run"), "--out", str(tmp_path / "m.pte"), "--quiet"],
        "edge_runtime": [str(tmp_path / "a.jpg"), "--model", str(tmp_path / "no_model.pte")],
    }
    for module, args in commands.items():
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == EXIT_BAD_INPUT and len(errors) == 1, (module, done.stderr)
        assert "no_run" in errors[0] or "no_model.pte" in errors[0], (module, errors)
        assert "Traceback" not in done.stderr, (module, done.stderr)
