"""Inference fusion: the BatchNorm, activation and residual add around each 1x1 convolution folded into
one pointwise_conv2d call (convert(model, fuse=True) is the public way in).

On a model in eval mode, traced with torch.fx (symbolic_trace): torch.fx.experimental.optimization.fuse
folds every BatchNorm that follows a convolution into its weight and bias (the 3x3 ones too); then
each 1x1 nn.Conv2d becomes a PointwiseConv2d whose epilogue takes the add that follows it (its other
operand is the residual) and the activation after that, where they are the convolution's only users:
ResNet's bottleneck (conv, BN, add, ReLU) and downsample branch, MobileNetV2's inverted residual (conv,
BN, add), EfficientNet's MBConv (conv, BN, SiLU; the identity that StochasticDepth is in eval).
A part that does not trace is fused part by part (its children), and what could not be fused is
listed in the model's `fusion_report` and in a warning.

Its other convolutions compute bfloat16 and float16 CPU inputs in float32 where PyTorch's CPU
convolution has no oneDNN kernel for those dtypes (Conv2dInFloat32). A model that traces whole also
runs, given a CPU image, in the layout its convolutions are fastest in for the image's dtype
(channels_last where oneDNN runs them): its input is converted once and its 4-D outputs are given back
in the input's layout (_run_in_fastest_layout).
"""

import contextlib
import dataclasses
import operator
import warnings
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental import optimization
from torch.utils import _pytree

# The activations the epilogue applies, as modules and as functions, by the op's names.
_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish"}
_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu",
                         F.hardswish: "hardswish", F.gelu: "gelu"}
_ADDS = (operator.add, operator.iadd, torch.add)


@dataclasses.dataclass
class FusionReport:
    """What convert(model, fuse=True) did: `fused` has one line per 1x1 convolution that became a
    PointwiseConv2d (with what its epilogue took), `not_fused` what was left as it was, and why,
    `in_float32` one line per other convolution that computes 16-bit CPU inputs in float32
    (Conv2dInFloat32), `layout` the memory format the model's activations take inside (and why, where
    not channels_last)."""

    fused: List[str] = dataclasses.field(default_factory=list)
    not_fused: List[str] = dataclasses.field(default_factory=list)
    in_float32: List[str] = dataclasses.field(default_factory=list)
    layout: str = "the input's"  # the activations' memory format inside the model, per dtype (_run_in_fastest_layout)

    def __str__(self) -> str:
        lines = [f"{len(self.fused)} pointwise convolutions fused:"] + [f"  {line}" for line in self.fused]
        if self.in_float32:
            lines += ([f"{len(self.in_float32)} other convolutions computing CPU inputs in float32:"]
                      + [f"  {line}" for line in self.in_float32])
        lines.append(f"layout inside: {self.layout}")
        if self.not_fused:
            lines += [f"{len(self.not_fused)} parts not fused:"] + [f"  {line}" for line in self.not_fused]
        return "\n".join(lines)


def fuse(model: nn.Module, report: FusionReport) -> nn.Module:
    """`model` (in eval mode, already a copy) with its pointwise convolutions fused and, where it
    traces whole, run on the CPU in its convolutions' fastest layout; parts that do not trace are fused
    child by child."""
    fused = _fuse_traced(model, report)
    fused = _compute_16_bit_convolutions_in_float32(fused, report)
    if isinstance(fused, torch.fx.GraphModule):
        _run_in_fastest_layout(fused, report)
    return fused


def _fuse_traced(model: nn.Module, report: FusionReport) -> nn.Module:
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 -- any tracing failure: fuse the parts instead
        children = list(model.named_children())
        if not children:
            report.not_fused.append(f"{type(model).__name__}: does not trace ({type(error).__name__}: {error})"[:300])
            return model
        for name, child in children:
            sub = FusionReport()
            setattr(model, name, _fuse_traced(child, sub))
            report.fused += [f"{name}.{line}" for line in sub.fused]
            report.not_fused += [f"{name}.{line}" for line in sub.not_fused]
        report.not_fused.append(f"{type(model).__name__} itself does not trace: its children were fused one by one")
        return model
    _drop_eval_identities(traced)
    modules = dict(traced.named_modules())
    with_bn = {node.target for node in traced.graph.nodes if node.op == "call_module"
               and isinstance(modules[node.target], nn.Conv2d) and (user := _only_user(node)) is not None
               and user.op == "call_module" and isinstance(modules[user.target], nn.BatchNorm2d)}
    folded = optimization.fuse(traced, inplace=True, no_trace=True)
    _fuse_pointwise(folded, report, with_bn)
    return folded


