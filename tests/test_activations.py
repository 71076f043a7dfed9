"""Every activation on every CPU kernel set, over the whole float range: NaN, infinities, the far
tails where exp overflows, thresholds and zeros give what torch's own activations give (the CUDA
kernels' epilogue has the same check in test_cuda_emulated.py)."""

import pytest
import torch

import pointwise_cuda as pw
from reference import ACTIVATIONS, SPECIAL_VALUES, TOL, assert_activation_matches_torch, make_tensor

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _specials(dtype, pixels):
    """The special values, repeated over `pixels` pixels (enough for whole and partial tiles)."""
    values = torch.tensor(SPECIAL_VALUES, dtype=torch.float64).to(dtype)
    return values.repeat(pixels // len(SPECIAL_VALUES) + 1)[:pixels]


def test_the_python_api_lists_the_ops_activations():
    # A new activation in csrc/epilogue.h needs a reference here (reference.act64) to be tested.
    assert list(pw.ACTIVATIONS) == ACTIVATIONS


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS[1:])
@pytest.mark.parametrize("path", ["conv", "residual"])
def test_special_values(cpu_path, path, activation, dtype, layout):
    # "conv": one input channel and a weight of 1 make z the input itself; "residual": zero weights
    # make z the residual. 3 x 7 x 11 pixels: tiles whole and partial, direct and buffered.
    n, h, w, c_out = 3, 7, 11, 5
    z = _specials(dtype, n * h * w * c_out).reshape(n, c_out, h, w)
    if path == "conv":
        x = make_tensor((n, 1, h, w), layout, dtype)
        x.copy_(z[:, :1])
        z = z[:, :1].expand(n, c_out, h, w)
        weight, residual = torch.ones(c_out, 1, 1, 1, dtype=dtype), None
    else:
        x = make_tensor((n, 3, h, w), layout, dtype)
        weight = torch.zeros(c_out, 3, 1, 1, dtype=dtype)
        residual = make_tensor((n, c_out, h, w), layout, dtype)
        residual.copy_(z)
    out = pw.pointwise_conv2d(x, weight, activation=activation, residual=residual)
    if path == "conv" and cpu_path in ("avx512_bf16", "amx") and dtype == torch.bfloat16:
        # vdpbf16ps and tdpbf16ps read subnormal inputs as zero (so does F.conv2d's oneDNN kernel on
        # such CPUs).
        z = torch.where(z.abs() < torch.finfo(dtype).tiny, torch.zeros_like(z), z)
    assert_activation_matches_torch(out, z, activation, TOL[dtype], f"{activation} on the {cpu_path} path")
