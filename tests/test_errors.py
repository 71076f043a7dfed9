"""Bad input: each case raises the documented exception type (F.conv2d's where it raises too) with a
message naming the argument, before anything is computed, and leaves every input unmodified."""

import pytest
import torch
import torch.nn.functional as F

import pointwise_cuda as pw
from reference import DEVICES, assert_unchanged, snapshot

ops = torch.ops.pointwise_cuda


def _base(device="cpu"):
    return dict(
        input=torch.randn(2, 6, 4, 5, device=device),
        weight=torch.randn(4, 6, 1, 1, device=device),
        bias=torch.randn(4, device=device),
        residual=torch.randn(2, 4, 4, 5, device=device),
    )


# name: (changes to the base arguments, expected type, message fragment (regex), whether F.conv2d
# (without residual/activation) must raise the same type for the same arguments)
CASES = {
    "kernel_3x3": (dict(weight=torch.randn(4, 6, 3, 3)), ValueError, r"1x1.*weight|weight.*1x1", False),
    "kernel_1x3": (dict(weight=torch.randn(4, 6, 1, 3)), ValueError, r"1x1.*weight|weight.*1x1", False),
    "weight_3d": (dict(weight=torch.randn(4, 6, 1)), RuntimeError, r"weight", False),
    "no_output_channels": (dict(weight=torch.randn(0, 6, 1, 1), bias=None, residual=None), RuntimeError, r"weight", True),
    "input_zero_height": (dict(input=torch.randn(2, 6, 0, 5), residual=None), RuntimeError, r"input size", True),
    "input_zero_width_stride2": (dict(input=torch.randn(2, 6, 4, 0), residual=None, stride=2), RuntimeError, r"input size", True),
    "c_in_mismatch": (dict(weight=torch.randn(4, 5, 1, 1)), RuntimeError, r"input.*channels", True),
    "groups_not_dividing_c_out": (
        dict(weight=torch.randn(5, 3, 1, 1), bias=torch.randn(5), residual=torch.randn(2, 5, 4, 5), groups=2),
        RuntimeError, r"groups", True,
    ),
    "groups_not_dividing_c_in": (
        dict(input=torch.randn(2, 7, 4, 5), weight=torch.randn(4, 3, 1, 1), groups=2), RuntimeError, r"groups", True,
    ),
    "groups_zero": (dict(groups=0), RuntimeError, r"groups", True),
    "groups_negative": (dict(groups=-2), RuntimeError, r"groups", True),
    "groups_float": (dict(groups=2.0), TypeError, r"groups", True),
    "bias_too_long": (dict(bias=torch.randn(5)), RuntimeError, r"bias", True),
    "bias_2d": (dict(bias=torch.randn(1, 4)), RuntimeError, r"bias", True),
    "residual_wrong_spatial": (dict(residual=torch.randn(2, 4, 4, 4)), ValueError, r"residual", False),
    "residual_wrong_channels": (dict(residual=torch.randn(2, 6, 4, 5)), ValueError, r"residual", False),
    "residual_wrong_rank": (dict(residual=torch.randn(4, 4, 5)), ValueError, r"residual", False),
    "residual_broadcastable_only": (dict(residual=torch.randn(1, 4, 1, 1)), ValueError, r"residual", False),
    "weight_dtype": (dict(weight=torch.randn(4, 6, 1, 1, dtype=torch.float64)), RuntimeError, r"weight.*dtype|dtype.*weight", True),
    "bias_dtype": (dict(bias=torch.randn(4, dtype=torch.float16)), RuntimeError, r"bias.*dtype|dtype.*bias", True),
    "residual_dtype": (dict(residual=torch.randn(2, 4, 4, 5, dtype=torch.bfloat16)), RuntimeError, r"residual.*dtype|dtype.*residual", False),
    "integer_dtype": (
        dict(input=torch.randint(-3, 3, (2, 6, 4, 5)), weight=torch.randint(-3, 3, (4, 6, 1, 1)), bias=None, residual=None),
        TypeError, r"input.*floating", False,
    ),
    "bool_dtype": (
        dict(input=torch.ones(2, 6, 4, 5, dtype=torch.bool), weight=torch.ones(4, 6, 1, 1, dtype=torch.bool), bias=None, residual=None),
        TypeError, r"input.*floating", False,
    ),
    "complex_dtype": (
        dict(input=torch.randn(2, 6, 4, 5, dtype=torch.complex64), weight=torch.randn(4, 6, 1, 1, dtype=torch.complex64), bias=None, residual=None),
        TypeError, r"input.*floating", False,
    ),
    "input_2d": (dict(input=torch.randn(4, 5), residual=None), RuntimeError, r"input", True),
    "input_5d": (dict(input=torch.randn(1, 2, 6, 4, 5), residual=None), RuntimeError, r"input", True),
    "stride_0": (dict(stride=0), RuntimeError, r"stride", True),
    "stride_pair_with_0": (dict(stride=(1, 0)), RuntimeError, r"stride", True),
    "stride_negative": (dict(stride=-1), RuntimeError, r"stride", True),
    "padding_negative": (dict(padding=-1), RuntimeError, r"padding", True),
    "padding_pair_negative": (dict(padding=(0, -2)), RuntimeError, r"padding", True),
    "dilation_0": (dict(dilation=0), RuntimeError, r"dilation", True),
    "stride_float": (dict(stride=1.5), TypeError, r"stride", True),
    "stride_str": (dict(stride="2"), TypeError, r"stride", True),
    "stride_bool": (dict(stride=True), TypeError, r"stride", True),
    "stride_pair_of_floats": (dict(stride=(1.0, 2.0)), TypeError, r"stride", True),
    "stride_three_values": (dict(stride=(1, 1, 1)), None, r"stride", True),
    "padding_float": (dict(padding=0.5), TypeError, r"padding", True),
    "padding_unknown_string": (dict(padding="full"), None, r"padding", True),
    "padding_same_with_stride": (dict(padding="same", stride=2), None, r"same|padding", True),
    "dilation_float": (dict(dilation=1.5), TypeError, r"dilation", True),
    "activation_unknown": (dict(activation="tanh"), ValueError, r"activation", False),
    "activation_wrong_case": (dict(activation="ReLU"), ValueError, r"activation", False),
    "activation_gelu_tanh": (dict(activation="gelu_tanh"), ValueError, r"activation", False),
    "input_not_a_tensor": (dict(input=[[1.0]]), TypeError, r"input", True),
    "bias_not_a_tensor": (dict(bias=1.0), TypeError, r"bias", True),
    "residual_not_a_tensor": (dict(residual=1.0), TypeError, r"residual", False),
    # Sizes past int64_t: F.conv2d's ValueError from its argument parser, its RuntimeError for a
    # padding past 2^62; a padded size or an output too large for int64_t is refused, not wrapped.
    "stride_2_63": (dict(stride=2**63), ValueError, r"stride", True),
    "stride_below_int64": (dict(stride=-(2**63) - 1), ValueError, r"stride", True),
    "stride_pair_past_int64": (dict(stride=(1, -(2**63) - 1)), TypeError, r"stride", True),
    "padding_2_63": (dict(padding=2**63), ValueError, r"padding", True),
    "groups_2_63": (dict(groups=2**63), ValueError, r"groups", True),
    "padding_int64_max": (dict(padding=2**63 - 1, residual=None), RuntimeError, r"padding to be at most", True),
    "padding_2_62": (dict(padding=2**62, residual=None), RuntimeError, r"padding to be at most", True),
    "padding_past_padded_size": (dict(padding=2**62 - 1, residual=None), RuntimeError, r"padding.*2\^63", False),
    "padding_past_output_size": (dict(padding=2**40, residual=None), RuntimeError, r"output.*2\^63", True),
}


