"""Gradients: gradcheck / gradgradcheck in float64, gradients against F.conv2d / nn.Conv2d autograd,
double backward, and the ops' own backward registrations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import pointwise_cuda as pw
from reference import ACTIVATIONS, CASES, DEVICES, TOL, Case, act64, assert_rel_close, make_tensor, poisoned_allocations

ops = torch.ops.pointwise_cuda

# Small shapes for the numerical checks: every feature of the op appears at least once.
GRADCHECK_CASES = [
    Case("plain", 2, 3, 4, 3, 2),
    Case("stride2_pad1", 2, 4, 3, 4, 3, stride=2, padding=1),
    Case("stride2x1_pad1x2", 1, 3, 2, 3, 4, stride=(2, 1), padding=(1, 2)),
    Case("groups2", 2, 4, 6, 3, 2, groups=2),
    Case("groups3_stride2", 1, 6, 3, 3, 3, stride=2, groups=3),
]


def _leaf(t):
    return t.detach().requires_grad_(True)

pytestmark = pytest.mark.every_cpu_isa  # every CPU kernel set (conftest.py)


def _make(case, dtype, device, layout="nchw", bias=True, residual=False, scale=1.0):
    x = _leaf(make_tensor(case.input_shape, layout, dtype, device, scale=scale))
    w = _leaf(torch.randn(case.weight_shape, dtype=dtype, device=device))
    b = _leaf(torch.randn(case.c_out, dtype=dtype, device=device)) if bias else None
    r = _leaf(make_tensor(case.output_shape, layout, dtype, device)) if residual else None
    return x, w, b, r


def _fn(case, activation, with_bias, with_residual):
    def f(x, w, *rest):
        rest = list(rest)
        b = rest.pop(0) if with_bias else None
        r = rest.pop(0) if with_residual else None
        return pw.pointwise_conv2d(x, w, b, case.stride, case.padding, 1, case.groups, activation=activation, residual=r)

    return f


def _scale(activation):
    # relu6 clamps at 6: larger inputs put some pre-activations above it.
    return 2.0 if activation == "relu6" else 1.0


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device, case, activation):
    index = GRADCHECK_CASES.index(case) + ACTIVATIONS.index(activation)
    bias, residual = index % 2 == 0, index % 3 != 0
    layout = "channels_last" if index % 4 == 1 else "nchw"
    x, w, b, r = _make(case, torch.float64, device, layout, bias, residual, _scale(activation))
    inputs = [t for t in (x, w, b, r) if t is not None]
    assert gradcheck(_fn(case, activation, bias, residual), inputs)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("case", [GRADCHECK_CASES[1], GRADCHECK_CASES[3]], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck(device, case, activation):
    # Second derivatives through the backward, which is made of the package's ops (and, for silu
    # and gelu, aten's activation backwards with their second derivatives).
    x, w, b, r = _make(case, torch.float64, device, "nchw", True, True, _scale(activation))
    assert gradgradcheck(_fn(case, activation, True, True), [x, w, b, r])


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_channels_last_no_bias(device):
    case = GRADCHECK_CASES[2]
    x, w, _, _ = _make(case, torch.float64, device, "channels_last", bias=False)
    assert gradgradcheck(_fn(case, "gelu", False, False), [x, w])


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_backward_ops_directly(device):
    # The autograd registrations of conv_backward_input and conv_backward_weight themselves.
    case = GRADCHECK_CASES[4]
    stride, padding = [2, 2], [1, 0]
    x = _leaf(torch.randn(case.input_shape, dtype=torch.float64, device=device))
    w = _leaf(torch.randn(case.weight_shape, dtype=torch.float64, device=device))
    out_shape = ops.conv_forward(x, w, None, None, stride, padding, case.groups, "none").shape
    go = _leaf(torch.randn(out_shape, dtype=torch.float64, device=device))

    def grad_input(go, w):
        return ops.conv_backward_input(go, w, list(case.input_shape), stride, padding, case.groups)

    def grad_weight(go, x):
        return ops.conv_backward_weight(go, x, stride, padding, case.groups)

    assert gradcheck(grad_input, [go, w])
    assert gradcheck(grad_weight, [go, x])
    assert gradgradcheck(grad_input, [go, w])
    assert gradgradcheck(grad_weight, [go, x])


def _grads_reference(case, x, w, b, r, activation, grad_out):
    """Gradients of sum(act(F.conv2d(...) + r) * grad_out) by F.conv2d's autograd, in float64."""
    leaves = [None if t is None else t.detach().double().requires_grad_(True) for t in (x, w, b, r)]
    x64, w64, b64, r64 = leaves
    y = F.conv2d(x64, w64, b64, case.stride, case.padding, 1, case.groups)
    if r64 is not None:
        y = y + r64
    act64(y, activation).backward(grad_out.double())
    return [None if t is None else t.grad for t in leaves]


def _backward_ours(case, x, w, b, r, activation):
    """Runs our op and its backward for a random grad_out (outputs poisoned first); returns grad_out."""
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, 1, case.groups, activation=activation, residual=r)
    grad_out = torch.randn_like(out)
    with poisoned_allocations():
        out.backward(grad_out)
    return grad_out


