"""convert(model, fuse=True): BatchNorm folded, activations and residual adds in the epilogue, on
torchvision's models (weights=None, BatchNorm statistics randomised so that folding them matters),
equal to the original in float64, with what was not fused reported; and fused models under
torch.compile(fullgraph=True) and torch.export."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pointwise_cuda as pw
from pointwise_cuda.fusion import Conv2dInFloat32
from reference import assert_rel_close
from torch.utils._python_dispatch import TorchDispatchMode

torchvision = pytest.importorskip("torchvision")

# model -> (pointwise convolutions fused with a residual, with an activation, parts left unfused)
MODELS = {
    "resnet50": (16, 32, 0),
    "mobilenet_v2": (10, 17, 0),
    "efficientnet_b0": (9, 32, 16),        # the squeeze-excite Sigmoids stay apart
    "shufflenet_v2_x1_0": (0, 36, 0),
    "mobilenet_v3_small": (6, 20, 9),      # the squeeze-excite Hardsigmoids stay apart
}
# Each runs channels_last inside (in float64 only those without grouped convolutions, see
# test_grouped_convolutions_run_nchw_in_dtypes_without_onednn) but ShuffleNetV2, whose channel shuffle
# calls Tensor.view.
KEEPS_INPUT_LAYOUT = {"shufflenet_v2_x1_0"}


def _model(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # as a trained model's: folding them changes the weights
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def _fuse(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = pw.convert(model, fuse=True)
    return fused, [w for w in caught if "convert(fuse=True)" in str(w.message)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_model_equals_the_original_in_float64(name, layout):
    model = _model(name)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    if layout == "channels_last":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    fused, caught = _fuse(model)
    with torch.no_grad():
        assert_rel_close(fused(x), model(x), 1e-12, f"fused {name}")
    report = fused.fusion_report
    with_residual = sum("+ residual" in line for line in report.fused)
    with_activation = sum(line.endswith(("relu", "relu6", "silu", "gelu", "hardswish")) for line in report.fused)
    assert (with_residual, with_activation, len(report.not_fused)) == MODELS[name], str(report)
    assert len(caught) == (1 if report.not_fused else 0)
    assert report.layout.startswith("the input's" if name in KEEPS_INPUT_LAYOUT else "channels_last"), report.layout
    # Every BatchNorm is folded (the 3x3 convolutions' too) and every 1x1 convolution converted.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(type(m) is nn.Conv2d and m.kernel_size == (1, 1) for m in fused.modules())


def test_the_original_model_is_left_as_it_was():
    model = _model("mobilenet_v2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fuse(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_a_model_in_training_mode_is_refused():
    model = _model("resnet50").train()
    with pytest.raises(ValueError, match=r"eval-mode model.*call model\.eval\(\) first"):
        pw.convert(model, fuse=True)


class _Untraceable(nn.Module):
    """Control flow on a tensor's value: symbolic_trace fails on the whole, its children trace."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        y = self.block(x)
        return self.head(y) if y.sum() > 0 else self.head(-y)


def test_a_part_that_does_not_trace_is_reported_and_its_children_fused():
    torch.manual_seed(0)
    model = _Untraceable().double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    fused, caught = _fuse(model)
    assert len(caught) == 1 and "does not trace" in str(caught[0].message)
    assert any("does not trace" in line for line in fused.fusion_report.not_fused)
    assert sum("relu" in line for line in fused.fusion_report.fused) == 1  # the block's conv, BN, ReLU
    with torch.no_grad():
        assert_rel_close(fused(x), model(x), 1e-12, "partly fused")


