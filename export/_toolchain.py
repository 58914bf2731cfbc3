"""Every torch.export / torchao / ExecuTorch call of the library, in a few small functions.

Their APIs move between releases (this was written against torch 2.14.1, torchao 0.18.0 and
executorch 1.5.1, the versions pinned in pyproject.toml). When one moves, only this file
changes. Imports are local so ``agiqa-export --help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backends import INT8_ACTIVATIONS, ExportBackend, Int8Recipe, get_backend

__all__ = ["LoweredProgram", "export_program", "int8_recipe", "quantize_int8", "lower_to_executorch"]

# The delegate's own plumbing: a node that is one of these is not "outside the delegate".
_DELEGATE_PLUMBING = ("executorch_call_delegate", "getitem")


@dataclass(frozen=True)
class LoweredProgram:
    """A serialised ExecuTorch program and what the partitioner left outside XNNPACK."""

    buffer: bytes
    outside_delegate: tuple[str, ...]  # op names of call_function nodes not delegated
    num_delegates: int  # executorch_call_delegate nodes (1 = the whole graph in one blob)


def export_program(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
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


def _backend(backend: ExportBackend | str) -> ExportBackend:
    return backend if isinstance(backend, ExportBackend) else get_backend(backend)


def _resolve(path: str) -> Any:
    """The object an import path (``package.module.Name``) of :mod:`export.backends` names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def int8_recipe(backend: ExportBackend | str, activations: str = "static") -> Int8Recipe:
    """``backend``'s declared int8 recipe, with ``activations`` (:data:`INT8_ACTIVATIONS`)."""
    backend = _backend(backend)
    if backend.int8 is None:
        raise ValueError(f"backend {backend.name!r} exports only {list(backend.modes)}, not int8")
    if activations not in INT8_ACTIVATIONS:
        raise ValueError(f"int8 activations must be one of {list(INT8_ACTIVATIONS)}, got {activations!r}")
    return backend.int8.with_dynamic_activations() if activations == "dynamic" else backend.int8


def _int8_config(recipe: Int8Recipe) -> Any:
    """The recipe's global quantization config, built from the declaration."""
    return _resolve(recipe.config_factory)(**recipe.config_args)


def _int8_quantizer(recipe: Int8Recipe) -> Any:
    """The recipe's quantizer with its global config, both built from the declaration."""
    return _resolve(recipe.quantizer)().set_global(_int8_config(recipe))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _inside(prefix: str, keep_fp32: tuple[str, ...] = ()) -> Callable[[torch.fx.Node], bool]:
    """A node filter: True for nodes traced from inside the submodule ``prefix`` (or below) and
    from none of the submodules ``keep_fp32``."""
    def inside(node: torch.fx.Node) -> bool:
        if node.op != "call_function":  # weights and inputs carry no module stack: the op decides
            return True
        paths = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
        return ((not prefix or any(_under(path, prefix) for path in paths))
                and not any(_under(path, kept) for path in paths for kept in keep_fp32))
    return inside


def _inside_any(prefixes: tuple[str, ...]) -> Callable[[torch.fx.Node], bool]:
    """A node filter: True for nodes traced from inside any of the submodules ``prefixes``."""
    filters = [_inside(prefix) for prefix in prefixes]
    return lambda node: any(inside(node) for inside in filters)


def _is_global_pool(node: torch.fx.Node) -> bool:
    """An average over all of H and W: ``adaptive_avg_pool2d`` to 1x1, or ``mean`` over (H, W)."""
    name = _op_name(node.target).split(".")[0]
    if name == "adaptive_avg_pool2d":
        return len(node.args) > 1 and list(node.args[1]) == [1, 1]
    if name == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        value = getattr(node.args[0], "meta", {}).get("val")
        rank = value.dim() if isinstance(value, torch.Tensor) else 4
        return dims is not None and rank == 4 and sorted(int(d) % rank for d in dims) == [2, 3]
    return False


AnnotationPass = Callable[[torch.fx.GraphModule], None]


def _with_passes(inner: Any, before: tuple[AnnotationPass, ...] = (),
                 after: tuple[AnnotationPass, ...] = ()) -> Any:
    """``inner`` (a PT2E quantizer) whose ``annotate`` runs the ``before`` passes on the graph
    first and the ``after`` passes last; its transform and validation are ``inner``'s."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class WithPasses(Quantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return inner.transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for annotation_pass in before:
                annotation_pass(model)
            model = inner.annotate(model)
            for annotation_pass in after:
                annotation_pass(model)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            inner.validate(model)

    return WithPasses()


def _global_pools_fp32(model: torch.fx.GraphModule) -> None:
    """A ``before`` pass: every global average pool left fp32 (:data:`export.backends.FP32_OPS`).
    Each is marked annotated before the quantizer annotates, so neither its pool pattern nor its
    propagation of shared parameters (pools, means, reshapes take their input's) reaches it, and
    the next quantized op observes the pooled values itself."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        if node.op == "call_function" and _is_global_pool(node):
            node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)


