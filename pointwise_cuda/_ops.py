"""Fake kernels for the ops that csrc/ops.cpp defines: shapes, dtypes and strides without data,
for torch.compile and torch.export. Their autograd is registered in C++ (csrc/autograd.cpp).
"""

import torch
from torch._prims_common import suggest_memory_format

ops = torch.ops.pointwise_cuda


def output_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - 1) // stride + 1


def empty_like_kernel(size, like: torch.Tensor) -> torch.Tensor:
    """An output as the kernels allocate it: at::empty in the memory format `like` suggests. (Not
    new_empty(...).contiguous(memory_format): where a shape is both NCHW- and channels_last-contiguous
    -- one channel, or 1x1 images -- that keeps NCHW strides, unlike the kernels.)"""
    return torch.empty(size, dtype=like.dtype, device=like.device, memory_format=suggest_memory_format(like))


def check_geometry(out_channels, height, width, padding) -> None:
    """The checks of the real kernels (csrc/conv_args.cpp) that shapes alone decide, so that a traced
    program fails where an eager call would."""
    torch._check(out_channels > 0, lambda: f"expected weight to be at least 1 at dimension 0, got {out_channels}")
    torch._check(height + 2 * padding[0] >= 1, lambda: "Kernel size can't be greater than actual input size")
    torch._check(width + 2 * padding[1] >= 1, lambda: "Kernel size can't be greater than actual input size")


# ---- fake kernels: the real output's shape, dtype and strides, without computing it ----------


@torch.library.register_fake("pointwise_cuda::conv_forward")
def _(input, weight, bias, residual, stride, padding, groups, activation):
    torch._check(input.dim() == 4, lambda: f"Expected input to be 4-D, got {input.dim()}-D")
    n, _, h, w = input.shape
    check_geometry(weight.shape[0], h, w, padding)
    size = (n, weight.shape[0], output_size(h, stride[0], padding[0]), output_size(w, stride[1], padding[1]))
    return empty_like_kernel(size, input)


@torch.library.register_fake("pointwise_cuda::conv_backward_input")
def _(grad_output, weight, input_size, stride, padding, groups):
    check_geometry(weight.shape[0], input_size[2], input_size[3], padding)
    return empty_like_kernel(input_size, grad_output)


@torch.library.register_fake("pointwise_cuda::conv_backward_weight")
def _(grad_output, input, stride, padding, groups):
    check_geometry(grad_output.shape[1], input.shape[2], input.shape[3], padding)
    return input.new_empty((grad_output.shape[1], input.shape[1] // groups, 1, 1))
