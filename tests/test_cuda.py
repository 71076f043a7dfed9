"""CUDA-only behaviour: CUDA graphs, side streams, a second GPU, tensors over 2^31 elements, and
bitwise-deterministic gradients. (The forward sweep, gradients, opcheck, compile and misalignment
tests run on CUDA too, through their `device` parametrisations.)"""

import pytest
import torch

import pointwise_cuda as pw
from reference import SPLIT_CASES, TOL, Case, assert_rel_close, make_tensor, poisoned_allocations, reference, rel_err

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ops = torch.ops.pointwise_cuda


def _fresh_like(t):
    return torch.randn(t.shape, dtype=torch.float64, device=t.device).to(t.dtype)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize(
    "case",
    # the second one splits its channel reduction: a workspace allocated and a second kernel, captured
    [Case("graph", 8, 32, 48, 10, 9, stride=2, padding=1, groups=2), Case("graph_split", 32, 1152, 48, 1, 1)],
    ids=str,
)
def test_cuda_graph_capture_and_replay(case, dtype, layout):
    x = make_tensor(case.input_shape, layout, dtype, "cuda")
    w = torch.randn(case.weight_shape, device="cuda").to(dtype)
    b = torch.randn(case.c_out, device="cuda").to(dtype)
    r = make_tensor(case.output_shape, layout, dtype, "cuda")

    def call():
        return pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation="gelu", residual=r)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the capture (workspaces, autotuning, lazy init)
            call()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = call()

    for _ in range(2):
        new = [_fresh_like(t) for t in (x, w, b, r)]
        for static, fresh in zip((x, w, b, r), new):
            static.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert_rel_close(static_out, reference(*new[:3], case.stride, case.padding, case.groups, "gelu", new[3]), TOL[dtype], "graph replay")


def test_cuda_graph_forward_and_backward():
    # make_graphed_callables captures the forward and the backward (both of the package's ops).
    layer = pw.PointwiseConv2d(24, 40, stride=2, padding=1, groups=4, activation="silu").cuda()
    sample = torch.randn(6, 24, 9, 9, device="cuda", requires_grad=True)
    graphed = torch.cuda.make_graphed_callables(layer, (sample,))
    for _ in range(2):
        x = torch.randn(6, 24, 9, 9, device="cuda", requires_grad=True)
        layer.zero_grad()
        out = graphed(x)
        grad_out = torch.randn_like(out)
        out.backward(grad_out)
        leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, layer.weight, layer.bias)]
        ref = reference(*leaves, 2, 1, 4, "silu")
        ref.backward(grad_out.double().cpu())
        assert_rel_close(out, ref, TOL[torch.float32], "graphed forward")
        for name, t, rt in zip(("input", "weight", "bias"), (x, layer.weight, layer.bias), leaves):
            assert_rel_close(t.grad, rt.grad, TOL[torch.float32], f"graphed grad {name}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_side_stream(layout):
    # The kernels run on the current stream: the input below is produced on the side stream after a
    # long sleep, so a kernel launched on any other stream would read it before it is written.
    case = Case("stream", 16, 64, 96, 16, 16)
    x = make_tensor(case.input_shape, layout, torch.float32, "cuda")
    w = torch.randn(case.weight_shape, device="cuda", requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        x2 = (x * 2).requires_grad_(True)
        out = pw.pointwise_conv2d(x2, w, activation="relu")
        grad_out = torch.ones_like(out)
        out.backward(grad_out)
    side.synchronize()
    leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x * 2, w)]
    ref = reference(*leaves, activation="relu")
    ref.backward(grad_out.double().cpu())
    assert_rel_close(out, ref, TOL[torch.float32], "side-stream forward")
    assert_rel_close(x2.grad, leaves[0].grad, TOL[torch.float32], "side-stream grad input")
    assert_rel_close(w.grad, leaves[1].grad, TOL[torch.float32], "side-stream grad weight")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_second_gpu(layout):
    torch.cuda.set_device(0)
    case = Case("gpu1", 4, 24, 36, 9, 9, stride=2, padding=1, groups=3)
    x = make_tensor(case.input_shape, layout, torch.float32, "cuda:1").requires_grad_(True)
    w = torch.randn(case.weight_shape, device="cuda:1", requires_grad=True)
    b = torch.randn(case.c_out, device="cuda:1", requires_grad=True)
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation="relu6")
    assert out.device == torch.device("cuda:1")
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert torch.cuda.current_device() == 0
    leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, w, b)]
    ref = reference(*leaves, case.stride, case.padding, case.groups, "relu6")
    ref.backward(grad_out.double().cpu())
    assert_rel_close(out, ref, TOL[torch.float32], "cuda:1 forward")
    for name, t, rt in zip(("input", "weight", "bias"), (x, w, b), leaves):
        assert t.grad.device == torch.device("cuda:1")
        assert_rel_close(t.grad, rt.grad, TOL[torch.float32], f"cuda:1 grad {name}")


