"""Score photos with an exported program: a thin typed wrapper over the ExecuTorch runtime.

    scorer = Scorer.from_file("model.pte")       # reads model.json, checks its sha256, loads once
    scorer.score("photo.jpg")                    # -> float
    scorer.rank(["a.jpg", "b.png"])             # -> [ScoreResult], best first, skipped last

Everything model specific (preprocessing, input shape, output names, score direction) comes
from the contract; nothing is hard-coded here. ``executorch.runtime`` (which imports torch)
is imported on the first :meth:`Scorer.from_file`, never at ``import edge_runtime``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _agiqa.quiet import quiet_toolchain

from .contract import CONTRACT_METHOD, ContractError, ModelContract, read_program
from .images import IMAGE_SUFFIXES, ImageLoadError, find_images

__all__ = ["IMAGE_SUFFIXES", "RuntimeUnavailableError", "ScoreResult", "Scorer", "find_images",
           "rank_results"]


class RuntimeUnavailableError(ImportError):
    """The ExecuTorch runtime (native extension) cannot be imported."""


@dataclass(frozen=True)
class ScoreResult:
    """One image's outcome: a score, or the reason it was skipped (never both)."""

    path: str
    score: float | None = None
    skipped: str | None = None  # short reason, e.g. "empty file (0 bytes)"

    @property
    def ok(self) -> bool:
        return self.score is not None


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the runtime's start-up chatter (torch pytree warnings, torchao's missing CUDA
    kernels, XNNPACK's cpuinfo lines written by C++ straight to file descriptor 2).

    Both Python's ``sys.stderr`` and fd 2 go to a temporary file; if the block raises, what
    was captured is replayed to stderr, so a real error message is never lost, unless it is
    a :class:`ContractError` (our one-line message already says what went wrong). Yields a
    function that returns what was captured so far.
    """
    quiet_toolchain()
    sys.stderr.flush()
    saved_stream, saved_fd = sys.stderr, os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
        failed = False

        def captured() -> str:
            sys.stderr.flush()
            # pread: the capture's file offset is shared with fd 2 and must not move.
            return os.pread(capture.fileno(), 1 << 16, 0).decode("utf-8", errors="replace")

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield captured
        except ContractError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.close()
            saved_stream.flush()  # chatter buffered in the real stream goes to the capture too
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.stderr = saved_stream
            if failed:
                capture.seek(0)
                sys.stderr.write(capture.read().decode("utf-8", errors="replace"))


def _import_runtime() -> tuple[Any, Any]:
    """``(executorch.runtime.Runtime, torch)``, imported quietly, with a clear error."""
    try:
        with _quiet_stderr():
            import torch
            from executorch.runtime import Runtime
    except (ImportError, OSError) as exc:
        raise RuntimeUnavailableError(
            f"the ExecuTorch runtime is not available ({exc}). Install the pinned toolchain "
            "(pip install executorch==1.5.1 torch==2.14.1), or run the .pte with the C++, "
            "Android or iOS ExecuTorch runtime (docs/edge.md)") from None
    return Runtime, torch


def _set_threads(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is None:
        raise RuntimeUnavailableError("this ExecuTorch build cannot set its thread count")
    reset(int(threads))


class Scorer:
    """A loaded program plus its contract. Create with :meth:`from_file`."""

    def __init__(self, path: Path, contract: ModelContract, program: Any, torch: Any) -> None:
        self.path = path
        self.contract = contract
        self._program = program  # owns the method's memory: must live as long as the method
        self._method = program.load_method("forward")
        self._torch = torch

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None) -> Scorer:
        """Load ``path`` (a .pte) and its ``model.json``; ``threads`` sets the runtime pool.

        Raises:
            ContractError: model.json missing, malformed, edited, or not this program's, or
                the program is corrupt (re-export).
            RuntimeUnavailableError: the ExecuTorch native extension cannot be imported.
        """
        path = Path(path)
        data, contract = read_program(path)  # before the slow import: fail fast on bad files
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        runtime, torch = _import_runtime()
        with _quiet_stderr() as captured:
            if threads is not None:
                _set_threads(threads)
            try:
                program = runtime.get().load_program(data)
                scorer = cls(path, contract, program, torch)
            except RuntimeError as exc:  # "Failed to load program, error: 0x:23" and the like
                # The runtime logs the reason ("[program.cpp:114] File size is too small...").
                lines = [ln for ln in captured().splitlines() if ln.strip()]
                reason = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]) if lines else ""
                raise ContractError(f"{path}: not a loadable ExecuTorch program ({exc}"
                                    f"{': ' + reason if reason else ''}); the file is truncated "
                                    "or corrupt: re-export it") from None
            scorer._check_embedded_contract()
            scorer._check_signature(scorer._method.metadata)
            # The first run sets XNNPACK up (and prints cpuinfo lines): pay it here, quietly.
            scorer.run(np.zeros(contract.input_shape, np.float32))
        return scorer

    def _check_embedded_contract(self) -> None:
        """The program carries its contract's digest: refuse a model.json it was not built with."""
        if CONTRACT_METHOD not in self._program.method_names:
            raise ContractError(f"{self.path}: the program carries no contract digest (exported "
                                "by an older agiqa-export); re-export it")
        try:
            embedded = self._program.load_method(CONTRACT_METHOD).execute([])[0]
        except (RuntimeError, IndexError) as exc:
            raise ContractError(f"{self.path}: cannot read the program's contract digest ({exc}); "
                                "re-export it") from None
        if embedded != self.contract.contract_sha256:
            raise ContractError(f"{self.path}: model.json is not the contract this program was "
                                "exported with (contract_sha256 differs from the digest inside "
                                "the program); restore the exported model.json or re-export it")

    def _check_signature(self, meta: Any) -> None:
        expected = list(self.contract.input_shape)
        try:
            actual = list(meta.input_tensor_meta(0).sizes())
            outputs = meta.num_outputs()
        except (AttributeError, TypeError):  # metadata API moved; the run itself will tell
            return
        if actual != expected or outputs != len(self.contract.output_names):
            raise ValueError(f"{self.path}: program takes {actual} and returns {outputs} outputs, "
                             f"but model.json says {expected} and {list(self.contract.output_names)}; "
                             "re-export it")

    # -- the model ---------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.contract.preprocess.input_size)

    @property
    def lower_better(self) -> bool:
        return self.contract.lower_better

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the program on a preprocessed ``(1, 3, H, W) float32`` batch; outputs by name."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if list(batch.shape) != list(self.contract.input_shape):
            raise ValueError(f"input shape {list(batch.shape)} != contract input_shape "
                             f"{list(self.contract.input_shape)}")
        outputs = self._method.execute([self._torch.from_numpy(batch)])
        return {name: np.asarray(out.detach().numpy() if hasattr(out, "detach") else out)
                for name, out in zip(self.contract.output_names, outputs)}

    def _score_tensor(self, tensor: np.ndarray) -> float:
        """The score of one preprocessed ``(3, H, W)`` image."""
        return float(self.run(tensor[None])[self.contract.score_output].reshape(-1)[0])

    # -- images ------------------------------------------------------------------------------
    def preprocess(self, image: str | os.PathLike | np.ndarray) -> np.ndarray:
        """A path (decoded with EXIF, draft rule) or an ``(H, W, 3) uint8`` RGB array -> ``(3, H, W)``."""
        spec = self.contract.preprocess
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} "
                                 f"{tuple(image.shape)}")
            return spec(image)
        return spec.load(image)

    def score(self, image: str | os.PathLike | np.ndarray) -> float:
        """Score one image. Raises ``ImageLoadError`` when a file cannot be decoded."""
        return self._score_tensor(self.preprocess(image))

    def score_many(self, paths: Iterable[str | os.PathLike]) -> list[ScoreResult]:
        """Score every path in order; an unreadable image is skipped with its reason."""
        results = []
        for path in paths:
            try:
                tensor = self.preprocess(path)
            except ImageLoadError as exc:
                results.append(ScoreResult(str(path), skipped=exc.reason))
                continue
            except Exception as exc:  # a decoder bug must not abort a batch of 10,000 photos
                results.append(ScoreResult(str(path), skipped=f"unexpected decode error ({exc!r})"))
                continue
            results.append(ScoreResult(str(path), score=self._score_tensor(tensor)))
        return results

    def rank(self, paths: Iterable[str | os.PathLike]) -> list[ScoreResult]:
        """Scored images best first (respecting ``lower_better``), then the skipped ones."""
        return rank_results(self.score_many(paths), self.contract.lower_better)


def rank_results(results: Sequence[ScoreResult], lower_better: bool) -> list[ScoreResult]:
    """Best first; ties keep input order; skipped results last, in input order."""
    scored = [r for r in results if r.ok]
    scored.sort(key=lambda r: r.score if lower_better else -r.score)
    return scored + [r for r in results if not r.ok]
