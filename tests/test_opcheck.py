"""torch.library.opcheck on every op: schema, autograd registration, fake kernel (shapes, strides,
dtype of the real output) and AOT dispatch, over several argument sets."""

import pytest
import torch

import pointwise_cuda  # noqa: F401  (registers the ops)
from reference import DEVICES, make_tensor

ops = torch.ops.pointwise_cuda


def _t(shape, layout="nchw", device="cpu", dtype=torch.float64, grad=False):
    t = make_tensor(shape, layout, dtype, device) if len(shape) == 4 else torch.randn(shape, dtype=dtype, device=device)
    return t.requires_grad_(grad)


def forward_args(device):
    d = dict(device=device)
    return {
        "plain": (_t((2, 5, 4, 3), **d), _t((7, 5, 1, 1), **d), None, None, [1, 1], [0, 0], 1, "none"),
        "bias_relu": (_t((2, 5, 4, 3), **d), _t((7, 5, 1, 1), **d), _t((7,), **d), None, [1, 1], [0, 0], 1, "relu"),
        "channels_last_stride_pad_groups": (
            _t((2, 6, 5, 4), "channels_last", **d), _t((9, 2, 1, 1), **d), _t((9,), **d), None, [2, 1], [1, 2], 3, "silu"
        ),
        "residual_gelu_grad": (
            _t((2, 4, 3, 3), grad=True, **d), _t((6, 4, 1, 1), grad=True, **d), _t((6,), grad=True, **d),
            _t((2, 6, 3, 3), grad=True, **d), [1, 1], [0, 0], 1, "gelu",
        ),
        "channels_last_residual_relu6_grad": (
            _t((2, 4, 5, 5), "channels_last", grad=True, **d), _t((4, 2, 1, 1), grad=True, **d), None,
            _t((2, 4, 3, 3), "channels_last", grad=True, **d), [2, 2], [0, 0], 2, "relu6",
        ),
        "noncontiguous_grad": (
            _t((2, 3, 4, 4), "slice", grad=True, **d), _t((5, 3, 1, 1), grad=True, **d), None, None, [1, 2], [1, 0], 1, "none"
        ),
        "float32_channels_last": (
            _t((2, 8, 4, 4), "channels_last", dtype=torch.float32, **d), _t((8, 8, 1, 1), dtype=torch.float32, **d),
            _t((8,), dtype=torch.float32, **d), None, [1, 1], [0, 0], 1, "relu",
        ),
        "empty_batch": (_t((0, 4, 3, 3), **d), _t((2, 4, 1, 1), **d), None, None, [1, 1], [0, 0], 1, "none"),
    }


def backward_input_args(device):
    d = dict(device=device)
    return {
        "plain": (_t((2, 7, 4, 3), **d), _t((7, 5, 1, 1), **d), [2, 5, 4, 3], [1, 1], [0, 0], 1),
        "stride_pad_groups": (_t((2, 6, 4, 4), **d), _t((6, 2, 1, 1), **d), [2, 4, 5, 4], [2, 2], [1, 2], 2),
        "channels_last_stride": (_t((2, 6, 3, 3), "channels_last", **d), _t((6, 3, 1, 1), **d), [2, 3, 5, 5], [2, 2], [0, 0], 1),
        "channels_last_grad": (
            _t((2, 6, 4, 4), "channels_last", grad=True, **d), _t((6, 3, 1, 1), grad=True, **d), [2, 3, 4, 4], [1, 1], [0, 0], 1
        ),
        "grad_stride_pad": (_t((1, 4, 3, 2), grad=True, **d), _t((4, 6, 1, 1), grad=True, **d), [1, 6, 4, 3], [2, 2], [1, 0], 1),
    }


def backward_weight_args(device):
    d = dict(device=device)
    return {
        "plain": (_t((2, 7, 4, 3), **d), _t((2, 5, 4, 3), **d), [1, 1], [0, 0], 1),
        "stride_pad_groups": (_t((2, 6, 4, 4), **d), _t((2, 4, 5, 4), **d), [2, 2], [1, 2], 2),
        "channels_last_grad": (
            _t((2, 6, 3, 3), "channels_last", grad=True, **d), _t((2, 3, 5, 5), "channels_last", grad=True, **d), [2, 2], [0, 0], 3
        ),
        "grad_noncontiguous": (_t((2, 4, 4, 4), grad=True, **d), _t((2, 3, 4, 4), "permuted", grad=True, **d), [1, 1], [0, 0], 1),
        "empty_batch": (_t((0, 4, 3, 3), **d), _t((0, 2, 3, 3), **d), [1, 1], [0, 0], 2),
    }


def _cases(builder):
    return [pytest.param(device, name, id=f"{device}-{name}") for device in DEVICES for name in builder("cpu")]


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert result and all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("device,name", _cases(forward_args))
def test_opcheck_conv_forward(device, name):
    _opcheck(ops.conv_forward.default, forward_args(device)[name])


@pytest.mark.parametrize("device,name", _cases(backward_input_args))
def test_opcheck_conv_backward_input(device, name):
    _opcheck(ops.conv_backward_input.default, backward_input_args(device)[name])


@pytest.mark.parametrize("device,name", _cases(backward_weight_args))
def test_opcheck_conv_backward_weight(device, name):
    _opcheck(ops.conv_backward_weight.default, backward_weight_args(device)[name])


def test_every_op_is_covered():
    # A new op added to the namespace must get an opcheck above.
    defined = {name for name in dir(ops) if not name.startswith("_") and isinstance(getattr(ops, name), torch._ops.OpOverloadPacket)}
    assert defined == {"conv_forward", "conv_backward_input", "conv_backward_weight"}