def _call(args):
    args = dict(args)
    return pw.pointwise_conv2d(
        args.pop("input"), args.pop("weight"), args.pop("bias", None),
        args.pop("stride", 1), args.pop("padding", 0), args.pop("dilation", 1), args.pop("groups", 1),
        activation=args.pop("activation", None), residual=args.pop("residual", None),
    )


def _conv2d_exception(args):
    try:
        F.conv2d(
            args["input"], args["weight"], args.get("bias"), args.get("stride", 1), args.get("padding", 0),
            args.get("dilation", 1), args.get("groups", 1),
        )
    except Exception as exc:  # noqa: BLE001 -- we want F.conv2d's exception type, whatever it is
        return type(exc)
    return None


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name):
    changes, expected, fragment, like_conv2d = CASES[name]
    args = {**_base(), **changes}
    if like_conv2d:
        conv2d_type = _conv2d_exception(args)
        assert conv2d_type is not None, "test construction: F.conv2d accepts these arguments"
        # "Use F.conv2d's exception type where it has one."
        expected = expected or conv2d_type
        assert expected is conv2d_type, f"F.conv2d raises {conv2d_type.__name__}, the test expects {expected.__name__}"
    tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
    saved = snapshot(*tensors)
    with pytest.raises(Exception) as info:
        _call(args)
    assert info.type is expected, f"raised {info.type.__name__}: {info.value}"
    assert info.match(fragment)
    assert_unchanged(saved, tensors)


