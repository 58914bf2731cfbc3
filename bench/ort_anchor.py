"""ONNX Runtime beside our ExecuTorch programs: the runtime a user would otherwise pick.

``bench/edge_latency.py --ort`` uses these helpers to export the same student (the same
``EdgeStudent`` wrapper the ``.pte`` files are built from) to ONNX, quantize it the way ONNX
Runtime recommends for CPUs (static QDQ, int8 per-channel weights, calibrated on the same
images as our int8 program), and run both with the same thread count. Needs the ``bench``
extra (``pip install -e .[bench]``); nothing in the library imports this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["export_onnx", "quantize_onnx", "ort_runner"]


def _require_ort() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"--ort needs onnx and onnxruntime ({exc}): pip install -e '.[bench]'") from None


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``module`` ((1, 3, H, W) -> outputs) as an ONNX file (TorchScript exporter, opset 17)."""
    _require_ort()
    with torch.no_grad():
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"])
    return path


def quantize_onnx(fp32_path: Path, out: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static int8 (QDQ, per-channel weights) of ``fp32_path``, calibrated on ``calibration``
    (preprocessed ``(1, 3, H, W)`` float32 arrays: the images our int8 program calibrates on)."""
    _require_ort()
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    ort.set_default_logger_severity(3)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {"input": np.ascontiguousarray(item, np.float32)}

    quantize_static(str(fp32_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return out


def ort_runner(path: Path, threads: int) -> Callable[[np.ndarray], float]:
    """A function scoring one preprocessed ``(1, 3, H, W)`` array with ONNX Runtime on the CPU,
    ``threads`` intra-op threads (as our runtime's pool), one inter-op thread."""
    _require_ort()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # errors only: no line per unused initializer
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> float:
        return float(session.run(None, {name: x})[0].reshape(-1)[0])
    return run
