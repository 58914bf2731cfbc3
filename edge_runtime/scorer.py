"""Score photos with an exported program: a thin typed wrapper over the ExecuTorch runtime.

    scorer = Scorer.from_file("model.pte")       # model.json, both digests, golden pairs, loads once
    scorer.score("photo.jpg")                    # -> float
    scorer.rank(["a.jpg", "b.png"])             # -> [ScoreResult], best first, skipped last
    for r in scorer.iter_scores(paths):          # in input order, as each is scored: decoding
        ...                                      #   runs ahead on a thread pool (flat memory)

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
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _agiqa.quiet import quiet_toolchain

from .camera import CameraFrame, preprocess_frame
from .contract import CONTRACT_METHOD, ContractError, ModelContract, read_program
from .golden import GoldenCheck, GoldenError, GoldenReport, check_golden, golden_path
from .images import IMAGE_SUFFIXES, ImageLoadError, find_images, load_image
from .preprocess import _FILTERS, normalize, pillow_resize

__all__ = ["IMAGE_SUFFIXES", "RuntimeUnavailableError", "ScoreResult", "Scorer", "find_images",
           "default_decode_threads", "rank_results"]


def default_decode_threads() -> int:
    """Decode threads of a gallery run: two, or one on a single core. Decoding (Pillow,
    DCT-scaled JPEG) and the resize release the GIL, so two threads keep a 2-core device's
    program fed; more only compete with the runtime's own threads (bench/gallery.py)."""
    return max(1, min(2, os.cpu_count() or 1))


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
        # The golden check done at load; None when skipped or when the program has no golden
        # file (exported before golden pairs existed): see :attr:`golden_checked`.
        self.golden_report: GoldenReport | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None, *,
                  verify_golden: bool | str | GoldenCheck = True) -> Scorer:
        """Load ``path`` (a .pte) and its ``model.json``; ``threads`` sets the runtime pool.

        ``verify_golden``: reproduce ``model.golden.safetensors`` before returning, as the C++
        ``agiqa::Scorer::load`` does (:func:`edge_runtime.golden.check_golden`). ``True``
        (default, C++ ``IfPresent``): check it when it is there; a program exported before
        golden pairs existed has none and loads unchecked (``golden_report`` stays None).
        ``"required"``: refuse a program without it. ``False``: never check (benchmarks, or
        diagnosing a refused program).

        Raises:
            ContractError: model.json missing, malformed, edited, or not this program's, or
                the program is corrupt (re-export).
            GoldenError: (a ContractError) the golden pairs are not reproduced (this CPU or
                runtime computes wrong outputs, or the golden file was edited), or the golden
                file is malformed or another program's.
            RuntimeUnavailableError: the ExecuTorch native extension cannot be imported.
        """
        path = Path(path)
        golden = GoldenCheck.of(verify_golden)
        data, contract = read_program(path)  # before the slow import: fail fast on bad files
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        gpath = golden_path(path)
        if golden is GoldenCheck.REQUIRED and not gpath.is_file():
            raise GoldenError(f"{gpath}: missing; re-export the program (agiqa-export writes it) "
                              "or load with the golden check off")
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
            if golden is not GoldenCheck.SKIP and gpath.is_file():
                scorer._verify_golden(gpath)
        return scorer

    def _verify_golden(self, gpath: Path) -> None:
        """Refuse, in one line, a program whose golden pairs this runtime does not reproduce."""
        report = check_golden(gpath, self.contract, self.contract.preprocess, self.run,
                              self.preprocess_frame)
        if not report.passed:
            raise GoldenError(f"{self.path}: refused: {report.failure} (pairs in {gpath}); see "
                              "docs/edge.md (Golden pairs, SME); re-export the program if the "
                              "golden file was edited, or load with verify_golden=False "
                              "(agiqa-score --no-verify-golden) to score anyway")
        self.golden_report = report

    @property
    def golden_checked(self) -> bool:
        """Whether the golden pairs were reproduced at load (False: skipped, or no file)."""
        return self.golden_report is not None

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
        return self._load_input(image)

    def preprocess_frame(self, frame: CameraFrame, *, rotation: int = 0,
                         crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A camera frame (YUV 4:2:0 or RGBA/BGRA, :mod:`edge_runtime.camera`), rotated
        clockwise by ``rotation`` and cropped to ``crop = (left, top, width, height)`` (buffer
        coordinates) -> ``(3, H, W) float32``, by the camera rule the C++ scorer reproduces."""
        return preprocess_frame(self.contract.preprocess, frame, rotation=rotation, crop=crop)

    def score_frame(self, frame: CameraFrame, *, rotation: int = 0,
                    crop: tuple[int, int, int, int] | None = None) -> float:
        """Score one camera frame (see :meth:`preprocess_frame`)."""
        return self._score_tensor(self.preprocess_frame(frame, rotation=rotation, crop=crop))

    def _load_input(self, path: str | os.PathLike) -> np.ndarray:
        """``spec.load(path)``, the same values bit for bit, with the resize done in Pillow on
        the decoded image: no copies into and out of numpy of a multi-megapixel photo (a
        third of the time of a 12 MP JPEG). ``resize_rgb`` does the same Pillow call."""
        spec = self.contract.preprocess
        image = load_image(path, min_size=spec.input_size if spec.jpeg_draft else None)
        if spec.interpolation not in _FILTERS:  # cv2_bicubic works on arrays
            return spec(np.asarray(image))
        return normalize(np.asarray(pillow_resize(image, spec.input_size, spec.interpolation)), spec.mean, spec.std)

    def score(self, image: str | os.PathLike | np.ndarray) -> float:
        """Score one image. Raises ``ImageLoadError`` when a file cannot be decoded."""
        return self._score_tensor(self.preprocess(image))

    def _prepare(self, path: str | os.PathLike) -> np.ndarray | str:
        """Decode and preprocess ``path`` (any thread): ``(3, H, W) float32``, or the skip reason."""
        try:
            return self.preprocess(path)
        except ImageLoadError as exc:
            return exc.reason
        except Exception as exc:  # a decoder bug must not abort a batch of 10,000 photos
            return f"unexpected decode error ({exc!r})"

    def _result(self, path: str | os.PathLike, prepared: np.ndarray | str) -> ScoreResult:
        if isinstance(prepared, str):
            return ScoreResult(str(path), skipped=prepared)
        return ScoreResult(str(path), score=self._score_tensor(prepared))

    def iter_scores(self, paths: Iterable[str | os.PathLike], *, decode_threads: int | None = None,
                    window: int | None = None) -> Iterator[ScoreResult]:
        """Score ``paths`` in input order, yielding each result as soon as it is scored.

        ``decode_threads`` threads decode and preprocess the next images while the program
        runs on the current one (default :func:`default_decode_threads`; 0: decode in the
        calling thread, one image at a time). At most ``window`` images (default
        ``2 * decode_threads``) are decoded ahead and ``paths`` is read only that far ahead,
        so memory stays flat however many paths there are. Scores are those of :meth:`score`
        on each path, bit for bit: the same decode, preprocessing and program, in order.
        An unreadable image yields a skipped result with its reason.
        """
        threads = default_decode_threads() if decode_threads is None else int(decode_threads)
        if threads < 0:
            raise ValueError(f"decode_threads must be >= 0, got {decode_threads}")
        if threads == 0:
            for path in paths:
                yield self._result(path, self._prepare(path))
            return
        window = 2 * threads if window is None else int(window)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        source = iter(paths)
        pending: deque = deque()  # (path, future), in input order
        pool = ThreadPoolExecutor(threads, thread_name_prefix="agiqa-decode")
        try:
            for path in source:
                pending.append((path, pool.submit(self._prepare, path)))
                if len(pending) >= window:
                    break
            while pending:
                path, future = pending.popleft()
                following = next(source, None)  # keep the window full while this one runs
                if following is not None:
                    pending.append((following, pool.submit(self._prepare, following)))
                yield self._result(path, future.result())
        finally:  # also when the caller stops early or Ctrl-C lands: drop what is queued
            pool.shutdown(wait=True, cancel_futures=True)

    def score_many(self, paths: Iterable[str | os.PathLike], *,
                   decode_threads: int | None = None) -> list[ScoreResult]:
        """Score every path, in order (pipelined: :meth:`iter_scores`); an unreadable image
        is skipped with its reason."""
        return list(self.iter_scores(paths, decode_threads=decode_threads))

    def rank(self, paths: Iterable[str | os.PathLike], *,
             decode_threads: int | None = None) -> list[ScoreResult]:
        """Scored images best first (respecting ``lower_better``), then the skipped ones."""
        return rank_results(self.score_many(paths, decode_threads=decode_threads),
                            self.contract.lower_better)


def rank_results(results: Sequence[ScoreResult], lower_better: bool) -> list[ScoreResult]:
    """Best first; ties keep input order; skipped results last, in input order."""
    scored = [r for r in results if r.ok]
    scored.sort(key=lambda r: r.score if lower_better else -r.score)
    return scored + [r for r in results if not r.ok]
