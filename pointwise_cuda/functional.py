"""The public op: F.conv2d's meaning for a 1x1 weight, with a fused bias + residual + activation epilogue."""

import contextlib
import operator
from typing import Optional, Union

import torch

from . import _C

ops = torch.ops.pointwise_cuda

# None, then the op's names after "none" (csrc/epilogue.h has the list).
ACTIVATIONS = (None,) + tuple(_C.activation_names()[1:])

IntOrPair = Union[int, tuple, list]


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _integer(value, name: str):
    """An integer argument: an int, SymInt or anything else integral (numpy's integers, which
    F.conv2d takes too); not a bool or a float. One that does not fit 64 bits raises ValueError, as
    F.conv2d's argument parser does."""
    if isinstance(value, torch.SymInt):
        return value
    if not isinstance(value, bool):
        try:
            value = operator.index(value)
        except TypeError:
            pass
        else:
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"{name} must fit in a 64-bit integer, got {value}")
            return value
    raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def _pair(value, name: str, minimum: int) -> list:
    # Fast path for plain ints and pairs of them, checked on every call (the general checks below
    # cost about 5 us a call, as much as F.conv2d's whole host path on a small layer).
    if type(value) is int and minimum <= value <= _INT64_MAX:
        return [value, value]
    if type(value) in (tuple, list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and minimum <= value[0] <= _INT64_MAX and minimum <= value[1] <= _INT64_MAX:
        return [value[0], value[1]]
    pair = list(value) if isinstance(value, (tuple, list)) else [value]
    try:
        pair = [_integer(v, name) for v in pair]
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    except ValueError:
        if isinstance(value, (tuple, list)):  # F.conv2d: TypeError for a sequence, ValueError for one int
            raise TypeError(f"{name} must be an int or a pair of 64-bit ints, got {value!r}") from None
        raise
    if len(pair) == 1:  # one value for both axes, also as a 1-element sequence, as in F.conv2d
        pair *= 2
    if len(pair) != 2:  # F.conv2d raises RuntimeError for a wrong length; so do we
        raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 values, got {value!r}")
    if any(v < minimum for v in pair):
        # F.conv2d raises RuntimeError for these; so do we.
        kind = "non-positive" if minimum == 1 else "negative"
        raise RuntimeError(f"{kind} {name} is not supported: {name}={value!r}")
    return pair


def _padding(padding, stride: list) -> list:
    if isinstance(padding, str):
        # For a 1x1 kernel both mean no padding. F.conv2d raises RuntimeError for an unknown
        # string and for 'same' with a stride; so do we.
        if padding not in ("valid", "same"):
            raise RuntimeError(f"Invalid padding string {padding!r}, should be one of ('valid', 'same')")
        if padding == "same" and stride != [1, 1]:
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        return [0, 0]
    return _pair(padding, "padding", 0)


def _tensor_argument_error(input, weight, bias, residual) -> Optional[Exception]:
    """What is wrong with a tensor argument that is no dense tensor (bias and residual may be None):
    F.conv2d's TypeError for a non-tensor, its RuntimeError for sparse, mkldnn and nested tensors,
    which the op's kernels do not take; None if each is one. Asked only once the op has refused its
    arguments (the dispatcher's words then name neither the argument nor what it expects): asked
    on every call it would cost 0.3 us."""
    for name, t, optional in (("input", input, False), ("weight", weight, False), ("bias", bias, True),
                              ("residual", residual, True)):
        if t is None and optional:
            continue
        if not isinstance(t, torch.Tensor):
            return TypeError(f"{name} must be a Tensor{' or None' if optional else ''}, got {type(t).__name__}")
        if t.layout is not torch.strided or t.is_nested:
            kind = "a nested tensor" if t.is_nested else t.layout
            return RuntimeError(f"{name} must be a dense tensor (layout torch.strided), got {kind}")
    return None


def _nvtx_range(input: torch.Tensor):
    # Marks our calls in Nsight Systems timelines; NVTX calls are no-ops unless a profiler is attached.
    if input.is_cuda and not torch.compiler.is_compiling():
        return torch.cuda.nvtx.range("pointwise_cuda.pointwise_conv2d")
    return contextlib.nullcontext()


def pointwise_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding: Union[IntOrPair, str] = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    *,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """act(F.conv2d(input, weight, bias, stride, padding, dilation, groups) + residual), in one kernel.

    weight has shape (C_out, C_in / groups, 1, 1); input is (N, C_in, H, W) or unbatched (C_in, H, W);
    residual, if given, has the output's shape. activation is one of None, "relu", "relu6", "silu",
    "gelu" (erf form). dilation is accepted for F.conv2d compatibility: it changes nothing for a 1x1
    kernel. The output has the input's dtype, device and memory format.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if type(groups) is not int or not _INT64_MIN <= groups <= _INT64_MAX:
        groups = _integer(groups, "groups")
    stride = _pair(stride, "stride", 1)
    padding = _padding(padding, stride)
    _pair(dilation, "dilation", 1)
    if not isinstance(input, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise _tensor_argument_error(input, weight, bias, residual)
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to pointwise_conv2d, but got input of size: {list(input.shape)}"
        )
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
        if residual is not None:
            if residual.dim() != 3:
                raise ValueError(
                    f"residual must have the output's shape (C_out, H_out, W_out) for unbatched input, "
                    f"got {list(residual.shape)}"
                )
            residual = residual.unsqueeze(0)
    with _nvtx_range(input):
        try:
            output = ops.conv_forward(input, weight, bias, residual, stride, padding, groups, activation or "none")
        except (NotImplementedError, RuntimeError):
            error = _tensor_argument_error(input, weight, bias, residual)
            if error is None:
                raise
            raise error from None
    return output.squeeze(0) if unbatched else output
