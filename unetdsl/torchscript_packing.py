"""Packed oneDNN convolution weights inside a frozen CPU TorchScript module.

Why: every oneDNN convolution first reorders its weight into the blocked layout its kernel reads,
on every call, unless it is handed a weight packed once. Eager unetdsl packs (`nn.layers.Conv2d`);
a frozen TorchScript module does not: over 5 DDPM forwards at batch 8 its convolutions took
2.1 s against eager's 1.8 s with packed weights.

How: after `torch.jit.freeze`, every `aten::conv2d` whose weight, bias and hyper-parameters are
constants and whose kernel is larger than 1x1 (a 1x1 weight's packing holds for one input shape
only: `nn.layers.packs_for_any_shape`) becomes `mkldnn::_convolution_pointwise(
x.contiguous(channels_last), packed[i], bias, ...)`, the op eager's packed path calls, reading its
weight from a list attribute of the module.
A packed weight is an opaque oneDNN tensor, which `torch.jit.save` cannot write, so the module
gets a `__getstate__` that saves the plain weights (unpacked from the packed ones, exactly: the
file holds each weight once) and a `__setstate__` that packs them again when `torch.jit.load`
(Python or C++ libtorch) reads the file. The weights are packed once, at load, before any forward:
nothing is written while the module serves, so concurrent inference threads share it safely, and
the loaded module holds one copy of the conv weights, the packed one.

The result is a CPU artifact: loading it onto another device is refused with a message saying
so. The numbers are eager's packed path's, bit for bit (the same op on the same packed weight).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .nn.layers import MKLDNN_PACKING, PACKED_DTYPES, packs_for_any_shape

PACKED = "_unetdsl_packed_conv_weights"  # List[Tensor]: the packed weights, in the order the graph indexes them
PARAMS = "_unetdsl_packed_conv_params"  # List[List[int]]: padding (2), stride (2), dilation (2), groups, per weight

# TorchScript methods the module gets: what torch.jit.save writes and what torch.jit.load calls
# (in C++ too) to rebuild the packed weights. `mkldnn_reorder_conv2d_weight` without an input size
# picks the same blocked layout as with one here (measured on DDPM's convolutions: equal times).
_STATE_METHODS = f'''
def __getstate__(self) -> Tuple[List[Tensor], List[List[int]]]:
    plain: List[Tensor] = []
    for w in self.{PACKED}:
        plain.append(w.to_dense())
    return (plain, self.{PARAMS})

def __setstate__(self, state: Tuple[List[Tensor], List[List[int]]]) -> None:
    packed: List[Tensor] = []
    for i in range(len(state[0])):
        w = state[0][i]
        p = state[1][i]
        if w.device.type != "cpu":
            raise RuntimeError("unetdsl: this TorchScript file was frozen for the CPU, with its convolution weights "
                               "packed for oneDNN; load it on the CPU, or export it again on the device that runs it")
        packed.append(torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), p[0:2], p[2:4], p[4:6], p[6]))
    self.{PACKED} = packed
    self.{PARAMS} = state[1]
'''


def packable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a frozen TorchScript module for this device and dtype can get packed convolutions:
    CPU, float32 or bfloat16 where oneDNN runs it (`PACKED_DTYPES`: eager packs the same), with
    oneDNN's packed-weight convolution."""
    return MKLDNN_PACKING and device.type == "cpu" and dtype in PACKED_DTYPES


def _walk(nodes: Iterator[torch._C.Node]) -> Iterator[torch._C.Node]:
    """Every node, nested blocks (prim::If / prim::Loop bodies) included."""
    for node in nodes:
        yield node
        for block in node.blocks():
            yield from _walk(block.nodes())


def _constant(value: torch._C.Value) -> bool:
    return value.node().kind() == "prim::Constant"


