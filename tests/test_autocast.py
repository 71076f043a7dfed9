"""torch.autocast: the op follows F.conv2d's autocast rule (floating inputs other than float64 are
cast to the region's dtype, and the op runs in it), gradients reach the float32 leaves in float32,
and it works under torch.compile and in a converted model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pointwise_cuda as pw
from reference import DEVICES, TOL, assert_rel_close, make_tensor, reference

# The autocast dtypes of each device: CPU's default is bfloat16, CUDA's float16.
AUTOCAST_DTYPES = [(d, t) for d in DEVICES for t in ((torch.bfloat16, torch.float16) if d == "cuda" else (torch.bfloat16,))]


def _ids(param):
    return str(param).replace("torch.", "")


def _leaves(device, dtype=torch.float32, layout="nchw"):
    x = make_tensor((2, 6, 5, 4), layout, dtype, device).requires_grad_(True)
    w = (torch.randn(8, 3, 1, 1, dtype=dtype, device=device) * 0.5).requires_grad_(True)
    b = torch.randn(8, dtype=dtype, device=device, requires_grad=True)
    r = make_tensor((2, 8, 4, 2), layout, dtype, device).requires_grad_(True)
    return x, w, b, r


def _ours(x, w, b, r):
    return pw.pointwise_conv2d(x, w, b, stride=2, padding=(1, 0), groups=2, activation="silu", residual=r)


@pytest.mark.parametrize("device,dtype", AUTOCAST_DTYPES, ids=_ids)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_autocast_casts_like_conv2d(device, dtype, layout):
    x, w, b, r = _leaves(device, layout=layout)
    with torch.autocast(device, dtype=dtype):
        out = _ours(x, w, b, r)
        expected_dtype = F.conv2d(x, w, b, 2, (1, 0), 1, 2).dtype
    assert out.dtype == expected_dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")

    # The reference sees exactly the values the op saw: the leaves rounded to the autocast dtype.
    rounded = [t.detach().to(dtype).double().requires_grad_(True) for t in (x, w, b, r)]
    ref = reference(*rounded[:3], 2, (1, 0), 2, "silu", rounded[3])
    assert_rel_close(out, ref, TOL[dtype])

    grad_out = torch.randn(out.shape, device=device)
    out.backward(grad_out.to(dtype))
    ref.backward(grad_out.to(dtype).double().cpu())
    for name, leaf, ref_leaf in zip(("input", "weight", "bias", "residual"), (x, w, b, r), rounded):
        assert leaf.grad.dtype == torch.float32, f"grad {name} should reach the float32 leaf in float32"
        assert_rel_close(leaf.grad, ref_leaf.grad, 4 * TOL[dtype], f"grad {name}")


@pytest.mark.parametrize("device,dtype", AUTOCAST_DTYPES, ids=_ids)
def test_autocast_mixed_inputs(device, dtype):
    # Inside an autocast model the activations arrive in the low dtype and the parameters in float32.
    x, w, b, r = _leaves(device)
    with torch.autocast(device, dtype=dtype):
        out = _ours(x.detach().to(dtype), w, b, r)
    assert out.dtype == dtype
    ref = reference(*(t.detach().to(dtype) for t in (x, w, b)), 2, (1, 0), 2, "silu", r.detach().to(dtype))
    assert_rel_close(out, ref, TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_leaves_float64_alone(device):
    # F.conv2d's rule: float64 tensors are not autocast.
    x, w, b, r = (t.detach().double() for t in _leaves(device))
    with torch.autocast(device, dtype=torch.bfloat16):
        out = _ours(x, w, b, r)
    assert out.dtype == torch.float64
    assert_rel_close(out, reference(x, w, b, 2, (1, 0), 2, "silu", r), TOL[torch.float64])


@pytest.mark.parametrize("device,dtype", AUTOCAST_DTYPES, ids=_ids)
def test_autocast_converted_model_compiled(device, dtype):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(6, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1, bias=False)).to(device)
    converted = pw.convert(model)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 6, 5, 4, device=device)
    with torch.autocast(device, dtype=dtype):
        expected = model(x)
        eager = converted(x)
        out = compiled(x)
    assert expected.dtype == eager.dtype == out.dtype == dtype
    assert_rel_close(eager, expected.double(), 2 * TOL[dtype], "converted model under autocast")
    assert_rel_close(out, eager.double(), 2 * TOL[dtype], "compiled converted model under autocast")
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in converted.parameters())
