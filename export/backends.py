"""Export backends as data: the partitioner, the int8 quantizer and its settings, looked up by name.

``agiqa-export executorch --backend NAME`` lowers to ``EXPORT_BACKENDS[NAME]``. A backend names its
toolchain classes by import path (loaded by :mod:`export._toolchain` only when an export runs, so
this module imports no torch) and declares what its int8 recipe does to each tensor; the export
contract (``model.json``) records these fields, not settings read back from the toolchain's
objects. ``tests/export/test_export.py`` checks the declared settings against what the quantizer builds.

Adding a backend = one ``ExportBackend`` entry in ``EXPORT_BACKENDS``; only a partitioner or
quantizer that takes other arguments needs code in :mod:`export._toolchain` as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["DEFAULT_INT8_ACTIVATIONS", "DYNAMIC_INT8_OPS", "EXPORT_BACKENDS", "FP32_OPS", "INT8_ACTIVATIONS",
           "QUANTIZE_MODES", "SUPPORTED_BACKENDS", "XNNPACK",
           "ExportBackend", "Int8Recipe", "TensorQuantization", "get_backend", "registered_runtime_backends"]

# Every ``--quantize`` value, declared here only: a backend with an int8 recipe takes all of them,
# one without takes fp32 alone; the CLI's choices and the export's checks derive from this.
QUANTIZE_MODES: tuple[str, ...] = ("int8", "fp32")
# How an int8 program's activations get their ranges: "static", observed once on calibration
# images (every op int8, fastest); "dynamic", measured on each image at run time, the weights
# int8 and the ops between convolutions fp32 (faithful on any photo: no calibration set to miss).
INT8_ACTIVATIONS: tuple[str, ...] = ("static", "dynamic")
# The default: dynamic. On real photos unlike the demo's the static program ranks with SRCC
# 0.9945-0.9958 against the eager student, the dynamic one 0.9990-0.9999 (every score distinct)
# at 0.32 of fp32's size; it costs 7% of latency on a 2-core x86-64 (docs/edge.md).
DEFAULT_INT8_ACTIVATIONS = "dynamic"


@dataclass(frozen=True)
class TensorQuantization:
    """How one kind of tensor is quantized (the fields of a torchao ``QuantizationSpec``)."""

    dtype: str  # "int8"
    quant_min: int
    quant_max: int
    qscheme: str  # torch qscheme name: "per_tensor_affine", "per_channel_symmetric", ...
    ch_axis: int | None  # the channel axis of a per-channel scheme, else None
    is_dynamic: bool  # False: ranges observed once on calibration images (static)
    observer: str  # the torchao observer class that measures the ranges


# Ops every int8 recipe leaves in fp32 wherever they are, with why (the contract records the
# names; export._toolchain finds them in the graph).
FP32_OPS = {
    "global average pool": "quantizers give a pool's output its input's int8 parameters, so the "
                           "pooled features of a whole feature map got the step of single "
                           "activations: a handful of levels, and different photos the same "
                           "features (ties in the score)",
}


# Ops a dynamic recipe gives int8 weights although the backend's quantizer alone would leave them
# fp32, with why (the contract records the names; export._toolchain annotates them).
DYNAMIC_INT8_OPS = {
    "convolution before a ReLU": "quantizers leave a convolution a ReLU consumes to their conv+relu "
                                 "pattern, which is static-only, so under dynamic activations the "
                                 "squeeze-excitation reductions kept fp32 weights (a quarter of the "
                                 "demo student's program)",
}


@dataclass(frozen=True)
class Int8Recipe:
    """A backend's PT2E int8 recipe: its quantizer, the global config it is given, and what that
    config does to each kind of tensor (recorded in the contract as declared here)."""

    quantizer: str  # import path of the torchao Quantizer class
    config_factory: str  # import path of the function that builds the quantizer's global config
    config_args: dict[str, Any]  # keyword arguments of config_factory
    input_activation: TensorQuantization
    output_activation: TensorQuantization | None  # None: outputs stay fp32 (dynamic activations)
    weight: TensorQuantization
    bias: TensorQuantization | None = None  # None: bias stays as the backend's kernels take it
    is_qat: bool = False

    @property
    def activations(self) -> str:
        """``"dynamic"`` or ``"static"`` (:data:`INT8_ACTIVATIONS`)."""
        return "dynamic" if self.input_activation.is_dynamic else "static"

    def with_dynamic_activations(self) -> Int8Recipe:
        """The same weights, activations quantized per image at run time and outputs left fp32
        (the quantizer's ``is_dynamic=True``: it then annotates only convolutions and linears)."""
        dynamic = replace(self.input_activation, is_dynamic=True, observer="PlaceholderObserver")
        return replace(self, config_args={**self.config_args, "is_dynamic": True},
                                   input_activation=dynamic, output_activation=None)

    def record(self, only_under: str | None = None, keep_fp32: tuple[str, ...] = (),
               dynamic_under: tuple[str, ...] = ()) -> dict[str, Any]:
        """The contract's ``quantization`` entries (besides ``mode`` and ``calibration``)."""
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.config_args.items())
        tensors = {name: None if spec is None else asdict(spec)
                   for name, spec in (("input_activation", self.input_activation),
                                      ("output_activation", self.output_activation),
                                      ("weight", self.weight), ("bias", self.bias))}
        scope = f"only ops inside module {only_under!r}" if only_under else "the whole model"
        if dynamic_under:
            scope += (f", and the linears of {', '.join(map(repr, dynamic_under))} with int8 weights, "
                      "dynamic activations and fp32 outputs")
        return {"flow": "torchao.quantization.pt2e prepare_pt2e -> calibrate -> convert_pt2e",
                "scope": scope + ("; everything else stays fp32" if only_under else ""),
                **({"keep_fp32": list(keep_fp32)} if keep_fp32 else {}),
                **({"dynamic_scope": list(dynamic_under)} if dynamic_under else {}),
                "activations": self.activations,
                "fp32_ops": list(FP32_OPS),
                **({"dynamic_int8_ops": list(DYNAMIC_INT8_OPS)} if self.activations == "dynamic" else {}),
                "quantizer": self.quantizer,
                "global_config": f"{self.config_factory.rsplit('.', 1)[-1]}({arguments})",
                **tensors, "is_qat": self.is_qat}


