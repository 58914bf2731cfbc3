"""Every torch.export / torchao / ExecuTorch call of the library, in a few small functions.

Their APIs move between releases (this was written against torch 2.14.1, torchao 0.18.0 and
executorch 1.5.1, the versions pinned in pyproject.toml). When one moves, only this file
changes. Imports are local so ``agiqa-export --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edge_runtime.quiet import quiet_toolchain
import torch
from torch import nn

__all__ = ["LoweredProgram", "SUPPORTED_BACKENDS", "export_program", "quantize_int8",
           "int8_quantizer_settings", "lower_to_executorch", "registered_runtime_backends",
           "quiet_toolchain"]

# Backends this library can export to *and* run here. The executorch 1.5.1 wheel ships the
# Vulkan and CUDA (AOTInductor) exporters, but its runtime registers only XnnpackBackend,
# QnnBackend and OpenvinoBackend: no Vulkan or CUDA runtime, so a GPU .pte could be neither
# verified nor scored here. Only XNNPACK (ARM/x86 CPUs, phones, Jetson's CPU) is offered.
SUPPORTED_BACKENDS = ("xnnpack",)

# The delegate's own plumbing: a node that is one of these is not "outside the delegate".
_DELEGATE_PLUMBING = ("executorch_call_delegate", "getitem")


@dataclass(frozen=True)
class LoweredProgram:
    """A serialised ExecuTorch program and what the partitioner left outside XNNPACK."""

    buffer: bytes
    outside_delegate: tuple[str, ...]  # op names of call_function nodes not delegated
    num_delegates: int  # executorch_call_delegate nodes (1 = the whole graph in one blob)


def export_program(module: nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    """``torch.export`` with static shapes (the program takes exactly ``example.shape``)."""
    if not isinstance(module, torch.fx.GraphModule):  # a PT2E-converted module refuses .eval()
        module.eval()
    else:
        _drop_provenance(module.graph)
    with torch.no_grad():
        program = torch.export.export(module, (example,), strict=False)
    _drop_provenance(program.graph)
    return program


def _drop_provenance(graph: torch.fx.Graph) -> None:
    """Forget each node's ``from_node`` history (debug provenance only).

    Every FX pass deep-copies that history into the nodes it creates, so it grows with each
    pass: in a profile of the tiny student's int8 lowering about a quarter of the time went
    to those copies. Numerics and the program are unchanged.
    """
    for node in graph.nodes:
        node.meta.pop("from_node", None)


def _xnnpack_int8_config() -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config,
    )
    # int8 symmetric per-channel weights, static (calibrated) per-tensor int8 activations.
    return get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False, is_qat=False)


def _spec_to_dict(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    ctor = getattr(spec, "observer_or_fake_quant_ctr", None)
    observer = getattr(ctor, "p", None)  # _PartialWrapper around the observer class
    observer = getattr(getattr(observer, "func", None), "__name__", None) or repr(ctor)[:80]
    return {"dtype": str(getattr(spec, "dtype", None)).replace("torch.", ""),
            "quant_min": getattr(spec, "quant_min", None),
            "quant_max": getattr(spec, "quant_max", None),
            "qscheme": str(getattr(spec, "qscheme", None)).replace("torch.", ""),
            "ch_axis": getattr(spec, "ch_axis", None),
            "is_dynamic": bool(getattr(spec, "is_dynamic", False)),
            "observer": observer}


def int8_quantizer_settings(only_under: str | None = None) -> dict[str, Any]:
    """The int8 quantizer's settings as plain data, for the program's metadata."""
    config = _xnnpack_int8_config()
    return {"flow": "torchao.quantization.pt2e prepare_pt2e -> calibrate -> convert_pt2e",
            "scope": (f"only ops inside module {only_under!r}; everything else stays fp32"
                      if only_under else "the whole model"),
            "quantizer": "executorch.backends.xnnpack.quantizer.xnnpack_quantizer.XNNPACKQuantizer",
            "global_config": "get_symmetric_quantization_config(is_per_channel=True, "
                             "is_dynamic=False, is_qat=False)",
            "input_activation": _spec_to_dict(config.input_activation),
            "output_activation": _spec_to_dict(config.output_activation),
            "weight": _spec_to_dict(config.weight),
            "bias": _spec_to_dict(config.bias),
            "is_qat": bool(config.is_qat)}


def _inside(prefix: str) -> Callable[[torch.fx.Node], bool]:
    """A node filter: True for nodes traced from inside the submodule ``prefix`` (or below)."""
    def inside(node: torch.fx.Node) -> bool:
        if node.op != "call_function":  # weights and inputs carry no module stack: the op decides
            return True
        stack = node.meta.get("nn_module_stack") or {}
        return any(path == prefix or path.startswith(prefix + ".")
                   for path, _ in stack.values())
    return inside


def quantize_int8(module: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor],
                  chunk: int = 16, only_under: str | None = None) -> tuple[nn.Module, int]:
    """PT2E static int8 for XNNPACK; returns the converted module and the images seen.

    ``calibration`` yields real, preprocessed images ``(1, 3, H, W)``: activation ranges are
    observed on them, so they must look like what the device will score. The graph is
    captured with a dynamic batch so that images are observed ``chunk`` at a time (the
    histogram observers cost per call, not per image); the caller re-exports the converted
    module with the static batch-1 example. ``only_under`` (a submodule path such as
    ``"student.backbone"``) quantizes only that submodule's ops; the rest stays fp32.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(_xnnpack_int8_config())
    if only_under:
        quantizer.set_filter_function(_inside(only_under))
    batch = torch.export.Dim("batch", min=1, max=4096)
    pair = example.expand(2, *example.shape[1:]).contiguous()  # batch 1 would be specialised
    with torch.no_grad():
        graph = torch.export.export(module.eval(), (pair,), dynamic_shapes=({0: batch},),
                                    strict=False).module()
        _drop_provenance(graph.graph)
        prepared = prepare_pt2e(graph, quantizer)
        seen, pending = 0, []
        for image in calibration:
            pending.append(image)
            if len(pending) == chunk:
                prepared(torch.cat(pending))
                seen, pending = seen + len(pending), []
        if pending:
            prepared(torch.cat(pending))
            seen += len(pending)
        if seen == 0:
            raise ValueError("int8 calibration needs at least one image; got none")
        return convert_pt2e(prepared), seen