class _BroadcastAdd(nn.Module):
    """An add after a 1x1 convolution whose other operand only broadcasts (a per-channel offset)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.offset = nn.Parameter(torch.randn(1, 6, 1, 1))

    def forward(self, x):
        return F.relu(self.conv(x) + self.offset.expand(1, 6, 1, 1))


class _FeatureMap(nn.Module):
    """A 4-D output (a segmentation head's, say) and a 2-D one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        features = F.relu(self.conv(x))
        return {"map": self.head(features), "pooled": features.mean((2, 3))}


def test_a_cpu_nchw_input_runs_channels_last_inside_and_comes_back_nchw():
    torch.manual_seed(0)
    model = _FeatureMap().double().eval()
    fused, _ = _fuse(model)
    inside = []
    fused.head.register_forward_pre_hook(lambda module, args: inside.append(args[0]))
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        out, expected = fused(x), model(x)
    assert inside[0].is_contiguous(memory_format=torch.channels_last) and not inside[0].is_contiguous()
    # The 3x3 convolution's weight in that layout too (else PyTorch copies it at every call); the
    # model given keeps its own.
    assert fused.conv.weight.is_contiguous(memory_format=torch.channels_last) and not fused.conv.weight.is_contiguous()
    assert model.conv.weight.is_contiguous()
    assert out["map"].is_contiguous() and out["map"].stride() == expected["map"].stride()
    assert_rel_close(out["map"], expected["map"], 1e-12, "4-D output")
    assert_rel_close(out["pooled"], expected["pooled"], 1e-12, "2-D output")
    x = x.contiguous(memory_format=torch.channels_last)  # already so: nothing converted
    with torch.no_grad():
        assert fused(x)["map"].stride() == model(x)["map"].stride()


class _Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.project = nn.Conv2d(4, 6, 1)

    def forward(self, x):
        return self.project(F.relu(self.depthwise(x)))


def _onednn_runs_natively(dtype):
    """Whether PyTorch runs a CPU convolution in dtype with oneDNN here, by its own checks."""
    return torch.backends.mkldnn.is_available() and {
        torch.float32: True, torch.float64: False,
        torch.bfloat16: torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        torch.float16: torch.ops.mkldnn._is_mkldnn_fp16_supported()}[dtype]


def _onednn_runs(dtype):
    """Whether a fused model's CPU convolution in dtype runs in oneDNN here, natively or in float32."""
    return _onednn_runs_natively(dtype) or (dtype in (torch.bfloat16, torch.float16)
                                            and _onednn_runs_natively(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("given", ["nchw", "channels_last"])
def test_grouped_convolutions_run_nchw_in_dtypes_without_onednn(dtype, given):
    # PyTorch's own convolution runs a channels_last grouped one group by group, several times slower.
    torch.manual_seed(0)
    model = _Depthwise().to(dtype).eval()
    if given == "channels_last":  # weights too, as model.to(memory_format=...) makes them
        model = model.to(memory_format=torch.channels_last)
    fused, _ = _fuse(model)
    assert "1 grouped convolutions" in fused.fusion_report.layout, fused.fusion_report.layout
    inside = []
    fused.project.register_forward_pre_hook(lambda module, args: inside.append(args[0]))
    x = torch.randn(2, 4, 9, 7, dtype=dtype)
    if given == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, expected = fused(x), model(x)
    channels_last = _onednn_runs(dtype)
    assert inside[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert inside[0].is_contiguous() == (not channels_last)
    assert out.stride() == expected.stride()  # given back in the input's layout
    assert_rel_close(out, expected, {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2,
                                     torch.float16: 3e-3}[dtype], "depthwise model")


class _ConvolutionDtypes(TorchDispatchMode):
    """Records the dtype of every aten.convolution's input."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("how", ["model", "autocast"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_convolutions_run_in_float32_where_onednn_has_only_float32(dtype, how):
    torch.manual_seed(0)
    model = _Depthwise().to(dtype if how == "model" else torch.float32).eval()
    fused, _ = _fuse(model)
    widened = _onednn_runs(dtype) and not _onednn_runs_natively(dtype)
    assert isinstance(fused.depthwise, Conv2dInFloat32) == widened
    in_float32 = [str(d).removeprefix("torch.") for d in (torch.bfloat16, torch.float16) if not _onednn_runs_natively(d)]
    assert fused.fusion_report.in_float32 == ([f"depthwise (4->4, 3x3, groups 4): {', '.join(in_float32)}"]
                                              if widened else [])
    x = torch.randn(2, 4, 9, 7, dtype=dtype if how == "model" else torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=how == "autocast"), _ConvolutionDtypes() as seen:
        out = fused(x)
    assert seen.dtypes == [torch.float32 if widened else dtype]  # the depthwise one; the 1x1 is ours
    with torch.no_grad():
        expected = model.double()(x.double())
    assert out.dtype == dtype
    assert_rel_close(out, expected, {torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype], "depthwise model")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv2d_in_float32_rounds_a_float32_sum_once(dtype, layout):
    # On every CPU, whatever oneDNN runs here: the module itself, told to widen dtype.
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3).to(dtype)
    layer = Conv2dInFloat32.from_conv2d(conv, (dtype,))
    assert layer.weight is conv.weight and layer.bias is conv.bias
    x = torch.randn(2, 6, 9, 7, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), _ConvolutionDtypes() as seen:
        out = layer(x)
    assert seen.dtypes == [torch.float32]
    assert out.dtype == dtype and out.stride() == conv(x).stride()
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), 2, 1, 1, 3)
    magnitude = F.conv2d(x.double().abs(), conv.weight.double().abs(), conv.bias.double().abs(), 2, 1, 1, 3)
    unit_roundoff = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dtype]
    # One rounding to dtype of a float32 sum: half an ulp of dtype, plus float32's error over 19 terms.
    assert ((out.double() - exact).abs() <= unit_roundoff * exact.abs() + 19 * 2.0 ** -24 * magnitude).all()
    x32 = x.float()  # a dtype not in in_float32 runs as nn.Conv2d does
    conv32 = copy.deepcopy(conv).float()
    layer32 = Conv2dInFloat32.from_conv2d(conv32, (dtype,))
    with torch.no_grad(), _ConvolutionDtypes() as seen:
        assert torch.equal(layer32(x32), F.conv2d(x32, conv32.weight, conv32.bias, 2, 1, 1, 3))
    assert seen.dtypes == [torch.float32, torch.float32]
    with pytest.raises(RuntimeError, match="should be the same"):  # as nn.Conv2d: no silent widening
        layer32(x)
    # Under autocast to dtype, F.conv2d's casts, then the same float32 sum.
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype), _ConvolutionDtypes() as seen:
        autocast_out = layer32(x32)
    assert seen.dtypes == [torch.float32] and autocast_out.dtype == dtype
    assert torch.equal(autocast_out, out)  # x32 and conv32's weights round to x and conv's


@pytest.mark.parametrize("how", ["model", "autocast"])
def test_compile_fullgraph_of_a_fused_16_bit_model(how):
    torch.manual_seed(0)
    dtype = torch.bfloat16 if how == "model" else torch.float32
    fused, _ = _fuse(_Depthwise().to(dtype).eval())
    x = torch.randn(2, 4, 9, 7, dtype=dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "autocast"):
        expected = fused(x)
        torch._dynamo.reset()
        compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
        out = compiled(x)
    assert out.dtype == torch.bfloat16
    assert_rel_close(out, expected, 1e-2, "compiled fused bfloat16 model")
    if how == "model":
        program = torch.export.export(fused, (x,))
        assert torch.equal(program.module()(x), expected)


class _Flatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return y.view(y.shape[0], -1)  # fails on a channels_last y: the model keeps its input's layout


def test_a_model_that_views_its_activations_keeps_its_input_layout():
    model = _Flatten().eval()
    fused, caught = _fuse(model)
    assert fused.fusion_report.layout.startswith("the input's") and "Tensor.view" in fused.fusion_report.layout
    assert not caught  # a layout kept is no part left unfused
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        assert_rel_close(fused(x), model(x), 1e-6, "viewed output")


def test_a_residual_that_only_broadcasts_gives_the_same_numbers():
    torch.manual_seed(0)
    model = _BroadcastAdd().double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    fused, _ = _fuse(model)
    with torch.no_grad():
        assert_rel_close(fused(x), model(x), 1e-12, "broadcast residual")


def test_compile_fullgraph_and_export_of_a_fused_model():
    model = _model("mobilenet_v2").float()
    fused, _ = _fuse(model)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = fused(x)
        torch._dynamo.reset()
        compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
        assert_rel_close(compiled(x), expected, 1e-5, "compiled fused model")
    program = torch.export.export(fused, (x,))
    ops = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.pointwise_cuda.conv_forward.default) == 34
    assert_rel_close(program.module()(x), expected, 1e-5, "exported fused model")