@dataclass(frozen=True)
class ExportBackend:
    """One delegate a program can be lowered to, with its fp32 and (optional) int8 variants."""

    name: str  # the --backend value and the contract's ``backend``
    partitioner: str  # import path of the ExecuTorch partitioner class (built with no arguments)
    runtime_backend: str  # the name the ExecuTorch runtime registers its kernels under
    int8: Int8Recipe | None = None  # None: this backend exports fp32 only
    summary: str = ""  # where its programs run, for --help and errors
    modes: tuple[str, ...] = field(init=False)  # the --quantize values it takes

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", QUANTIZE_MODES if self.int8 else ("fp32",))


_INT8_ACTIVATION = TensorQuantization(dtype="int8", quant_min=-128, quant_max=127,
                                      qscheme="per_tensor_affine", ch_axis=None,
                                      is_dynamic=False, observer="HistogramObserver")
_XNNPACK_QUANTIZER = "executorch.backends.xnnpack.quantizer.xnnpack_quantizer"

XNNPACK = ExportBackend(
    name="xnnpack",
    partitioner="executorch.backends.xnnpack.partition.xnnpack_partitioner.XnnpackPartitioner",
    runtime_backend="XnnpackBackend",
    # int8 symmetric per-channel weights, static (calibrated) per-tensor int8 activations.
    int8=Int8Recipe(
        quantizer=f"{_XNNPACK_QUANTIZER}.XNNPACKQuantizer",
        config_factory=f"{_XNNPACK_QUANTIZER}.get_symmetric_quantization_config",
        config_args={"is_per_channel": True, "is_dynamic": False, "is_qat": False},
        input_activation=_INT8_ACTIVATION, output_activation=_INT8_ACTIVATION,
        weight=TensorQuantization(dtype="int8", quant_min=-127, quant_max=127,
                                  qscheme="per_channel_symmetric", ch_axis=0, is_dynamic=False,
                                  observer="PerChannelMinMaxObserver")),
    summary="ARM and x86 CPUs: phones, Jetson, desktops")

# Backends this library can export to *and* run here. The executorch 1.5.1 wheel ships the
# Vulkan and CUDA (AOTInductor) exporters, but its runtime registers only XnnpackBackend,
# QnnBackend and OpenvinoBackend: no Vulkan or CUDA runtime, so a GPU .pte could be neither
# verified nor scored here. Only XNNPACK is offered.
EXPORT_BACKENDS: dict[str, ExportBackend] = {backend.name: backend for backend in (XNNPACK,)}
SUPPORTED_BACKENDS: tuple[str, ...] = tuple(EXPORT_BACKENDS)


def get_backend(name: str) -> ExportBackend:
    """``EXPORT_BACKENDS[name]``, or a one-line ValueError listing the valid names and what the
    installed ExecuTorch runtime registers."""
    if name in EXPORT_BACKENDS:
        return EXPORT_BACKENDS[name]
    try:
        registered = ", ".join(registered_runtime_backends())
    except Exception as exc:  # the message must not fail; say why the list is missing
        registered = f"unknown ({exc})"
    valid = ", ".join(f"{b.name!r} ({b.summary})" for b in EXPORT_BACKENDS.values())
    raise ValueError(f"backend {name!r} is not supported; only {valid}. The installed ExecuTorch "
                     f"runtime registers [{registered}]: no Vulkan or CUDA backend, so a GPU "
                     "program could be neither verified at export nor scored here")


def registered_runtime_backends() -> list[str]:
    """Backends the installed ExecuTorch runtime can execute (imports the runtime, only when called)."""
    from executorch.runtime import Runtime

    return list(Runtime.get().backend_registry.registered_backend_names)
