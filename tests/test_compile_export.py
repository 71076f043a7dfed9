"""torch.compile(fullgraph=True) of functions and modules using the op (forward and backward), and
torch.export of a module holding PointwiseConv2d layers.

fullgraph=True turns any graph break into an error, so these tests fail if the op (or the Python
wrapper around it) is not traceable. aot_eager traces through the fake kernels and the autograd
registration (AOTAutograd) without generating code; one test also runs inductor end to end.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pointwise_cuda as pw
from reference import DEVICES, TOL, act64, assert_rel_close, make_tensor

ops = torch.ops.pointwise_cuda


def _fn(x, w, b, r):
    y = pw.pointwise_conv2d(x, w, b, stride=2, padding=(1, 0), groups=2, activation="silu", residual=r)
    return torch.tanh(y) * 2


def _ref_fn(x, w, b, r):
    y = F.conv2d(x, w, b, 2, (1, 0), 1, 2) + r
    return torch.tanh(F.silu(y)) * 2


def _leaves(device, layout, dtype=torch.float64):
    x = make_tensor((2, 6, 5, 4), layout, dtype, device).requires_grad_(True)
    w = torch.randn(8, 3, 1, 1, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(8, dtype=dtype, device=device, requires_grad=True)
    r = make_tensor((2, 8, 4, 2), layout, dtype, device).requires_grad_(True)
    return [x, w, b, r]


def _check_fn_fwd_bwd(compiled, device, layout, dtype=torch.float64, tol=None):
    tol = tol or TOL[dtype] * 10
    leaves = _leaves(device, layout, dtype)
    out = compiled(*leaves)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    ref = _ref_fn(*ref_leaves)
    ref.backward(grad_out.double())
    assert_rel_close(out, ref, tol, "compiled output")
    for name, t, rt in zip(("input", "weight", "bias", "residual"), leaves, ref_leaves):
        assert_rel_close(t.grad, rt.grad, tol, f"compiled grad {name}")
    return out


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_function_aot_eager(device, layout):
    torch._dynamo.reset()
    compiled = torch.compile(_fn, fullgraph=True, backend="aot_eager")
    out = _check_fn_fwd_bwd(compiled, device, layout)
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@pytest.mark.parametrize("device", DEVICES)
def test_compile_function_inductor(device):
    torch._dynamo.reset()
    compiled = torch.compile(_fn, fullgraph=True, backend="inductor")
    _check_fn_fwd_bwd(compiled, device, "channels_last", torch.float32, tol=1e-5)


def test_compile_counts_one_graph_and_keeps_the_op():
    # The op appears in the captured graph as itself (not decomposed, not run eagerly).
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x, w, b, r = _leaves("cpu", "nchw")
    torch.compile(_fn, fullgraph=True, backend=backend)(x.detach(), w.detach(), b.detach(), r.detach())
    assert len(graphs) == 1
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert ops.conv_forward in targets or ops.conv_forward.default in targets


class Block(nn.Module):
    """conv -> relu, then a fused conv + residual + relu (the ResNet pattern)."""

    def __init__(self, channels=8, hidden=12):
        super().__init__()
        self.expand = pw.PointwiseConv2d(channels, hidden, activation="relu")
        self.project = pw.PointwiseConv2d(hidden, channels, groups=2, activation="relu")
        self.down = pw.PointwiseConv2d(channels, 4, stride=2, padding=1, bias=False)

    def forward(self, x):
        y = self.project(self.expand(x), residual=x)
        return self.down(y)


def _ref_block(block, x):
    def conv(m, t):
        bias = None if m.bias is None else m.bias.to(t.dtype)
        return F.conv2d(t, m.weight.to(t.dtype), bias, m.stride, m.padding, 1, m.groups)

    y = F.relu(conv(block.project, F.relu(conv(block.expand, x))) + x)
    return conv(block.down, y)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_compile_module(device, layout):
    torch._dynamo.reset()
    block = Block().to(device=device, dtype=torch.float64)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    x = make_tensor((2, 8, 5, 5), layout, torch.float64, device).requires_grad_(True)
    out = compiled(x)
    out.square().sum().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    gx = x.grad.clone()

    block.zero_grad()
    x.grad = None
    ref = _ref_block(block, x)
    ref.square().sum().backward()
    assert_rel_close(out, ref, 1e-11, "compiled module output")
    assert_rel_close(gx, x.grad, 1e-11, "compiled module grad input")
    for name, p in block.named_parameters():
        assert_rel_close(grads[name], p.grad, 1e-11, f"compiled module grad {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_compile_dynamic_shapes(device):
    # The fake kernel's output size formula holds for symbolic sizes: one graph serves several shapes.
    torch._dynamo.reset()
    calls = []

    def backend(gm, example_inputs):
        calls.append(gm)
        return gm.forward

    def f(x, w):
        return pw.pointwise_conv2d(x, w, stride=(2, 1), padding=(1, 2), activation="gelu")

    compiled = torch.compile(f, fullgraph=True, backend=backend, dynamic=True)
    w = torch.randn(5, 3, 1, 1, dtype=torch.float64, device=device)
    for shape in [(2, 3, 6, 7), (3, 3, 8, 9), (4, 3, 9, 6)]:
        x = torch.randn(shape, dtype=torch.float64, device=device)
        out = compiled(x, w)
        assert_rel_close(out, act64(F.conv2d(x, w, None, (2, 1), (1, 2)), "gelu"), 1e-12)
    assert len(calls) == 1


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_export_module(device, layout):
    block = Block().to(device=device).eval()
    x = make_tensor((2, 8, 5, 5), layout, torch.float32, device)
    program = torch.export.export(block, (x,))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(ops.conv_forward.default) == 3
    x2 = make_tensor((2, 8, 5, 5), layout, torch.float32, device)
    out = program.module()(x2)
    expected = block(x2)
    assert out.stride() == expected.stride()
    assert_rel_close(out, expected, 1e-6, "exported program output")
    assert_rel_close(out, _ref_block(block, x2.double()), 1e-5, "exported program vs float64")


def test_export_with_residual_argument_and_dynamic_batch():
    layer = pw.PointwiseConv2d(6, 4, activation="relu6").eval()
    x = torch.randn(3, 6, 4, 4)
    r = torch.randn(3, 4, 4, 4)
    batch = torch.export.Dim("batch")
    program = torch.export.export(layer, (x, r), dynamic_shapes=({0: batch}, {0: batch}))
    for n in (3, 5):
        x, r = torch.randn(n, 6, 4, 4) * 4, torch.randn(n, 4, 4, 4)
        out = program.module()(x, r)
        ref = F.relu6(F.conv2d(x.double(), layer.weight.double(), layer.bias.double()) + r.double())
        assert_rel_close(out, ref, 1e-5, "exported program output")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: ops.conv_forward(torch.randn(2, 6, 4, 5), torch.randn(0, 6, 1, 1), None, None, [1, 1], [0, 0], 1, "none"),
         "at least 1 at dimension 0"),
        (lambda: ops.conv_forward(torch.randn(2, 6, 0, 5), torch.randn(4, 6, 1, 1), None, None, [2, 1], [0, 0], 1, "none"),
         "input size"),
        (lambda: ops.conv_backward_input(torch.randn(2, 0, 4, 5), torch.randn(0, 6, 1, 1), [2, 6, 4, 5], [1, 1], [0, 0], 1),
         "at least 1 at dimension 0"),
        (lambda: ops.conv_backward_weight(torch.randn(2, 4, 4, 1), torch.randn(2, 6, 4, 0), [1, 1], [0, 0], 1),
         "input size"),
    ],
    ids=["no_output_channels", "empty_image", "grad_input_no_output_channels", "grad_weight_empty_image"],
)
def test_fake_kernels_refuse_what_the_kernels_refuse(call, message):
    # A traced program (torch.compile, export) fails where the eager call would, not at run time.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with pytest.raises(RuntimeError, match=message):
        call()  # the real kernel
    with FakeTensorMode(), pytest.raises(RuntimeError, match=message):
        call()  # the fake one


def _channels_last(*size):
    return torch.randn(*size).contiguous(memory_format=torch.channels_last)


# Shapes both NCHW- and channels_last-contiguous on one side (one output channel, 1x1 images, one
# input channel), where the real kernels' strides and a naive fake's differ.
AMBIGUOUS = {
    "one_output_channel": (_channels_last(2, 6, 5, 4), torch.randn(1, 6, 1, 1)),
    "one_pixel": (_channels_last(2, 6, 1, 1), torch.randn(3, 6, 1, 1)),
    "one_input_channel": (_channels_last(2, 1, 5, 4), torch.randn(3, 1, 1, 1)),
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_fake_kernels_give_the_real_strides(name):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w = AMBIGUOUS[name]
    y = ops.conv_forward(x, w, None, None, [1, 1], [0, 0], 1, "none")
    gy = torch.randn_like(y)
    real = [y, ops.conv_backward_input(gy, w, list(x.shape), [1, 1], [0, 0], 1),
            ops.conv_backward_weight(gy, x, [1, 1], [0, 0], 1)]
    with FakeTensorMode() as mode:
        fx, fw, fgy = (mode.from_tensor(t) for t in (x, w, gy))
        fake = [ops.conv_forward(fx, fw, None, None, [1, 1], [0, 0], 1, "none"),
                ops.conv_backward_input(fgy, fw, list(x.shape), [1, 1], [0, 0], 1),
                ops.conv_backward_weight(fgy, fx, [1, 1], [0, 0], 1)]
    for op, r, f in zip(("forward", "grad_input", "grad_weight"), real, fake):
        assert (f.shape, f.stride()) == (r.shape, r.stride()), op


def test_compile_channels_last_with_one_channel_between():
    # The model of the stride bug: a 1-channel activation in channels_last between two converted convs.
    model = pw.convert(nn.Sequential(nn.Conv2d(6, 1, 1), nn.ReLU(), nn.Conv2d(1, 3, 1)))
    model = model.to(memory_format=torch.channels_last)
    x = _channels_last(2, 6, 5, 4)
    # Compiled afresh: a cached graph from an earlier run would not ask the fake kernels again.
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        out = torch.compile(model, fullgraph=True, backend="inductor")(x)
    assert_rel_close(out, model(x), 1e-6, "compiled")
