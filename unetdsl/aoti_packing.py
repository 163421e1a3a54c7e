"""CPU convolution weights packed for oneDNN inside an AOTInductor package with dynamic sizes.

With `freezing`, inductor replaces a CPU convolution whose weight is a constant by oneDNN's
packed-weight convolution and folds the packing into the package's constants, but only when every
size of the convolution's input is static (torch/_inductor/fx_passes/mkldnn_fusion.py: with a
symbolic size it passes the plain weight, which oneDNN then reorders on every call, as unfrozen
TorchScript does). unetdsl's packages take any batch and spatial size, so none of their weights
were packed. This adds one pattern to inductor's freezing passes, ahead of its own: a weight whose
packed layout serves inputs of every shape (kernels larger than 1x1: layers.packs_for_any_shape,
the rule eager and frozen TorchScript keep) is packed at the example input's sizes; 1x1 weights are
left to inductor (packed per call, a fast reorder). The pattern acts only inside `packing()`, where
unetdsl compiles its own package: other compiles in the process see inductor unchanged.

It reaches into inductor's pattern registry (a private API, pinned torch 2.13): a torch that
changes it fails `export(format="aoti")` with the reason, caught by tests/test_cpp_example.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import torch

from .nn.layers import MKLDNN_PACKING, PACKED_DTYPES, packs_for_any_shape

_ACTIVE: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("unetdsl_aoti_packing", default=None)
_REGISTERED = threading.Lock(), [False]


def _packable(match: Any) -> bool:
    """A CPU 2D convolution, not transposed, whose weight is a frozen constant (get_attr) of a
    packable dtype, whose input has a symbolic size (static inputs: inductor packs them itself), and
    whose kernel's packed layout holds for every input shape."""
    from torch.fx.experimental.symbolic_shapes import has_free_symbols

    if _ACTIVE.get() is None:
        return False
    conv = match.output_node()
    x, w, transposed = conv.args[0], conv.args[1], conv.args[6]
    if transposed or not isinstance(w, torch.fx.Node) or w.op != "get_attr":
        return False
    xv, wv = x.meta.get("val"), w.meta.get("val")
    return (xv is not None and wv is not None and xv.device.type == "cpu" and xv.dim() == 4
            and xv.dtype in PACKED_DTYPES and wv.dtype == xv.dtype and has_free_symbols(xv.shape)
            and packs_for_any_shape(tuple(wv.shape[2:])))


def _pack(match: Any, *args: Any, **kwargs: Any) -> None:
    """aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups) ->
    mkldnn._convolution_pointwise(x, reorder(w, ..., example sizes), b, ...): inductor's own
    replacement (mkldnn_fusion._register_weight_pack_pass) with each symbolic size at its example
    value; freezing's constant folding then packs the weight once, at compile time."""
    from torch.fx.experimental.symbolic_shapes import optimization_hint

    graph, conv = match.graph, match.output_node()
    x, w, b, stride, padding, dilation = args[:6]
    groups = args[-1]
    size = [optimization_hint(s) for s in conv.args[0].meta["val"].shape]  # (B, Cin, H, W) of the example
    mkldnn = torch.ops.mkldnn
    with graph.inserting_before(conv):
        packed = graph.create_node("call_function", mkldnn._reorder_convolution_weight,
                                   (w, padding, stride, dilation, groups, size))
        new = graph.create_node("call_function", mkldnn._convolution_pointwise.default,
                                (x, packed, b, padding, stride, dilation, groups, "none", [], ""))
    conv.replace_all_uses_with(new)
    new.meta.update(conv.meta)
    graph.erase_node(conv)
    counter = _ACTIVE.get()
    if counter is not None:
        counter[0] += 1


def _register() -> None:
    from torch._inductor.fx_passes.freezing_patterns import pass_patterns
    from torch._inductor.pattern_matcher import Arg, CallFunction, KeywordArg, register_graph_pattern

    lock, done = _REGISTERED
    with lock:
        if done[0]:
            return
        conv = CallFunction(torch.ops.aten.convolution.default, Arg(), Arg(), Arg(), Arg(), Arg(), Arg(),
                            KeywordArg("is_transposed"), Arg(), Arg())
        # prepend: inductor's own weight-pack pattern for the same op (registered later, lazily)
        # would otherwise take the convolution first and hand oneDNN the plain weight
        register_graph_pattern(conv, extra_check=_packable, pass_dict=pass_patterns[0], prepend=True)(_pack)
        done[0] = True


@contextlib.contextmanager
def packing(enabled: bool = True) -> Iterator[list[int]]:
    """Inside: inductor's freezing packs the dynamic-shape CPU convolutions described above (when
    `enabled`; else inductor as it is). Yields a one-item list that counts the weights packed."""
    counter = [0]
    if MKLDNN_PACKING and enabled:
        _register()
    token = _ACTIVE.set(counter if enabled else None)
    try:
        yield counter
    finally:
        _ACTIVE.reset(token)
