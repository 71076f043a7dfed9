"""Forward of pointwise_conv2d against a float64 F.conv2d reference, over the geometry sweep.

Every call also checks the output's dtype, device and memory format (against F.conv2d's output for
the same input) and that no input was modified.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pointwise_cuda as pw
from reference import (
    ACTIVATIONS,
    CASES,
    DEVICES,
    LAYOUTS,
    TF32_TOL,
    TOL,
    Case,
    assert_rel_close,
    assert_unchanged,
    make_tensor,
    poisoned_allocations,
    reference,
    rel_err,
    snapshot,
)

pytestmark = pytest.mark.every_cpu_isa  # every CPU kernel set (conftest.py)

requires_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("device", DEVICES)
def test_poisoned_allocations_start_as_nan(device):
    # Every reference check here relies on it: an output allocated inside starts as NaN.
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        for shape, memory_format in [((1,), torch.contiguous_format), ((3, 5, 7, 2), torch.channels_last),
                                     ((100_000,), torch.contiguous_format)]:
            with poisoned_allocations():
                t = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
            assert t.isnan().all(), (dtype, shape)
    assert not torch.are_deterministic_algorithms_enabled(), "poisoned_allocations left deterministic mode on"


def _inputs(case: Case, layout, dtype, device, bias=True, residual=False, residual_layout=None, scale=1.0):
    x = make_tensor(case.input_shape, layout, dtype, device, scale=scale)
    w = torch.randn(case.weight_shape, dtype=torch.float64, device=device).to(dtype)
    b = torch.randn(case.c_out, dtype=torch.float64, device=device).to(dtype) if bias else None
    r = make_tensor(case.output_shape, residual_layout or layout, dtype, device) if residual else None
    return x, w, b, r


def _check_call(case, x, w, b, r, activation, tol):
    """Runs the op once and checks values, dtype, device, memory format and input immutability."""
    saved = snapshot(x, w, b, r)
    with poisoned_allocations():
        out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, 1, case.groups, activation=activation, residual=r)
    assert_unchanged(saved, (x, w, b, r))

    assert out.shape == case.output_shape
    assert out.dtype == x.dtype
    assert out.device == x.device
    ref = reference(x, w, b, case.stride, case.padding, case.groups, activation, r)
    assert_rel_close(out, ref, tol)

    # The memory format follows the input exactly as F.conv2d's does on the CPU in float32, on every
    # device and in every dtype. (cuDNN returns NCHW for float64 whatever the input's format, and
    # F.conv2d's grouped float64 CPU path is very slow.) The float32 copy keeps a dense input's
    # strides, and F.conv2d reads any other input by its suggested memory format, as the copy does.
    like_x, like_w = x.to("cpu", torch.float32), w.to("cpu", torch.float32)
    like = F.conv2d(like_x, like_w, None, case.stride, case.padding, 1, case.groups)
    assert out.is_contiguous(memory_format=torch.channels_last) == like.is_contiguous(
        memory_format=torch.channels_last
    )
    assert out.stride() == like.stride()
    # A fresh tensor, not a view of (or written into) any input.
    for t in (x, w, b, r):
        if t is not None and out.numel() > 0:
            assert out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    return out


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("device", DEVICES)
def test_forward_sweep(device, dtype, case, layout, bias):
    x, w, b, _ = _inputs(case, layout, dtype, device, bias=bias)
    _check_call(case, x, w, b, None, None, TOL[dtype])


ACT_CASES = [c for c in CASES if c.name in ("cin17_cout3", "stride2_pad1x2", "groups3", "hw1")]
# The residual comes in another layout than the input for nchw / channels_last inputs.
RESIDUAL_LAYOUT = {"nchw": "channels_last", "channels_last": "nchw", "slice": "permuted"}


@pytest.mark.parametrize("residual", [False, True], ids=["noresidual", "residual"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", list(RESIDUAL_LAYOUT))
@pytest.mark.parametrize("case", ACT_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("device", DEVICES)
def test_forward_activation_residual(device, dtype, case, layout, activation, residual):
    # relu6 needs pre-activations above 6 as well as below 0 to show its clamp.
    scale = 4.0 if activation == "relu6" else 1.0
    x, w, b, r = _inputs(
        case, layout, dtype, device, bias=True, residual=residual, residual_layout=RESIDUAL_LAYOUT[layout], scale=scale
    )
    if activation == "relu6":
        pre = reference(x, w, b, case.stride, case.padding, case.groups, None, r)
        assert (pre > 6).any() and (pre < 0).any(), "test construction: relu6's clamp is not exercised"
    _check_call(case, x, w, b, r, activation, TOL[dtype])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_forward_low_precision(device, dtype, case, layout):
    # The reference is computed from the same low-precision values, upcast to float64.
    index = CASES.index(case)
    activation = ACTIVATIONS[index % len(ACTIVATIONS)]
    if math.prod(case.output_shape) < 64:
        # A handful of outputs may all be negative: a ReLU would leave nothing to compare.
        activation = None
    residual = index % 2 == 1
    x, w, b, r = _inputs(case, layout, dtype, device, bias=index % 3 != 2, residual=residual)
    _check_call(case, x, w, b, r, activation, TOL[dtype])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice"])
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("cin63_cout63", "stride2_pad1x2", "groups3", "wide")], ids=str)
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=requires_cuda)])
def test_forward_tf32(device, case, layout, tf32_on):
    assert torch.backends.cudnn.allow_tf32
    x, w, b, r = _inputs(case, layout, torch.float32, device, bias=True, residual=True)
    _check_call(case, x, w, b, r, "relu", TF32_TOL)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=requires_cuda)])
def test_fp32_uses_tf32_exactly_when_allowed(device, layout, pin_tf32):
    # fp32 follows torch.backends.cudnn.allow_tf32 like F.conv2d: TF32 when True (an error well
    # above exact fp32's on a long reduction), exact fp32 when False.
    case = Case("k512", 4, 512, 256, 16, 16)
    x, w, _, _ = _inputs(case, layout, torch.float32, device, bias=False)
    ref = reference(x, w)
    torch.backends.cudnn.allow_tf32 = False
    exact = rel_err(pw.pointwise_conv2d(x, w), ref)
    torch.backends.cudnn.allow_tf32 = True
    tf32 = rel_err(pw.pointwise_conv2d(x, w), ref)
    assert exact < TOL[torch.float32]
    assert 2e-5 < tf32 < TF32_TOL, f"TF32 on: relative error {tf32:.2e} (exact fp32: {exact:.2e})"


@pytest.mark.parametrize("activation", [None, "relu", "gelu"], ids=str)
@pytest.mark.parametrize("residual", [False, True], ids=["noresidual", "residual"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, (1, 2))], ids=["plain", "stride2_pad1x2"])
@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_input(device, stride, padding, residual, activation):
    x = torch.randn(6, 5, 7, device=device)
    w = torch.randn(4, 3, 1, 1, device=device)
    b = torch.randn(4, device=device)
    like = F.conv2d(x, w, b, stride, padding, 1, 2)
    r = torch.randn(like.shape, device=device) if residual else None
    saved = snapshot(x, w, b, r)
    with poisoned_allocations():
        out = pw.pointwise_conv2d(x, w, b, stride, padding, groups=2, activation=activation, residual=r)
    assert_unchanged(saved, (x, w, b, r))
    assert out.dim() == 3 and out.shape == like.shape
    assert out.stride() == like.stride()
    assert out.dtype == x.dtype and out.device == x.device
    ref = reference(x[None], w, b, stride, padding, 2, activation, None if r is None else r[None])[0]
    assert_rel_close(out, ref, TOL[torch.float32])


@pytest.mark.parametrize("residual", [False, True], ids=["noresidual", "residual"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device, layout, residual):
    case = Case("n0", 0, 6, 4, 5, 3, stride=2, padding=1, groups=2)
    x, w, b, r = _inputs(case, layout, torch.float32, device, residual=residual)
    saved = snapshot(x, w, b, r)
    out = pw.pointwise_conv2d(x, w, b, 2, 1, groups=2, activation="silu", residual=r)
    assert_unchanged(saved, (x, w, b, r))
    like = F.conv2d(x, w, b, 2, 1, 1, 2)
    assert out.shape == like.shape == case.output_shape
    assert out.stride() == like.stride()
    assert out.dtype == x.dtype and out.device == x.device


@pytest.mark.parametrize("dilation", [2, (3, 1)], ids=["2", "3x1"])
@pytest.mark.parametrize("device", DEVICES)
def test_dilation_changes_nothing(device, dilation):
    # F.conv2d's dilation is accepted; for a 1x1 kernel it does not change the result.
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64, device=device)
    w = torch.randn(3, 5, 1, 1, dtype=torch.float64, device=device)
    out = pw.pointwise_conv2d(x, w, None, 2, 1, dilation)
    ref = F.conv2d(x, w, None, 2, 1, dilation)
    assert_rel_close(out, ref, TOL[torch.float64])


@pytest.mark.parametrize(
    "arguments",
    [dict(stride=(2,)), dict(padding=[1]), dict(stride=np.int64(2), padding=(np.int32(1), 0)), dict(groups=np.int64(2))],
    ids=["stride_1_tuple", "padding_1_list", "numpy_stride_padding", "numpy_groups"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_arguments_as_f_conv2d_takes_them(device, arguments):
    # One-element sequences and numpy integers, which F.conv2d accepts (and convert()ed layers carry).
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, device=device)
    w = torch.randn(4, 6 // arguments.get("groups", 1), 1, 1, dtype=torch.float64, device=device)
    assert_rel_close(pw.pointwise_conv2d(x, w, **arguments), F.conv2d(x, w, **arguments), TOL[torch.float64])


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("device", DEVICES)
def test_padding_strings(device, padding):
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64, device=device)
    w = torch.randn(3, 5, 1, 1, dtype=torch.float64, device=device)
    out = pw.pointwise_conv2d(x, w, padding=padding)
    assert_rel_close(out, F.conv2d(x, w, padding=padding), TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_empty_image_with_padding(device):
    # No input rows, one row of padding on each side: two output rows of act(bias) alone. (F.conv2d
    # refuses empty images unless the batch or the channels are empty too; the result is well defined.)
    x = torch.randn(2, 4, 0, 3, dtype=torch.float64, device=device)
    w = torch.randn(5, 4, 1, 1, dtype=torch.float64, device=device)
    b = torch.randn(5, dtype=torch.float64, device=device)
    with poisoned_allocations():
        out = pw.pointwise_conv2d(x, w, b, stride=(1, 2), padding=1, activation="silu")
    assert out.shape == (2, 5, 2, 3)
    assert_rel_close(out, F.silu(b).view(1, 5, 1, 1).expand(2, 5, 2, 3), TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_stride_larger_than_input(device):
    # Every output pixel but the first reads padding: those outputs are act(bias) alone.
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, device=device)
    w = torch.randn(5, 4, 1, 1, dtype=torch.float64, device=device)
    b = torch.randn(5, dtype=torch.float64, device=device)
    out = pw.pointwise_conv2d(x, w, b, stride=4, padding=2, activation="silu")
    assert_rel_close(out, reference(x, w, b, 4, 2, 1, "silu"), TOL[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_repeated_calls_are_bitwise_identical(device):
    x = make_tensor((3, 33, 9, 11), "channels_last", torch.float32, device)
    w = torch.randn(65, 33, 1, 1, device=device)
    b = torch.randn(65, device=device)
    first = pw.pointwise_conv2d(x, w, b, activation="gelu")
    second = pw.pointwise_conv2d(x, w, b, activation="gelu")
    assert torch.equal(first, second)