def _packable_conv(node: torch._C.Node) -> bool:
    if node.kind() != "aten::conv2d":
        return False
    inputs = list(node.inputs())  # x, weight, bias, stride, padding, dilation, groups
    if not all(_constant(v) for v in inputs[1:]):
        return False  # a weight that is not frozen into the graph (not unetdsl's freezing): left alone
    weight, bias, padding = _ivalue(inputs[1]), _ivalue(inputs[2]), _ivalue(inputs[4])
    return (isinstance(weight, torch.Tensor) and weight.dim() == 4 and weight.device.type == "cpu"
            and packs_for_any_shape(tuple(weight.shape[2:]))  # a file serves every shape; a 1x1's packing does not
            and weight.dtype in PACKED_DTYPES and not isinstance(padding, str)  # "same"/"valid": aten pads
            and (bias is None or (isinstance(bias, torch.Tensor) and bias.dtype == weight.dtype)))


def _ivalue(value: torch._C.Value) -> Any:
    """A constant input's value (a tensor, an int, a list of ints, a string or None)."""
    return value.toIValue()


def _insert(graph: Any, kind: str, inputs: list[torch._C.Value], typ: torch._C.JitType) -> torch._C.Value:
    """A new node at the graph's insert point; its one output, typed (the graph checks ops by type)."""
    node = graph.insertNode(graph.create(kind, inputs, 1))
    node.output().setType(typ)
    return node.output()


def pack_convolutions(module: torch.jit.ScriptModule) -> int:
    """Rewrite a frozen CPU TorchScript module (in place) so that its 2D convolutions run on
    weights packed for oneDNN, packed again whenever the saved file is loaded. Returns how many
    convolutions it rewrote (0: the module is left as it was)."""
    graph: Any = module.graph  # torch._C's IR binding is untyped where this needs it (insertConstant, toIValue)
    self_value = next(graph.inputs())
    packed: list[torch.Tensor] = []
    params: list[list[int]] = []
    tensor = torch._C.TensorType.get()
    tensor_list = torch._C.ListType(tensor)
    optional_scalars = torch._C.ListType(torch._C.OptionalType(torch._C.NumberType.get()))
    for node in [n for n in _walk(graph.nodes()) if _packable_conv(n)]:
        x, weight, bias, stride, padding, dilation, groups = node.inputs()
        w: torch.Tensor = _ivalue(weight)
        pad, strd, dil = list(_ivalue(padding)), list(_ivalue(stride)), list(_ivalue(dilation))
        grp: int = _ivalue(groups)
        with graph.insert_point_guard(node):
            # (B, Cin, H, W) -> (B, Cin, H, W) channels-last, as eager's packed path hands oneDNN
            x_cl = _insert(graph, "aten::contiguous", [x, graph.insertConstant(2)], tensor)  # 2: channels_last
            weights = _insert(graph, "prim::GetAttr", [self_value], tensor_list)
            weights.node().s_("name", PACKED)
            w_packed = _insert(graph, "aten::__getitem__", [weights, graph.insertConstant(len(packed))], tensor)
            no_scalars = _insert(graph, "prim::ListConstruct", [], optional_scalars)  # the fused activation's
            # (B, Cin, H, W) -> (B, Cout, H', W') channels-last; no fused activation ("none")
            conv = _insert(graph, "mkldnn::_convolution_pointwise", [
                x_cl, w_packed, bias, padding, stride, dilation, groups,
                graph.insertConstant("none"), no_scalars, graph.insertConstant("")], node.output().type())
        node.output().replaceAllUsesWith(conv)
        node.destroy()
        packed.append(torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), pad, strd, dil, grp))
        params.append(pad + strd + dil + [grp])
    if not packed:
        return 0
    torch._C._jit_pass_dce(graph)  # the plain weight constants: the packed list holds them now
    module._c._register_attribute(PACKED, tensor_list, packed)
    module._c._register_attribute(PARAMS, torch._C.ListType(torch._C.ListType(torch._C.IntType.get())), params)
    # a frozen module carries no concrete type; `define` compiles the methods against its own type
    module._concrete_type = torch._C.ConcreteModuleType.from_jit_type(module._c._type())
    module.define(_STATE_METHODS)
    return len(packed)