def _is_relu(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and _op_name(node.target).split(".")[0] in ("relu", "relu_")


def _dynamic_convs_before_relu(config: Any, node_filter: Callable[[torch.fx.Node], bool]) -> AnnotationPass:
    """An ``after`` pass for a quantizer with a dynamic-activation ``config``: int8 weights and
    per-image input ranges for the convolutions a ReLU consumes
    (:data:`export.backends.DYNAMIC_INT8_OPS`).

    Quantizers (XNNPACK's among them) skip a convolution whose one user is a ReLU, leaving it to
    their conv+relu pattern, and that pattern is static-only: under a dynamic config nobody
    annotates it, so every squeeze-excitation reduction of a MobileNetV3 kept fp32 weights (a
    quarter of the demo student's dynamic program). Each such convolution still unannotated after
    the quantizer, 2-d, not grouped, and passed by ``node_filter``, is annotated the way the
    quantizer annotates its other dynamic convolutions: input dynamic, weight and bias by
    ``config``, output fp32 (the ReLU after it runs in fp32). Grouped (depthwise) convolutions
    stay fp32, as the quantizer leaves them under dynamic activations."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    def groups(conv: torch.fx.Node) -> int:
        return int(conv.args[6]) if len(conv.args) > 6 else int(conv.kwargs.get("groups", 1))

    def annotate(model: torch.fx.GraphModule) -> None:
        for conv in model.graph.nodes:
            if (conv.op != "call_function" or _op_name(conv.target) != "conv2d.default"
                    or "quantization_annotation" in conv.meta or len(conv.users) != 1
                    or not _is_relu(next(iter(conv.users))) or groups(conv) != 1
                    or not node_filter(conv)):
                continue
            source, weight, bias = conv.args[0], conv.args[1], conv.args[2] if len(conv.args) > 2 else None
            qspecs = {source: config.input_activation, weight: config.weight}
            if isinstance(bias, torch.fx.Node) and config.bias is not None:
                qspecs[bias] = config.bias
            conv.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qspecs, output_qspec=None, _annotated=True)

    return annotate


def quantize_int8(module: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor],
                  chunk: int = 16, only_under: str | None = None, keep_fp32: tuple[str, ...] = (),
                  backend: ExportBackend | str = "xnnpack", activations: str = "static",
                  dynamic_under: tuple[str, ...] = ()) -> tuple[nn.Module, int]:
    """PT2E int8 with ``backend``'s recipe; returns the converted module and the images seen.

    ``calibration`` yields real, preprocessed images ``(1, 3, H, W)``: activation ranges are
    observed on them, so they must look like what the device will score. The graph is
    captured with a dynamic batch so that images are observed ``chunk`` at a time (the
    histogram observers cost per call, not per image); the caller re-exports the converted
    module with the static batch-1 example. ``only_under`` (a submodule path such as
    ``"student.backbone"``) quantizes only that submodule's ops; the rest stays fp32, and so do
    the ops of the submodules ``keep_fp32`` (module paths) inside it, and the ops of ``FP32_OPS``.
    The submodules ``dynamic_under`` (module paths outside ``only_under``) get int8 weights with
    dynamic activations whatever ``activations`` is.
    With ``activations="dynamic"`` nothing is observed (the program measures each image's ranges
    itself): ``calibration`` is not read, and 0 images are returned.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    recipe = int8_recipe(backend, activations)
    quantizer = _int8_quantizer(recipe)
    scope = _inside(only_under or "", keep_fp32)
    if only_under or keep_fp32:
        quantizer.set_filter_function(scope)
    after: tuple[AnnotationPass, ...] = ()
    if recipe.activations == "dynamic":
        after = (_dynamic_convs_before_relu(_int8_config(recipe), scope),)
    if dynamic_under:
        # int8 weights, activations quantized per image and outputs fp32, whatever the recipe's
        # activations: the head's linears (a handful of rows) keep a continuous score
        head = _int8_quantizer(int8_recipe(backend, "dynamic"))
        head.set_filter_function(_inside_any(dynamic_under))
        from torchao.quantization.pt2e.quantizer import ComposableQuantizer

        quantizer = ComposableQuantizer([quantizer, head])
    batch = torch.export.Dim("batch", min=1, max=4096)
    pair = example.expand(2, *example.shape[1:]).contiguous()  # batch 1 would be specialised
    with torch.no_grad():
        graph = torch.export.export(module.eval(), (pair,), dynamic_shapes=({0: batch},),
                                    strict=False).module()
        _drop_provenance(graph.graph)
        prepared = prepare_pt2e(graph, _with_passes(quantizer, before=(_global_pools_fp32,), after=after))
        if recipe.activations == "dynamic":
            prepared(pair)  # one pass for the weight observers; activations have none
            return convert_pt2e(prepared), 0
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


def lower_to_executorch(program: torch.export.ExportedProgram, backend: ExportBackend | str = "xnnpack",
                        constant_methods: dict[str, Any] | None = None) -> LoweredProgram:
    """Partition with ``backend``'s partitioner, lower, and serialise to ``.pte`` bytes.

    ``constant_methods`` (name -> int, float, bool, str or lists of them) become extra methods
    of the program that take no input and return that value (ExecuTorch "constant methods").
    """
    partitioner = _resolve(_backend(backend).partitioner)()
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[partitioner],
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

