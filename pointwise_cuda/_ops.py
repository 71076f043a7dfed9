"""Fake kernels and autograd for the ops that csrc/ops.cpp defines.

The backward of every op is made of the package's own ops (plus aten's activation backwards,
which have derivatives of their own), so gradients of any order work.
"""

import torch
from torch._prims_common import suggest_memory_format

ops = torch.ops.pointwise_cuda


def output_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - 1) // stride + 1


# ---- fake kernels: the real output's shape, dtype and strides, without computing it ----------


@torch.library.register_fake("pointwise_cuda::conv_forward")
def _(input, weight, bias, residual, stride, padding, groups, activation):
    torch._check(input.dim() == 4, lambda: f"Expected input to be 4-D, got {input.dim()}-D")
    n, _, h, w = input.shape
    size = (n, weight.shape[0], output_size(h, stride[0], padding[0]), output_size(w, stride[1], padding[1]))
    return input.new_empty(size).contiguous(memory_format=suggest_memory_format(input))


@torch.library.register_fake("pointwise_cuda::conv_backward_input")
def _(grad_output, weight, input_size, stride, padding, groups):
    return grad_output.new_empty(input_size).contiguous(memory_format=suggest_memory_format(grad_output))


@torch.library.register_fake("pointwise_cuda::conv_backward_weight")
def _(grad_output, input, stride, padding, groups):
    return input.new_empty((grad_output.shape[1], input.shape[1] // groups, 1, 1))


# ---- autograd ---------------------------------------------------------------------------------


def _activation_grad(grad_output, activation, output, preactivation):
    """d act(z) / dz applied to grad_output; relu and relu6 read it off the output alone."""
    if activation == "none":
        return grad_output
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad_output, output, 0)
    if activation == "relu6":
        return torch.ops.aten.hardtanh_backward(grad_output, output, 0.0, 6.0)
    if activation == "silu":
        # Written out rather than aten.silu_backward, which has no derivative of its own.
        z = preactivation()
        s = torch.sigmoid(z)
        return grad_output * s * (1 + z * (1 - s))
    return torch.ops.aten.gelu_backward(grad_output, preactivation())


def _forward_setup_context(ctx, inputs, output):
    input, weight, bias, residual, stride, padding, groups, activation = inputs
    ctx.save_for_backward(input, weight, bias, residual, output)
    ctx.conv = (stride, padding, groups)
    ctx.activation = activation


def _forward_backward(ctx, grad_output):
    input, weight, bias, residual, output = ctx.saved_tensors
    stride, padding, groups = ctx.conv
    needs_input, needs_weight, needs_bias, needs_residual = ctx.needs_input_grad[:4]

    # silu and gelu need the pre-activation: recompute it rather than keep a second output alive.
    def preactivation():
        return ops.conv_forward(input, weight, bias, residual, stride, padding, groups, "none")

    grad_z = _activation_grad(grad_output, ctx.activation, output, preactivation)
    grad_input = grad_weight = grad_bias = grad_residual = None
    if needs_input:
        grad_input = ops.conv_backward_input(grad_z, weight, list(input.shape), stride, padding, groups)
    if needs_weight:
        grad_weight = ops.conv_backward_weight(grad_z, input, stride, padding, groups)
    if needs_bias:
        grad_bias = grad_z.sum((0, 2, 3))
    if needs_residual:
        grad_residual = grad_z
    return grad_input, grad_weight, grad_bias, grad_residual, None, None, None, None


torch.library.register_autograd(
    "pointwise_cuda::conv_forward", _forward_backward, setup_context=_forward_setup_context
)


def _backward_input_setup_context(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, groups = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.conv = (stride, padding, groups)


def _backward_input_backward(ctx, grad_grad_input):
    # grad_input is bilinear in (grad_output, weight): its adjoints are a forward conv and a grad-weight.
    grad_output, weight = ctx.saved_tensors
    stride, padding, groups = ctx.conv
    grad_grad_output = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = ops.conv_forward(grad_grad_input, weight, None, None, stride, padding, groups, "none")
    if ctx.needs_input_grad[1]:
        grad_weight = ops.conv_backward_weight(grad_output, grad_grad_input, stride, padding, groups)
    return grad_grad_output, grad_weight, None, None, None, None


torch.library.register_autograd(
    "pointwise_cuda::conv_backward_input", _backward_input_backward, setup_context=_backward_input_setup_context
)


def _backward_weight_setup_context(ctx, inputs, output):
    grad_output, input, stride, padding, groups = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.conv = (stride, padding, groups)


def _backward_weight_backward(ctx, grad_grad_weight):
    # grad_weight is bilinear in (grad_output, input): its adjoints are a forward conv and a grad-input.
    grad_output, input = ctx.saved_tensors
    stride, padding, groups = ctx.conv
    grad_grad_output = grad_input = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = ops.conv_forward(input, grad_grad_weight, None, None, stride, padding, groups, "none")
    if ctx.needs_input_grad[1]:
        grad_input = ops.conv_backward_input(
            grad_output, grad_grad_weight, list(input.shape), stride, padding, groups
        )
    return grad_grad_output, grad_input, None, None, None


torch.library.register_autograd(
    "pointwise_cuda::conv_backward_weight", _backward_weight_backward, setup_context=_backward_weight_setup_context
)
