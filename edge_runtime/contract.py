"""The contract of an exported program: ``model.json`` beside ``model.pte`` (same stem).

The .pte holds only tensors-in, tensors-out. Everything the device needs to feed it and read
it (preprocessing, input shape, output names, score range and direction) and everything a
person needs to trust it (fingerprints, quantization settings, library versions) lives in the
contract, written by ``agiqa-export`` and read by :class:`edge_runtime.Scorer`.

Both files protect each other: the contract holds the sha256 of the .pte, and the .pte holds
the sha256 of the contract (``contract_sha256``, over every field but the program's own hash
and size, returned by the program's constant method ``agiqa_contract_sha256``). An edited
mean/std or ``lower_better``, or a program and a contract from different exports, are refused
instead of silently mis-scored. No torch here: the device side reads it with json.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from _agiqa.atomic import atomic_write_json

from .preprocess import PreprocessSpec

__all__ = ["CONTRACT_FORMAT", "CONTRACT_METHOD", "FORMAT_VERSION", "ContractError", "ModelContract",
           "contract_digest", "contract_path", "report_path", "sha256_bytes", "read_program"]

CONTRACT_FORMAT = "agiqa-edge.executorch-program"
FORMAT_VERSION = 1
# The program's constant method that returns the contract digest (a string).
CONTRACT_METHOD = "agiqa_contract_sha256"
# Fields the contract digest leaves out: they describe the program bytes, which embed the
# digest, so they can only be known after it (they are checked against the bytes instead).
_UNDIGESTED = ("program_sha256", "program_bytes", "contract_sha256")


class ContractError(ValueError):
    """``model.json`` is missing, malformed, too new, or does not describe this ``.pte``."""


def contract_path(program: str | os.PathLike) -> Path:
    """``dir/model.pte`` -> ``dir/model.json``."""
    return Path(program).with_suffix(".json")


def report_path(program: str | os.PathLike) -> Path:
    """``dir/model.pte`` -> ``dir/model.report.json`` (the export's verification report)."""
    return Path(program).with_suffix(".report.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def contract_digest(data: dict[str, Any]) -> str:
    """sha256 of a contract's JSON object without the program's hash, size and this digest.

    Computed on canonical JSON (sorted keys, no spaces), so any reader can recompute it from
    ``model.json``: every field, known or not, is covered.
    """
    covered = {k: v for k, v in data.items() if k not in _UNDIGESTED}
    return sha256_bytes(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class ModelContract:
    """What ``model.json`` holds. Field order is the order a reader should care about."""

    program_sha256: str  # sha256 of the .pte bytes; checked on load
    preprocess: PreprocessSpec  # image -> input tensor (see docs/edge.md)
    input_shape: tuple[int, ...]  # static model input, (1, 3, H, W) float32, NCHW
    output_names: tuple[str, ...] = ("score", "gate_weights")  # program outputs, in order
    score_output: str = "score"  # which output is the quality score, shape (batch,)
    expert_names: tuple[str, ...] = ()  # columns of gate_weights, if that output is present
    score_range: tuple[float, float] | None = None  # teacher score range, None = unbounded
    lower_better: bool = False  # score direction; ranking respects it
    backend: str = "xnnpack"  # delegate the program was lowered to
    partitioner: str | None = None  # import path of the ExecuTorch partitioner it was lowered with
    quantization: dict[str, Any] = field(default_factory=dict)  # mode + quantizer settings
    teacher_fingerprint: str | None = None  # the teacher the student was distilled from
    student_weights_sha256: str | None = None  # sha256 of the student's model.safetensors
    program_bytes: int = 0  # size of the .pte
    versions: dict[str, str] = field(default_factory=dict)  # torch, torchao, executorch, ...
    input_dtype: str = "float32"
    contract_sha256: str | None = None  # contract_digest() of this contract; also inside the .pte
    format: str = CONTRACT_FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        object.__setattr__(self, "expert_names", tuple(self.expert_names))
        if self.score_range is not None:
            object.__setattr__(self, "score_range", tuple(float(v) for v in self.score_range))
        if self.score_output not in self.output_names:
            raise ContractError(f"score_output {self.score_output!r} is not one of the outputs "
                                f"{list(self.output_names)}")
        if len(self.input_shape) != 4 or self.input_shape[1] != 3:
            raise ContractError(f"input_shape must be (batch, 3, H, W); got {list(self.input_shape)}")
        if tuple(self.input_shape[2:]) != tuple(self.preprocess.input_size):
            raise ContractError(f"input_shape {list(self.input_shape)} disagrees with the "
                                f"preprocessing input_size {list(self.preprocess.input_size)}")

    @property
    def quantize(self) -> str:
        """``"int8"`` or ``"fp32"``."""
        return str(self.quantization.get("mode", "fp32"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return json.loads(json.dumps(data))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelContract:
        if not isinstance(data, dict):
            raise ContractError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != CONTRACT_FORMAT:
            raise ContractError(f"format is {data.get('format')!r}, expected {CONTRACT_FORMAT!r}")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ContractError(f"format_version {version!r} is not supported by this runtime "
                                f"(reads 1..{FORMAT_VERSION}); update agiqa-edge or re-export")
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.name in _REQUIRED]
        if missing:
            raise ContractError(f"missing fields {missing}")
        kwargs = {k: v for k, v in data.items() if k in known}  # newer optional keys: ignored
        try:
            kwargs["preprocess"] = PreprocessSpec.from_dict(kwargs["preprocess"])
            return cls(**kwargs)
        except ContractError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ContractError(f"invalid contract ({exc})") from None

    def digest(self) -> str:
        """:func:`contract_digest` of this contract (what the program must embed)."""
        return contract_digest(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the contract atomically (stable, sorted JSON)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelContract:
        """Read a ``model.json`` and check its own digest (the program's: :func:`read_program`)."""
        path = Path(path)
        if not path.is_file():
            raise ContractError(f"{path}: missing. Every .pte needs the model.json that "
                                "agiqa-export writes beside it (same stem); re-export it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError(f"{path}: malformed JSON ({exc}); re-export it") from None
        try:
            contract = cls.from_dict(data)
        except ContractError as exc:
            raise ContractError(f"{path}: {exc}; re-export it") from None
        if contract.contract_sha256 is None:
            raise ContractError(f"{path}: has no contract_sha256, so edits to it cannot be "
                                "detected (written by an older agiqa-export); re-export it")
        if contract_digest(data) != contract.contract_sha256:
            raise ContractError(f"{path}: edited after export (its fields no longer match its "
                                "contract_sha256); restore the exported file or re-export it")
        return contract

    @classmethod
    def load(cls, program: str | os.PathLike) -> ModelContract:
        """The contract of ``program`` (``x.pte`` -> ``x.json``), hash-checked against it."""
        return read_program(program)[1]


_REQUIRED = ("program_sha256", "preprocess", "input_shape")


def read_program(program: str | os.PathLike) -> tuple[bytes, ModelContract]:
    """Read ``program`` once and its contract; refuse them when the sha256 differs.

    Returns the bytes that were hashed, so the caller loads exactly what was checked.
    """
    program = Path(program)
    if not program.is_file():
        raise ContractError(f"{program}: program not found")
    contract = ModelContract.read(contract_path(program))
    data = program.read_bytes()
    digest = sha256_bytes(data)
    if digest != contract.program_sha256:
        raise ContractError(
            f"{program}: sha256 {digest[:16]}... does not match {contract_path(program).name} "
            f"({contract.program_sha256[:16]}...): the program and its contract come from "
            "different exports; re-export it")
    return data, contract