@pytest.mark.parametrize("name", list(CASES))
def test_meta_kernels_refuse_what_the_kernels_refuse(name):
    # Meta tensors, and the fake tensors of torch.compile and torch.export, run the same checks: a
    # program that fails at run time fails when it is traced.
    from torch._subclasses.fake_tensor import FakeTensorMode

    changes, expected, fragment, like_conv2d = CASES[name]
    args = {**_base(), **changes}
    with pytest.raises(Exception) as real:
        _call(args)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(Exception) as on_meta:
        _call(meta)
    assert (on_meta.type, str(on_meta.value)) == (real.type, str(real.value))
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        with pytest.raises(Exception) as traced:
            _call(fake)
    assert traced.type is real.type and traced.match(fragment)


def test_meta_residual_with_a_cpu_input_is_refused():
    # The Meta kernel runs for it (a meta argument selects it): it must check devices as the CPU one.
    args = _base()
    with pytest.raises(RuntimeError, match=r"residual and input to be on the same device"):
        _call({**args, "residual": args["residual"].to("meta")})


def _jagged_input():
    return torch.nested.nested_tensor([torch.randn(6, 4, 5), torch.randn(3, 4, 5)], layout=torch.jagged)


# Tensors that are not dense: name, (argument, a function of the base value), F.conv2d raises the
# same type for them too.
NOT_DENSE = {
    "input_sparse": ("input", lambda t: t.to_sparse(), True),
    "weight_sparse": ("weight", lambda t: t.to_sparse(), True),
    "bias_sparse": ("bias", lambda t: t.to_sparse(), True),
    "residual_sparse": ("residual", lambda t: t.to_sparse(), False),
    "input_mkldnn": ("input", lambda t: t.to_mkldnn(), False),
    "weight_mkldnn": ("weight", lambda t: t.to_mkldnn(), False),
    "input_nested_jagged": ("input", lambda t: _jagged_input(), True),
}


@pytest.mark.parametrize("name", list(NOT_DENSE))
def test_tensors_that_are_not_dense(name):
    arg, make, like_conv2d = NOT_DENSE[name]
    args = _base()
    args[arg] = make(args[arg])
    if like_conv2d:
        assert _conv2d_exception(args) is RuntimeError
    with pytest.raises(RuntimeError, match=rf"^{arg} must be a dense tensor \(layout torch.strided\), got"):
        _call(args)


def test_residual_unbatched_wrong_shape():
    x = torch.randn(6, 4, 5)
    w = torch.randn(4, 6, 1, 1)
    r = torch.randn(4, 4, 4)
    saved = snapshot(x, w, r)
    with pytest.raises(ValueError, match="residual"):
        pw.pointwise_conv2d(x, w, residual=r)
    assert_unchanged(saved, (x, w, r))


def test_error_before_any_write_with_requires_grad():
    # A failing call builds no autograd graph and leaves no gradient behind.
    x = torch.randn(2, 6, 4, 5, requires_grad=True)
    w = torch.randn(4, 6, 1, 1, requires_grad=True)
    with pytest.raises(RuntimeError, match="bias"):
        pw.pointwise_conv2d(x, w, torch.randn(3))
    assert x.grad is None and w.grad is None


