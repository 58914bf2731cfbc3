"""Reading a checkpoint file into a plain ``{name: tensor}`` state dict, whatever tool saved it.

safetensors, or ``torch.save`` files read with ``weights_only=True``: bare state dicts, pyiqa /
BasicSR wrappers, DataParallel's ``module.`` prefixes, a pyiqa metric's own state dict. Full
unpickling only behind the caller's ``allow_pickle``. Whether the result fits a model is
:mod:`_agiqa.checkpoints`' one-line report.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

__all__ = ["read_state_dict"]

_WRAPPER_KEYS = ("params", "params_ema", "state_dict", "model")  # pyiqa/BasicSR save {'params': state_dict}
_PYIQA_EXTRAS = ("dummy_param",)  # pyiqa InferenceModel's device marker, not part of the network


def _is_safetensors(path: Path) -> bool:  # 8-byte little-endian header length, then a JSON header
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Read a plain ``{name: tensor}`` state dict from a checkpoint file, ``module.`` prefixes stripped.

    Accepts safetensors; ``torch.save`` state dicts (read with ``weights_only=True``), bare or wrapped in
    ``params`` (pyiqa/BasicSR), ``params_ema``, ``state_dict`` or ``model``; a pyiqa metric's own
    ``create_metric(...).state_dict()`` (``net.`` prefix stripped, its ``dummy_param`` dropped); and, only with
    ``allow_pickle=True``, a state dict pickled beside non-tensor objects (e.g. training options) that
    ``weights_only`` refuses. Unpickling can run arbitrary code: use it for trusted files only. A whole pickled
    model (``torch.save(net)``) is refused: save its ``state_dict()`` where its code is importable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if _is_safetensors(path):
        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not allow_pickle:
                raise ValueError(f"{path}: needs full unpickling (it holds more than tensors), "
                                 "which can run arbitrary code; if you trust this file pass allow_pickle=True "
                                 "(CLI: --allow-pickle)") from err
            warnings.warn(f"unpickling {path} with allow_pickle=True: this can execute arbitrary code", stacklevel=2)
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc:  # e.g. a whole model whose classes are not importable here
                raise ValueError(f"{path}: cannot be unpickled ({type(exc).__name__}: {exc}); save the "
                                 "model's state_dict() where its code is importable") from None
    if isinstance(obj, dict):
        obj = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict; save the model's "
                         "state_dict() instead")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict, non-tensor entries {bad[:5]}")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    # pyiqa: create_metric(...).state_dict() holds the network under `net.` beside the
    # InferenceModel's own empty `dummy_param`; the network's keys are the official ones.
    if any(k.startswith("net.") for k in state) and all(k.startswith("net.") or k in _PYIQA_EXTRAS for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return state
