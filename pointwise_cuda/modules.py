"""PointwiseConv2d, a drop-in for a 1x1 nn.Conv2d, and convert() to swap them into a model."""

import copy
import math
import warnings
from typing import Optional

import torch
from torch import nn

import torch.nn.functional as F

from .functional import ACTIVATIONS, _integer, _pair, _padding, pointwise_conv2d

# The activations as torch applies them, for a residual added after the kernel (from_conv2d).
_ACTIVATION_FUNCTIONS = {None: lambda z: z, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
                         "gelu": F.gelu, "hardswish": F.hardswish}

# torch.fx.symbolic_trace records calls of pointwise_conv2d from this module as graph nodes instead
# of tracing into them (its argument checks cannot run on proxies), so converted models trace.
torch.fx.wrap("pointwise_conv2d")


class PointwiseConv2d(nn.Module):
    """A 1x1 convolution with an optional fused activation and residual input.

    Holds `weight` (out_channels, in_channels / groups, 1, 1) and `bias` (out_channels) exactly as
    nn.Conv2d(in_channels, out_channels, 1, ...) does, so state_dicts load either way.
    forward(x, residual=None) returns act(conv(x) + bias + residual). Every argument after the
    channel counts is keyword-only: nn.Conv2d's third positional argument is kernel_size, and
    PointwiseConv2d(6, 4, 1, 2) must not silently mean stride 1, padding 2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        activation: Optional[str] = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        groups = _integer(groups, "groups")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups ({groups}) must be positive and divide in_channels ({in_channels}) "
                f"and out_channels ({out_channels})"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = tuple(_pair(stride, "stride", 1))
        self.padding = tuple(_padding(padding, list(self.stride)))
        self.dilation = tuple(_pair(dilation, "dilation", 1))
        self.groups = groups
        self.activation = activation
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 1, 1, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's initialisation, so a fresh layer trains like one.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, activation: Optional[str] = None,
                    residual_may_broadcast: bool = False) -> "PointwiseConv2d":
        """A PointwiseConv2d holding the same Parameter objects as `conv` (no copy).

        residual_may_broadcast: forward's residual may also be a tensor that only broadcasts to the
        output (what convert(fuse=True) fuses is an add whose shapes are not known when it traces);
        such a residual is added after the kernel, before the activation."""
        if conv.kernel_size != (1, 1) or conv.padding_mode != "zeros":
            raise ValueError(
                f"only 1x1 convolutions with padding_mode='zeros' convert, got kernel_size={conv.kernel_size}, "
                f"padding_mode={conv.padding_mode!r}"
            )
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_channels = conv.in_channels
        layer.out_channels = conv.out_channels
        layer.stride = tuple(conv.stride)
        layer.padding = tuple(_padding(conv.padding, list(conv.stride)))
        layer.dilation = tuple(conv.dilation)
        layer.groups = conv.groups
        layer.activation = activation
        layer.residual_may_broadcast = residual_may_broadcast
        layer.weight = conv.weight
        layer.bias = conv.bias
        layer.train(conv.training)
        return layer

    residual_may_broadcast = False

    def forward(self, input: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.residual_may_broadcast and residual is not None and residual.shape != self._output_shape(input):
            out = pointwise_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return _ACTIVATION_FUNCTIONS[self.activation](out + residual)
        return pointwise_conv2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            activation=self.activation, residual=residual,
        )

    def _output_shape(self, input: torch.Tensor):
        h, w = input.shape[-2:]
        size = [(h + 2 * self.padding[0] - 1) // self.stride[0] + 1, (w + 2 * self.padding[1] - 1) // self.stride[1] + 1]
        return torch.Size([*input.shape[:-3], self.out_channels, *size])

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        return s


def _has_hooks(module: nn.Module) -> bool:
    return any(getattr(module, hooks) for hooks in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _swappable(module: nn.Module) -> bool:
    # Exactly nn.Conv2d: a subclass (parametrize's included) may override forward, and swapping it
    # would change the model. Its weight a Parameter and no hooks: spectral_norm, weight_norm and
    # pruning compute the weight in a forward pre-hook, which the replacement would not run.
    return (type(module) is nn.Conv2d and isinstance(module._parameters.get("weight"), nn.Parameter)
            and not _has_hooks(module))


def _convertible(module: nn.Module) -> bool:
    return _swappable(module) and module.kernel_size == (1, 1) and module.padding_mode == "zeros"


def _swap_modules(model: nn.Module, should_swap, swapped) -> nn.Module:
    """`model` with each module m for which should_swap(m) (the model itself included) replaced, in
    place, by swapped(m, name), name its qualified name ("" for the model)."""
    if should_swap(model):
        return swapped(model, "")
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if should_swap(child):
                setattr(parent, name, swapped(child, f"{parent_name}.{name}" if parent_name else name))
    return model


def convert(model: nn.Module, inplace: bool = False, fuse: bool = False) -> nn.Module:
    """`model` with every 1x1 nn.Conv2d (padding_mode 'zeros') replaced by a PointwiseConv2d.

    The replacements hold the same parameters; every other layer is untouched, and so are the 1x1
    convolutions with hooks or a computed weight (spectral_norm, weight_norm, pruning,
    parametrizations), whose replacement would skip them. With inplace=False (the default) the model
    is deep-copied first and the original is left as it was.

    fuse=True, for inference: the model must be in eval mode (model.eval()). It is traced with
    torch.fx; every BatchNorm that follows a convolution is folded into it, and each 1x1
    convolution's epilogue takes the residual add and the activation (relu, relu6, silu, gelu,
    hardswish) that follow it (fusion.py). Where PyTorch's CPU convolution has oneDNN for float32 but
    not for bfloat16 or float16 (CPUs without AVX-512), the convolutions left to PyTorch compute CPU
    inputs in those dtypes in float32 (fusion.Conv2dInFloat32). The result is a torch.fx.GraphModule whose
    `fusion_report` (a FusionReport) lists what was fused and what was not; a warning names the
    parts not fused. The numbers are the model's, rounded as the folded weights round.
    """
    if fuse:
        from . import fusion

        training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
        if training:
            raise ValueError(
                "convert(model, fuse=True) folds BatchNorm statistics into the convolutions, which only "
                f"an eval-mode model allows: call model.eval() first (in training mode: {', '.join(training[:3])}"
                f"{', ...' if len(training) > 3 else ''})")
        report = fusion.FusionReport()
        fused = fusion.fuse(model if inplace else copy.deepcopy(model), report)
        fused.fusion_report = report
        if report.not_fused:
            warnings.warn(f"convert(fuse=True) left {len(report.not_fused)} parts unfused "
                          f"(model.fusion_report lists them): {'; '.join(report.not_fused[:3])}"
                          f"{'; ...' if len(report.not_fused) > 3 else ''}", stacklevel=2)
        return fused
    if not inplace:
        model = copy.deepcopy(model)
    return _swap_modules(model, _convertible, lambda conv, name: PointwiseConv2d.from_conv2d(conv))