# The ops are public too (torch.ops.pointwise_cuda.*): they check their own arguments.
OP_CASES = {
    "forward_3d_input": (
        lambda: ops.conv_forward(torch.randn(6, 4, 5), torch.randn(4, 6, 1, 1), None, None, [1, 1], [0, 0], 1, "none"),
        RuntimeError, r"input",
    ),
    "forward_bad_activation": (
        lambda: ops.conv_forward(torch.randn(2, 6, 4, 5), torch.randn(4, 6, 1, 1), None, None, [1, 1], [0, 0], 1, "tanh"),
        ValueError, r"activation",
    ),
    "forward_residual_shape": (
        lambda: ops.conv_forward(
            torch.randn(2, 6, 4, 5), torch.randn(4, 6, 1, 1), None, torch.randn(2, 4, 5, 4), [1, 1], [0, 0], 1, "none"
        ),
        ValueError, r"residual",
    ),
    "forward_integer_input": (
        lambda: ops.conv_forward(torch.ones(2, 6, 4, 5, dtype=torch.int32), torch.ones(4, 6, 1, 1, dtype=torch.int32), None, None, [1, 1], [0, 0], 1, "none"),
        TypeError, r"input",
    ),
    "backward_input_grad_output_shape": (
        lambda: ops.conv_backward_input(torch.randn(2, 4, 3, 5), torch.randn(4, 6, 1, 1), [2, 6, 4, 5], [1, 1], [0, 0], 1),
        RuntimeError, r"grad_output",
    ),
    "backward_input_weight_dtype": (
        lambda: ops.conv_backward_input(torch.randn(2, 4, 4, 5), torch.randn(4, 6, 1, 1).double(), [2, 6, 4, 5], [1, 1], [0, 0], 1),
        RuntimeError, r"weight",
    ),
    "backward_input_no_output_channels": (
        lambda: ops.conv_backward_input(torch.randn(2, 0, 4, 5), torch.randn(0, 6, 1, 1), [2, 6, 4, 5], [1, 1], [0, 0], 1),
        RuntimeError, r"weight",
    ),
    "backward_input_stride_0": (
        lambda: ops.conv_backward_input(torch.randn(2, 4, 4, 5), torch.randn(4, 6, 1, 1), [2, 6, 4, 5], [0, 1], [0, 0], 1),
        RuntimeError, r"stride",
    ),
    "backward_weight_grad_output_shape": (
        lambda: ops.conv_backward_weight(torch.randn(2, 4, 4, 4), torch.randn(2, 6, 4, 5), [1, 1], [0, 0], 1),
        RuntimeError, r"grad_output",
    ),
    "backward_weight_groups": (
        lambda: ops.conv_backward_weight(torch.randn(2, 4, 4, 5), torch.randn(2, 6, 4, 5), [1, 1], [0, 0], 4),
        RuntimeError, r"groups",
    ),
    "backward_weight_dtype": (
        lambda: ops.conv_backward_weight(torch.randn(2, 4, 4, 5).half(), torch.randn(2, 6, 4, 5), [1, 1], [0, 0], 1),
        RuntimeError, r"dtype",
    ),
    "backward_weight_negative_padding": (
        lambda: ops.conv_backward_weight(torch.randn(2, 4, 4, 5), torch.randn(2, 6, 4, 5), [1, 1], [0, -1], 1),
        RuntimeError, r"padding",
    ),
}


@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_bad_input(name):
    call, expected, fragment = OP_CASES[name]
    with pytest.raises(Exception) as info:
        call()
    assert info.type is expected, f"raised {info.type.__name__}: {info.value}"
    assert info.match(fragment)


def test_module_constructor_errors():
    with pytest.raises(ValueError, match="groups"):
        pw.PointwiseConv2d(6, 4, groups=4)
    with pytest.raises(ValueError, match="groups"):
        pw.PointwiseConv2d(6, 5, groups=2)
    with pytest.raises(ValueError, match="activation"):
        pw.PointwiseConv2d(6, 4, activation="tanh")
    with pytest.raises(RuntimeError, match="stride"):
        pw.PointwiseConv2d(6, 4, stride=0)
    with pytest.raises(ValueError, match="1x1|kernel"):
        pw.PointwiseConv2d.from_conv2d(torch.nn.Conv2d(6, 4, 3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("on_cpu", ["input", "weight", "bias", "residual"])
def test_tensors_on_different_devices(on_cpu):
    args = _base("cuda")
    args[on_cpu] = args[on_cpu].cpu()
    tensors = list(args.values())
    saved = snapshot(*tensors)
    with pytest.raises(RuntimeError, match=r"device") as info:
        _call(args)
    other = "weight" if on_cpu == "input" else on_cpu
    assert info.match(other)
    assert_unchanged(saved, tensors)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_different_gpus():
    args = _base("cuda:0")
    args["weight"] = args["weight"].to("cuda:1")
    with pytest.raises(RuntimeError, match=r"weight.*device|device.*weight"):
        _call(args)


@pytest.mark.parametrize("device", DEVICES)
def test_errors_do_not_depend_on_requires_grad(device):
    # The same checks run when autograd is recording (the autograd wrapper must not bypass them).
    args = _base(device)
    for t in args.values():
        t.requires_grad_(True)
    args["residual"] = torch.randn(2, 4, 4, 4, device=device, requires_grad=True)
    with pytest.raises(ValueError, match="residual"):
        _call(args)