def _all_outputs(case, layout, dtype, seed):
    torch.manual_seed(seed)
    x = make_tensor(case.input_shape, layout, dtype, "cuda").requires_grad_(True)
    w = torch.randn(case.weight_shape, device="cuda").to(dtype).requires_grad_(True)
    b = torch.randn(case.c_out, device="cuda").to(dtype).requires_grad_(True)
    r = make_tensor(case.output_shape, layout, dtype, "cuda").requires_grad_(True)
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation="silu", residual=r)
    out.backward(torch.randn_like(out))
    return [out.detach(), x.grad, w.grad, b.grad, r.grad]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(
    "dtype,tf32",
    [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False), (torch.float16, False)],
    ids=["f32", "tf32", "bf16", "f16"],
)
def test_bitwise_deterministic_gradients(dtype, tf32, layout):
    torch.backends.cudnn.allow_tf32 = tf32  # restored by the pin_tf32 fixture
    # N * P = 32 * 28 * 28: a long grad-weight reduction that the kernel splits across blocks.
    case = Case("det", 32, 64, 96, 28, 28, stride=1, padding=0, groups=1)
    first = _all_outputs(case, layout, dtype, seed=5)
    second = _all_outputs(case, layout, dtype, seed=5)
    for name, a, b in zip(("output", "grad input", "grad weight", "grad bias", "grad residual"), first, second):
        assert torch.equal(a, b), f"{name} differs between two identical runs"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["f64", "f32", "bf16"])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=str)
def test_split_channel_reductions(case, dtype, layout):
    x = make_tensor(case.input_shape, layout, dtype, "cuda")
    w = torch.randn(case.weight_shape, device="cuda").to(dtype)
    b = torch.randn(case.c_out, device="cuda").to(dtype)
    r = make_tensor(case.output_shape, layout, dtype, "cuda")
    grad = make_tensor(case.output_shape, layout, dtype, "cuda")
    args = ([case.stride] * 2 if isinstance(case.stride, int) else list(case.stride),
            [case.padding] * 2 if isinstance(case.padding, int) else list(case.padding), case.groups)

    def run():
        with poisoned_allocations():
            out = ops.conv_forward(x, w, b, r, *args[:2], case.groups, "silu")
            grad_in = ops.conv_backward_input(grad, w, list(case.input_shape), *args)
        return out, grad_in

    out, grad_in = run()
    assert_rel_close(out, reference(x, w, b, case.stride, case.padding, case.groups, "silu", r), TOL[dtype])
    x64 = x.detach().double().cpu().requires_grad_(True)
    reference(x64, w, None, case.stride, case.padding, case.groups).backward(grad.double().cpu())
    assert_rel_close(grad_in, x64.grad, TOL[dtype], "grad input")
    again = run()
    assert torch.equal(out, again[0]) and torch.equal(grad_in, again[1]), "not the same bits on a second run"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_over_2_pow_31_elements(layout):
    # 8 * 16385 * 16384 = 2^31 + 131072 elements per activation tensor: every index past 2^31 must
    # be computed in 64 bits. Checked on the first and last rows (the last ones lie past 2^31).
    n, c_in, c_out, h, w = 1, 8, 8, 16385, 16384
    dtype = torch.float16
    if layout == "nchw":
        x = torch.randn(n, c_in, h, w, device="cuda", dtype=dtype)
    else:
        x = torch.randn(n, h, w, c_in, device="cuda", dtype=dtype).permute(0, 3, 1, 2)
    assert x.numel() > 2**31
    weight = torch.randn(c_out, c_in, 1, 1, device="cuda", dtype=dtype)
    bias = torch.randn(c_out, device="cuda", dtype=dtype)
    out = ops.conv_forward(x, weight, bias, None, [1, 1], [0, 0], 1, "relu")
    rows = [slice(0, 2), slice(h - 3, h)]
    for sl in rows:
        ref = reference(x[:, :, sl], weight, bias, activation="relu")
        assert_rel_close(out[:, :, sl], ref, TOL[dtype], f"forward rows {sl}")
    del out

    # c_out == c_in: the output's shape and layout. Past 2^31 lie channel 7's last 8 rows (NCHW) or
    # the last row (channels_last): among 2^28 pixels a grad-weight that missed or misread them
    # would still pass, so every other row's gradient is scaled down until those rows carry most of
    # each sum (99% of its variance; the row checks below are relative, so the scale does not matter).
    grad_out = torch.randn_like(x)
    grad_out[:, :, : h - 8] *= 2**-9
    grad_in = ops.conv_backward_input(grad_out, weight, list(x.shape), [1, 1], [0, 0], 1)
    for sl in rows:
        ref = reference(grad_out[:, :, sl], weight.transpose(0, 1))
        assert_rel_close(grad_in[:, :, sl], ref, TOL[dtype], f"grad input rows {sl}")
    del grad_in

    grad_w = ops.conv_backward_weight(grad_out, x, [1, 1], [0, 0], 1)
    ref = torch.zeros(c_out, c_in, dtype=torch.float64, device="cuda")
    for start in range(0, h, 1024):
        go = grad_out[0, :, start : start + 1024].double().reshape(c_out, -1)
        xs = x[0, :, start : start + 1024].double().reshape(c_in, -1)
        ref += go @ xs.T
    assert_rel_close(grad_w.view(c_out, c_in), ref, 2e-3, "grad weight over 2^31 elements")


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_tf32_follows_cudnn_conv_fp32_precision(precision):
    # The newer API sets cuDNN's conv precision apart from its RNN one; F.conv2d follows the conv
    # flag, and so must we (asking PyTorch for "the" cuDNN flag raises when the two differ).
    torch.backends.cudnn.conv.fp32_precision = precision  # the RNN flag stays as pin_tf32 left it
    case = Case("prec", 8, 256, 128, 14, 14)
    x = make_tensor(case.input_shape, "nchw", torch.float32, "cuda")
    w = torch.randn(case.weight_shape, device="cuda")
    err = rel_err(pw.pointwise_conv2d(x, w), reference(x, w))
    if precision == "ieee":
        assert err < TOL[torch.float32], f"exact fp32 expected, relative error {err:.2e}"
    else:
        assert 2e-5 < err < 2e-3, f"TF32 expected, relative error {err:.2e}"