def lower_to_executorch(program: "torch.export.ExportedProgram", backend: str = "xnnpack",
                        constant_methods: dict[str, Any] | None = None) -> LoweredProgram:
    """Partition for XNNPACK, lower, and serialise to ``.pte`` bytes.

    ``constant_methods`` (name -> int, float, bool, str or lists of them) become extra methods
    of the program that take no input and return that value (ExecuTorch "constant methods").
    """
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(unsupported_backend_message(backend))
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                       constant_methods=constant_methods)
    graph = edge.exported_program().graph_module.graph
    outside, delegates = [], 0
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if name == "executorch_call_delegate":
            delegates += 1
        elif name not in _DELEGATE_PLUMBING:
            outside.append(name)
    return LoweredProgram(bytes(edge.to_executorch().buffer), tuple(outside), delegates)


def _op_name(target: Any) -> str:
    name = getattr(target, "__name__", None) or str(target)
    # EdgeOpOverload names look like "aten.sum.dim_IntList"; builtins like "getitem".
    return str(name).split(":")[0].strip("<> ").replace("EdgeOpOverload ", "")


def registered_runtime_backends() -> list[str]:
    """Backends the installed ExecuTorch runtime can execute (imports the runtime)."""
    from executorch.runtime import Runtime

    return list(Runtime.get().backend_registry.registered_backend_names)


def unsupported_backend_message(backend: str) -> str:
    """Why ``backend`` is refused, naming what the installed runtime really registers."""
    try:
        registered = ", ".join(registered_runtime_backends())
    except Exception as exc:  # the message must not fail; say why the list is missing
        registered = f"unknown ({exc})"
    return (f"backend {backend!r} is not supported; only 'xnnpack' is. The installed ExecuTorch "
            f"runtime registers [{registered}]: no Vulkan or CUDA backend, so a GPU program "
            "could be neither verified at export nor scored here. XNNPACK runs on ARM and x86 "
            "CPUs (phones, Jetson, desktops)")