def _conv2d_grads(case, x, w, b, r, activation, grad_out):
    """The same loss's gradients by nn.Conv2d's own autograd, in x's dtype and on its device, except
    the activation's derivative, taken at the float64 pre-activation. nn.Conv2d's output is rounded
    to the dtype before the residual is added, ours is not, so a pre-activation within that rounding
    of a kink of ReLU (or ReLU6) can fall on the other side of it in the two: one such element of
    4800 moved bfloat16's relative error by about 2e-2, and which elements fall so changes with the
    torch release (torch 2.11, bfloat16 channels_last: 5.9e-2 against a tolerance of 4e-2). Where the
    kinks fall is checked against float64 (_grads_reference); here, the rest of the backward."""
    z64 = F.conv2d(x.double(), w.double(), None if b is None else b.double(), case.stride, case.padding, 1, case.groups)
    if r is not None:
        z64 = z64 + r.double()
    z64 = z64.detach().requires_grad_(True)
    (grad_z,) = torch.autograd.grad(act64(z64, activation), z64, grad_out.double())
    conv = nn.Conv2d(case.c_in, case.c_out, 1, case.stride, case.padding, groups=case.groups, bias=b is not None,
                     device=x.device, dtype=x.dtype)
    with torch.no_grad():
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
    xc = x.detach().clone().requires_grad_(True)
    rc = None if r is None else r.detach().clone().requires_grad_(True)
    (conv(xc) + (rc if rc is not None else 0)).backward(grad_z.to(x.dtype))
    return [xc.grad, conv.weight.grad, None if b is None else conv.bias.grad, None if rc is None else rc.grad]


GRAD_CASES = [c for c in CASES if c.name in ("cin3_cout17", "cin63_cout63", "stride2_pad1x2", "groups4_stride2_pad1", "hw1_pad1", "odd_large")]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "slice"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_grads_match_conv2d_fp32(device, case, layout, activation):
    index = GRAD_CASES.index(case) + ACTIVATIONS.index(activation)
    bias, residual = index % 3 != 2, index % 2 == 0
    x, w, b, r = _make(case, torch.float32, device, layout, bias, residual, _scale(activation))
    grad_out = _backward_ours(case, x, w, b, r, activation)
    refs = _grads_reference(case, x, w, b, r, activation, grad_out)
    torch_grads = _conv2d_grads(case, x, w, b, r, activation, grad_out)
    for name, t, ref, tg in zip(("input", "weight", "bias", "residual"), (x, w, b, r), refs, torch_grads):
        if t is None:
            continue
        assert t.grad is not None, f"no gradient for {name}"
        assert t.grad.dtype == t.dtype and t.grad.shape == t.shape
        assert_rel_close(t.grad, ref, 1e-5, f"grad {name} vs float64")
        assert_rel_close(t.grad, tg, 2e-5, f"grad {name} vs nn.Conv2d fp32")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_matches_conv2d(device, activation):
    # d/d(params) of ||d loss / d x||^2: needs the backward to be differentiable.
    case = Case("dbl", 2, 5, 6, 4, 3, stride=(2, 1), padding=1, groups=1)
    x, w, b, r = _make(case, torch.float64, device, "channels_last", True, True, _scale(activation))
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, activation=activation, residual=r)
    grad_out = torch.randn_like(out)
    (gx, gw) = torch.autograd.grad(out, (x, w), grad_out, create_graph=True)
    (gx.square().sum() + gw.square().sum()).backward()

    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b, r)]
    x2, w2, b2, r2 = leaves
    y = act64(F.conv2d(x2, w2, b2, case.stride, case.padding) + r2, activation)
    (gx2, gw2) = torch.autograd.grad(y, (x2, w2), grad_out, create_graph=True)
    (gx2.square().sum() + gw2.square().sum()).backward()

    for name, mine, ref in zip(("input", "weight", "bias", "residual"), (x, w, b, r), leaves):
        if activation in (None, "relu", "relu6") and name in ("bias", "residual"):
            # Piecewise-linear activations: the second derivative w.r.t. these is zero (or None).
            assert mine.grad is None or torch.count_nonzero(mine.grad) == 0
            continue
        assert_rel_close(mine.grad, ref.grad, 1e-10, f"double-backward grad {name}")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("needs", ["input", "weight", "bias", "residual"])