def _drop_eval_identities(gm: torch.fx.GraphModule) -> None:
    """Removes what is the identity in eval mode (torchvision's stochastic_depth with training=False,
    nn.Identity, nn.Dropout), so that a convolution and the add after it meet."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        identity = False
        if node.op == "call_function" and getattr(node.target, "__name__", "") == "stochastic_depth":
            training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
            identity = training is False
        elif node.op == "call_module" and isinstance(modules.get(node.target), (nn.Identity, nn.Dropout)):
            identity = True
        if identity and node.args and isinstance(node.args[0], torch.fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()


def _activation_of(node: torch.fx.Node, modules) -> Optional[str]:
    if node.op == "call_module":
        module = modules.get(node.target)
        if type(module) in _ACTIVATION_MODULES:
            return _ACTIVATION_MODULES[type(module)]
        if type(module) is nn.GELU and module.approximate == "none":
            return "gelu"
    elif node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
        if node.target is F.gelu and node.kwargs.get("approximate", "none") != "none":
            return None
        return _ACTIVATION_FUNCTIONS[node.target]
    return None


def _only_user(node: torch.fx.Node) -> Optional[torch.fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _residual_of(add: torch.fx.Node, operand: torch.fx.Node) -> Optional[torch.fx.Node]:
    """The other operand of `add` if it is a plain sum of two tensors, one of them `operand`."""
    if add.op != "call_function" or add.target not in _ADDS or len(add.args) != 2 or add.kwargs:
        return None
    a, b = add.args
    other = b if a is operand else a if b is operand else None
    return other if isinstance(other, torch.fx.Node) and other is not operand else None


def _fuse_pointwise(gm: torch.fx.GraphModule, report: FusionReport, with_bn) -> None:
    """Each 1x1 convolution of gm becomes a PointwiseConv2d with the add and activation after it;
    `with_bn`: the convolutions whose BatchNorm optimization.fuse folded, for the report."""
    from .modules import PointwiseConv2d, _convertible

    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not _convertible(modules.get(node.target)):
            continue
        conv = modules[node.target]
        chain, residual, activation = [node], None, None
        user = _only_user(node)
        if user is not None and (other := _residual_of(user, node)) is not None:
            chain.append(user)
            residual = other
            user = _only_user(user)
        if user is not None and (act := _activation_of(user, modules)) is not None:
            chain.append(user)
            activation = act
        elif user is not None and user.op == "call_module" and \
                type(modules[user.target]).__module__ == "torch.nn.modules.activation":
            report.not_fused.append(f"{user.target}: {type(modules[user.target]).__name__} after {node.target} "
                                    "is not an activation the epilogue has")
        # The add's shapes are not known when tracing: a residual that only broadcasts to the output
        # is added after the kernel (pointwise_conv2d takes one of the output's shape).
        gm.add_submodule(node.target, PointwiseConv2d.from_conv2d(conv, activation=activation,
                                                                  residual_may_broadcast=residual is not None))
        with gm.graph.inserting_after(chain[-1]):
            fused = gm.graph.call_module(node.target, (node.args[0],) if residual is None else (node.args[0], residual))
        chain[-1].replace_all_uses_with(fused)
        for dead in reversed(chain):  # each one's only user was the next
            gm.graph.erase_node(dead)
        parts = ["BatchNorm folded" if node.target in with_bn else "no BatchNorm"]
        if residual is not None:
            parts.append(f"+ residual {residual.name}")
        if activation is not None:
            parts.append(activation)
        report.fused.append(f"{node.target} ({conv.in_channels}->{conv.out_channels}): " + ", ".join(parts))
    gm.graph.lint()
    gm.recompile()


class Conv2dInFloat32(nn.Conv2d):
    """A fused model's nn.Conv2d (not a pointwise one) that computes CPU inputs of the dtypes in
    `in_float32` in float32 and rounds its output once to the input's dtype.

    convert(fuse=True) makes them where PyTorch's CPU convolution runs float32 with oneDNN but has no
    oneDNN kernel for bfloat16 or float16 (CPUs without AVX-512), for inputs in those dtypes and for
    CPU autocast to them: PyTorch runs those through im2col and its own GEMM, a grouped convolution
    group by group. The widened input and weight cost a copy each; in float32, oneDNN runs the
    convolution. Fused, bfloat16, channels_last, batch 4, 2 threads, on an AVX2 AMD EPYC (Zen 2),
    bench/e2e.py: MobileNetV2 268.6 ms with PyTorch's bfloat16 convolutions, 43.5 ms so; ResNet-50
    1154.5 against 237.1 ms (torchvision eager: 946 and 2425 ms). PyTorch's own 16-bit convolution also
    sums in float32, so the numbers change only by where it rounds."""

    in_float32: Tuple[torch.dtype, ...] = ()

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, in_float32: Tuple[torch.dtype, ...]) -> "Conv2dInFloat32":
        """A Conv2dInFloat32 holding the same Parameter objects as `conv` (no copy)."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.in_float32 = tuple(in_float32)
        layer.train(conv.training)
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        cpu = input.device.type == "cpu"
        # Under CPU autocast F.conv2d would cast input, weight and bias to the autocast dtype.
        autocast = cpu and torch.is_autocast_enabled("cpu") and input.dtype != torch.float64
        dtype = torch.get_autocast_dtype("cpu") if autocast else input.dtype
        if not cpu or dtype not in self.in_float32 or (not autocast and self.weight.dtype != dtype):
            return super().forward(input)  # which raises nn.Conv2d's error on mismatched dtypes
        # Outside autocast no context: torch.export would record one.
        with torch.autocast("cpu", enabled=False) if autocast else contextlib.nullcontext():
            widened = [None if t is None else t.to(dtype).float() for t in (input, self.weight, self.bias)]
            return self._conv_forward(*widened).to(dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", in_float32=({', '.join(_dtype_name(d) for d in self.in_float32)})"


def _compute_16_bit_convolutions_in_float32(model: nn.Module, report: FusionReport) -> nn.Module:
    """`model` with each nn.Conv2d left (not pointwise) a Conv2dInFloat32 for the 16-bit dtypes PyTorch
    runs without oneDNN on this CPU, where there are such dtypes."""
    from .modules import _swap_modules, _swappable

    dtypes = _dtypes_computed_in_float32()
    if not dtypes:
        return model

    def swapped(conv: nn.Conv2d, name: str) -> Conv2dInFloat32:
        groups = f", groups {conv.groups}" if conv.groups > 1 else ""
        report.in_float32.append(f"{name or type(conv).__name__} ({conv.in_channels}->{conv.out_channels}, "
                                 f"{'x'.join(map(str, conv.kernel_size))}{groups}): "
                                 f"{', '.join(_dtype_name(d) for d in dtypes)}")
        return Conv2dInFloat32.from_conv2d(conv, dtypes)

    return _swap_modules(model, _swappable, swapped)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Tensor methods whose result depends on the strides, not only the values: Tensor.view of a
# channels_last activation fails where the NCHW one works (x.view(n, -1), say).
_LAYOUT_SENSITIVE_METHODS = {"view", "view_as", "as_strided", "stride", "is_contiguous", "data_ptr"}


def _run_in_fastest_layout(gm: torch.fx.GraphModule, report: FusionReport) -> None:
    """Makes the fused model convert each 4-D CPU input once to the layout its convolutions run fastest
    in for the input's dtype, and give its 4-D outputs back in the input's layout.

    That is channels_last where oneDNN runs PyTorch's convolutions (the 3x3 and depthwise ones left to
    it): oneDNN reorders an NCHW input to a blocked layout and back at every call, and ours are as fast
    channels_last. Fused MobileNetV2, fp32, NCHW input, batch 4, 2 threads, on an AVX2 AMD EPYC: 54-56
    ms, against 30-31 ms with a channels_last input. Inductor's layout optimisation does the same.
    Where oneDNN does not run the dtype (float64; bfloat16 and float16 on CPUs without their
    instructions, unless a Conv2dInFloat32 runs them in float32), PyTorch's own convolution runs a
    grouped convolution group by group, and channels_last makes each group a strided copy: a
    depthwise 3x3, bfloat16, batch 4, on that EPYC took 91-110 ms channels_last against 10-22 ms NCHW
    (a dense 3x3 the other way: 51 against 219 ms).
    So a model with grouped convolutions runs NCHW in those dtypes (_inside_format).

    Where every CPU input runs channels_last, so do the CPU weights of the convolutions left to
    PyTorch; where the layout depends on the dtype, they are NCHW and the input decides.
    Not on CUDA: the GPU kernels' layouts have not been timed against each other. A graph that asks
    for strides (_LAYOUT_SENSITIVE_METHODS) runs in its input's layout; report.layout says which."""
    sensitive = sorted({node.target for node in gm.graph.nodes
                        if node.op == "call_method" and node.target in _LAYOUT_SENSITIVE_METHODS})
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if sensitive or not placeholders:
        if sensitive:
            report.layout += (f" (the model calls Tensor.{', Tensor.'.join(sensitive)}, whose result depends on "
                              "the layout)")
        return
    modules = dict(gm.named_modules())
    grouped = [modules[node.target] for node in gm.graph.nodes if node.op == "call_module"
               and isinstance(modules[node.target], nn.Conv2d) and modules[node.target].groups > 1]
    channels_last_dtypes = None
    if grouped:  # the dtypes oneDNN runs them in, natively or in float32 (Conv2dInFloat32)
        onednn = _onednn_convolution_dtypes()
        channels_last_dtypes = tuple(
            dtype for dtype in (torch.float32, torch.bfloat16, torch.float16)
            if dtype in onednn or all(dtype in getattr(conv, "in_float32", ()) for conv in grouped))
    # PyTorch runs a convolution channels_last if its input or its weight is, and copies the weight
    # to that layout at every call. Where the layout depends on the dtype, NCHW weights let the input
    # decide (a channels_last model's depthwise weights would take its NCHW bfloat16 back to
    # channels_last: MobileNetV2 took 903 ms, not 376, on that EPYC). Where every CPU input runs
    # channels_last, CPU weights are kept so too: fused ResNet-50 from an NCHW model, fp32, 2 threads,
    # a Zen 3 EPYC, paired calls, 0.92x the time at batch 1, 0.98x at batch 4 (45 MB of 3x3 weights
    # copied a call before).
    weights_follow_input = channels_last_dtypes is not None
    for module in modules.values():
        if isinstance(module, nn.Conv2d) and (weights_follow_input or module.weight.device.type == "cpu"):
            module.to(memory_format=torch.contiguous_format if weights_follow_input else torch.channels_last)
    with gm.graph.inserting_after(placeholders[-1]):
        for placeholder in placeholders:
            converted = gm.graph.call_function(_to_inside_layout, (placeholder, channels_last_dtypes))
            placeholder.replace_all_uses_with(converted, delete_user_cb=lambda user: user is not converted)
    output = next(node for node in gm.graph.nodes if node.op == "output")
    with gm.graph.inserting_before(output):
        restored = gm.graph.call_function(_in_layout_of, (output.args[0], placeholders[0], channels_last_dtypes))
    output.args = (restored,)
    gm.graph.lint()
    gm.recompile()
    given_back = "4-D outputs given back in the input's layout"
    if channels_last_dtypes is None:
        report.layout = f"channels_last for CPU inputs ({given_back})"
    else:
        names = ", ".join(_dtype_name(dtype) for dtype in channels_last_dtypes) or "no dtype"
        report.layout = (f"channels_last for CPU inputs in {names}, NCHW in other dtypes, where PyTorch runs the "
                         f"model's {len(grouped)} grouped convolutions without oneDNN on this CPU ({given_back})")


def _dtypes_computed_in_float32() -> Tuple[torch.dtype, ...]:
    """The 16-bit dtypes whose CPU convolutions PyTorch runs without oneDNN here, where it runs float32 ones with it."""
    onednn = _onednn_convolution_dtypes()
    if torch.float32 not in onednn:
        return ()
    return tuple(dtype for dtype in (torch.bfloat16, torch.float16) if dtype not in onednn)


def _onednn_convolution_dtypes():
    """The dtypes in which PyTorch runs CPU convolutions with oneDNN on this machine, as it decides."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return ()
    return tuple(dtype for dtype, supported in ((torch.float32, True),
                                                (torch.bfloat16, torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                                                (torch.float16, torch.ops.mkldnn._is_mkldnn_fp16_supported()))
                 if supported)


def _inside_format(x, channels_last_dtypes) -> Optional[torch.memory_format]:
    """The memory format the model runs in for the input x, None where x stays as it is: a 4-D CPU
    tensor goes channels_last if channels_last_dtypes is None or holds its dtype, NCHW otherwise."""
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu"):
        return None
    inside = (torch.channels_last if channels_last_dtypes is None or x.dtype in channels_last_dtypes
              else torch.contiguous_format)
    return None if x.is_contiguous(memory_format=inside) else inside


def _to_inside_layout(x, channels_last_dtypes):
    inside = _inside_format(x, channels_last_dtypes)
    return x if inside is None else x.contiguous(memory_format=inside)


def _in_layout_of(outputs, first_input, channels_last_dtypes):
    """The model's outputs, each 4-D tensor among them in first_input's layout (channels_last if it is
    so, else NCHW, as the model gives them) if _to_inside_layout converted first_input."""
    if _inside_format(first_input, channels_last_dtypes) is None:
        return outputs
    given = (torch.channels_last if first_input.is_contiguous(memory_format=torch.channels_last)
             else torch.contiguous_format)
    return _pytree.tree_map(
        lambda out: out.contiguous(memory_format=given) if isinstance(out, torch.Tensor) and out.dim() == 4 else out,
        outputs)
