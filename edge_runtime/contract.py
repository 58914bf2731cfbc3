"""The contract of an exported program: ``model.json`` beside ``model.pte`` (same stem).

The .pte holds only tensors-in, tensors-out. Everything the device needs to feed it and read
it (preprocessing, input shape, output names, score range and direction) and everything a
person needs to trust it (fingerprints, quantization settings, library versions) lives in the
contract, written by ``agiqa-export`` and read by :class:`edge_runtime.Scorer`.

Both files protect each other: the contract holds the sha256 of the .pte, and the .pte holds
the sha256 of the contract (``contract_sha256``, returned by the program's constant method
``agiqa_contract_sha256``). An edited mean/std or ``lower_better``, or a program and a
contract from different exports, are refused instead of silently mis-scored. No torch here:
the device side reads it with json.

Format version 2 (written now) stores the contract's fields as text, embedded verbatim in a
small envelope; the digest is the sha256 of that text's UTF-8 bytes, so a reader in any
language checks it without re-serialising anything (docs/edge.md, "The two files protect each other")::

    {"format": ..., "format_version": 2,
     "contract": "<the fields as sorted, indented JSON text>",  <- every field but the three below
     "contract_sha256": sha256(contract.encode("utf-8")),
     "program_sha256": ..., "program_bytes": ...}

Every field is written and a version-2 reader requires every field: the defaults live only in
:class:`ModelContract` (the writer). Version 1 (the fields at top level, the digest defined as
Python's canonical ``json.dumps`` of them) is still read, as before.
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
           "contract_digest_v1", "contract_path", "report_path", "sha256_bytes", "read_program"]

CONTRACT_FORMAT = "agiqa-edge.executorch-program"
FORMAT_VERSION = 2  # written; 1 and 2 are read
# The program's constant method that returns the contract digest (a string).
CONTRACT_METHOD = "agiqa_contract_sha256"
# Fields the contract digest leaves out: they describe the program bytes, which embed the
# digest, so they can only be known after it (they are checked against the bytes instead).
_UNDIGESTED = ("program_sha256", "program_bytes", "contract_sha256")
# A version-2 model.json holds exactly these keys; the contract's fields are inside "contract".
_ENVELOPE = ("contract", "contract_sha256", "format", "format_version", "program_bytes", "program_sha256")
# What a version-2 contract must spell out for the image path (no reader fills in defaults).
_PREPROCESS_FIELDS = ("input_size", "mean", "std", "resize", "interpolation", "jpeg_draft")


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


def contract_digest_v1(data: dict[str, Any]) -> str:
    """The version-1 digest: sha256 of Python's canonical JSON (sorted keys, no spaces) of a
    contract's fields without the program's hash, size and this digest (every field, known or
    not, is covered). Version 2 hashes the stored text instead (:meth:`ModelContract.digest`).
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
    contract_sha256: str | None = None  # digest() of this contract; also inside the .pte
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

    def text(self) -> str:
        """The version-2 contract text: every field but the program's hash and size and the
        digest, as sorted, indented JSON. Written verbatim into model.json and hashed as bytes."""
        covered = {k: v for k, v in self.to_dict().items() if k not in _UNDIGESTED}
        return json.dumps(covered, indent=2, sort_keys=True)

    def digest(self) -> str:
        """The digest the program must embed: sha256 of :meth:`text` (version 2), or
        :func:`contract_digest_v1` of the fields (a version-1 contract)."""
        if self.format_version == 1:
            return contract_digest_v1(self.to_dict())
        return sha256_bytes(self.text().encode("utf-8"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the contract atomically: version 2 (the envelope around :meth:`text`), or a
        version-1 contract as version-1 writers did (stable, sorted JSON of the fields)."""
        if self.format_version == 1:
            return atomic_write_json(path, self.to_dict())
        text = self.text()
        digest = sha256_bytes(text.encode("utf-8"))
        if self.contract_sha256 not in (None, digest):
            raise ContractError(f"{path}: contract_sha256 {self.contract_sha256[:16]}... is not the "
                                "digest of this contract's fields (changed after lowering); export again")
        return atomic_write_json(path, {"format": self.format, "format_version": self.format_version,
                                        "contract": text, "contract_sha256": digest,
                                        "program_sha256": self.program_sha256,
                                        "program_bytes": self.program_bytes})

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
            if isinstance(data, dict) and data.get("format_version") == 2:
                data = _open_envelope(data)  # -> the fields, checked against the digest
            contract = cls.from_dict(data)
        except ContractError as exc:
            fix = "" if "re-export it" in str(exc) else "; re-export it"
            raise ContractError(f"{path}: {exc}{fix}") from None
        if contract.format_version == 1:
            _check_v1_digest(data, contract, path)
        return contract

    @classmethod
    def load(cls, program: str | os.PathLike) -> ModelContract:
        """The contract of ``program`` (``x.pte`` -> ``x.json``), hash-checked against it."""
        return read_program(program)[1]


_REQUIRED = ("program_sha256", "preprocess", "input_shape")  # version 1; version 2: every field
_EDITED = "edited after export ({} no longer match{} its contract_sha256); restore the exported file or re-export it"


def _open_envelope(data: dict[str, Any]) -> dict[str, Any]:
    """A version-2 model.json -> the contract's fields, once its text matches its digest."""
    unknown = sorted(set(data) - set(_ENVELOPE))
    if unknown:
        raise ContractError(f"unexpected top-level keys {unknown}: a version-2 model.json holds only "
                            f"{list(_ENVELOPE)} (the fields are inside 'contract')")
    if not isinstance(data.get("contract_sha256"), str):
        raise ContractError("has no contract_sha256, so edits to it cannot be detected")
    text = data.get("contract")
    if not isinstance(text, str):
        raise ContractError("has no contract text (key 'contract')")
    try:
        stored = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape: not text any runtime could hash
        raise ContractError("its contract text is not valid Unicode") from None
    if sha256_bytes(stored) != data["contract_sha256"]:
        raise ContractError(_EDITED.format("its contract text", "es"))
    try:
        fields_ = json.loads(text)
    except ValueError as exc:
        raise ContractError(f"its contract text is malformed JSON ({exc})") from None
    if not isinstance(fields_, dict):
        raise ContractError("its contract text is not a JSON object")
    for key in ("format", "format_version"):
        if fields_.get(key) != data.get(key):
            raise ContractError(f"{key} {data.get(key)!r} disagrees with the contract text's "
                                f"{fields_.get(key)!r}")
    missing = [f.name for f in fields(ModelContract) if f.name not in _UNDIGESTED and f.name not in fields_]
    if missing:
        raise ContractError(f"missing fields {missing} (a version-2 contract spells out every field)")
    preprocess = fields_["preprocess"]
    lacking = [k for k in _PREPROCESS_FIELDS if not isinstance(preprocess, dict) or k not in preprocess]
    if lacking:
        raise ContractError(f"preprocessing lacks {' and '.join(lacking)}")
    return {**fields_, **{k: data[k] for k in _UNDIGESTED if k in data}}


def _check_v1_digest(data: dict[str, Any], contract: ModelContract, path: Path) -> None:
    if contract.contract_sha256 is None:
        raise ContractError(f"{path}: has no contract_sha256, so edits to it cannot be "
                            "detected (written by an older agiqa-export); re-export it")
    if contract_digest_v1(data) != contract.contract_sha256:
        raise ContractError(f"{path}: " + _EDITED.format("its fields", ""))


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