@pytest.mark.parametrize("device", DEVICES)
def test_only_needed_gradients(device, needs, activation):
    # Each activation saves a different set of tensors for the backward (none of them when only the
    # input needs a gradient and the activation is piecewise linear: the frozen-weights case).
    case = Case("partial", 2, 4, 6, 3, 3, stride=2, padding=1, groups=2)
    x, w, b, r = [t.detach() for t in _make(case, torch.float32, device, "nchw", True, True, _scale(activation))]
    tensors = dict(input=x, weight=w, bias=b, residual=r)
    tensors[needs].requires_grad_(True)
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation=activation, residual=r)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    refs = dict(zip(("input", "weight", "bias", "residual"), _grads_reference(case, x, w, b, r, activation, grad_out)))
    for name, t in tensors.items():
        if name == needs:
            assert_rel_close(t.grad, refs[name], 1e-5, f"grad {name}")
        else:
            assert t.grad is None


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_backward(device, layout):
    case = Case("n0", 0, 6, 4, 3, 5, stride=2, padding=1, groups=2)
    x, w, b, r = _make(case, torch.float32, device, layout, True, True)
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation="gelu", residual=r)
    out.sum().backward()
    assert x.grad.shape == x.shape and r.grad.shape == r.shape
    assert w.grad.shape == w.shape and torch.count_nonzero(w.grad) == 0
    assert b.grad.shape == b.shape and torch.count_nonzero(b.grad) == 0


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_zero_input_channels(device, layout):
    # No input channels: the output is bias + residual alone, and grad-input is an empty tensor.
    case = Case("cin0", 2, 0, 5, 4, 3, stride=2, padding=1)
    x, w, b, r = _make(case, torch.float32, device, layout, True, True)
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, activation="relu", residual=r)
    assert_rel_close(out, torch.relu(b.double().view(1, -1, 1, 1) + r.double()), 1e-6)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    # relu's derivative at bias + residual, summed over images and pixels for the bias.
    grad_z = grad_out.double() * (b.double().view(1, -1, 1, 1) + r.double() > 0)
    assert_rel_close(r.grad, grad_z, 1e-6, "grad residual")
    assert_rel_close(b.grad, grad_z.sum((0, 2, 3)), 1e-5, "grad bias")


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_backward(device):
    x = _leaf(torch.randn(6, 4, 5, dtype=torch.float64, device=device))
    w = _leaf(torch.randn(4, 3, 1, 1, dtype=torch.float64, device=device))
    b = _leaf(torch.randn(4, dtype=torch.float64, device=device))
    r = _leaf(torch.randn(4, 3, 4, dtype=torch.float64, device=device))
    assert gradcheck(lambda x, w, b, r: pw.pointwise_conv2d(x, w, b, 2, 1, groups=2, activation="silu", residual=r), [x, w, b, r])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_grad_input_memory_format_follows_input(device, layout):
    # The gradient w.r.t. the input comes back in the input's layout, as F.conv2d's does.
    case = Case("fmt", 2, 8, 6, 5, 5, stride=2, padding=1)
    x, w, _, _ = _make(case, torch.float32, device, layout, bias=False)
    out = pw.pointwise_conv2d(x, w, None, case.stride, case.padding)
    (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
    ref = F.conv2d(x, w, None, case.stride, case.padding)
    (gx_ref,) = torch.autograd.grad(ref, x, torch.ones_like(ref))
    assert gx.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert gx.stride() == gx_ref.stride()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_grads_low_precision(device, dtype, activation, layout):
    # Against float64 autograd from the same low-precision values, and against nn.Conv2d in dtype.
    case = Case("lp", 4, 24, 40, 9, 7, stride=2, padding=1, groups=2)
    x, w, b, r = _make(case, dtype, device, layout, True, True)
    grad_out = _backward_ours(case, x, w, b, r, activation)
    refs = _grads_reference(case, x, w, b, r, activation, grad_out)
    torch_grads = _conv2d_grads(case, x, w, b, r, activation, grad_out)

    tol = TOL[dtype] * (2 if activation else 1)  # the activation's backward rounds to dtype once more
    for name, t, ref, tg in zip(("input", "weight", "bias", "residual"), (x, w, b, r), refs, torch_grads):
        assert t.grad.dtype == dtype
        assert_rel_close(t.grad, ref, tol, f"{dtype} grad {name} vs float64")
        assert_rel_close(t.grad, tg, 2 * tol, f"{dtype} grad {name} vs nn.Conv2d")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("activation", [None, "relu6", "silu"], ids=str)
def test_grads_tf32_cuda(activation, layout, tf32_on):
    case = Case("tf32", 8, 96, 64, 14, 14, stride=2, padding=1, groups=2)
    x, w, b, r = _make(case, torch.float32, "cuda", layout, True, True, _scale(activation))
    grad_out = _backward_ours(case, x, w, b, r, activation)
    refs = _grads_reference(case, x, w, b, r, activation, grad_out)
    torch_grads = _conv2d_grads(case, x, w, b, r, activation, grad_out)
    for name, t, ref, tg in zip(("input", "weight", "bias", "residual"), (x, w, b, r), refs, torch_grads):
        assert_rel_close(t.grad, ref, 2e-3, f"TF32 grad {name} vs float64")
        assert_rel_close(t.grad, tg, 4e-3, f"TF32 grad {name} vs nn.Conv2d (TF32)")


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
def test_forward_mode_ad_is_refused(requires_grad):
    # No forward-AD formula: a tangent must raise, never come back as zeros or None.
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=requires_grad)
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.func.jvp(lambda a: pw.pointwise_conv2d(a, w), (x,), (torch.ones_like(x),))
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="forward-mode AD|jvp is not implemented"):
        pw.pointwise_conv2d(fwAD.make_dual(x, torch.ones_like(x)), w)
