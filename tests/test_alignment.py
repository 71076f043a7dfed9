"""Misaligned storage offsets and odd sizes: tensors that start one element into their storage, so
no vector load is aligned (the kernels must check alignment at run time and take a correct path)."""

import pytest
import torch

import pointwise_cuda as pw
from reference import DEVICES, TOL, assert_rel_close, misaligned, poisoned_allocations, reference


SHAPES = [
    pytest.param((2, 17, 5, 7), 33, 1, 0, 1, id="odd"),
    pytest.param((2, 64, 8, 8), 32, 1, 0, 1, id="aligned_sizes"),
    pytest.param((3, 12, 7, 5), 20, 2, 1, 4, id="stride2_pad1_groups4"),
    pytest.param((1, 3, 9, 1), 5, (2, 1), (0, 1), 1, id="w1"),
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("shape,c_out,stride,padding,groups", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_misaligned_forward_and_backward(device, shape, c_out, stride, padding, groups, dtype, channels_last):
    x = misaligned(shape, dtype, device, channels_last).requires_grad_(True)
    w = misaligned((c_out, shape[1] // groups, 1, 1), dtype, device).requires_grad_(True)
    b = misaligned((c_out,), dtype, device).requires_grad_(True)
    out_shape = pw.pointwise_conv2d(x.detach(), w.detach(), None, stride, padding, groups=groups).shape
    r = misaligned(tuple(out_shape), dtype, device, channels_last).requires_grad_(True)
    with poisoned_allocations():  # outputs and gradients start as NaN: every element must be written
        out = pw.pointwise_conv2d(x, w, b, stride, padding, groups=groups, activation="silu", residual=r)
    tol = TOL[dtype]
    assert_rel_close(out, reference(x, w, b, stride, padding, groups, "silu", r), tol, "misaligned forward")

    grad_out = misaligned(tuple(out_shape), dtype, device, channels_last)
    with poisoned_allocations():
        out.backward(grad_out)
    leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, w, b, r)]
    reference(*leaves[:3], stride, padding, groups, "silu", leaves[3]).backward(grad_out.double().cpu())
    # The activation's backward runs in the input's dtype: allow a little more in half precision.
    grad_tol = tol if dtype in (torch.float32, torch.float64) else 2 * tol
    for name, t, ref in zip(("input", "weight", "bias", "residual"), (x, w, b, r), leaves):
        assert_rel_close(t.grad, ref.grad, grad_tol, f"misaligned grad {name}")
