"""PointwiseConv2d (state_dict interchangeable with nn.Conv2d, activation, residual, repr) and
convert() on torchvision's resnet18 and mobilenet_v2 (built with weights=None: nothing downloaded)."""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pointwise_cuda as pw
from reference import DEVICES, act64, assert_rel_close, make_tensor


def _torchvision():
    """torchvision, for the convert() tests on its models (skipped without it; the others never are)."""
    return pytest.importorskip("torchvision")


CONFIGS = [
    dict(in_channels=8, out_channels=16),
    dict(in_channels=6, out_channels=9, stride=2, padding=1, groups=3, bias=False),
    dict(in_channels=5, out_channels=4, stride=(2, 1), padding=(1, 2)),
]


def _conv_kwargs(cfg):
    cfg = dict(cfg)
    return dict(
        in_channels=cfg.pop("in_channels"), out_channels=cfg.pop("out_channels"), kernel_size=1,
        stride=cfg.get("stride", 1), padding=cfg.get("padding", 0), groups=cfg.get("groups", 1), bias=cfg.get("bias", True),
    )


@pytest.mark.parametrize("cfg", CONFIGS, ids=["plain", "stride_pad_groups_nobias", "asymmetric"])
@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip(device, cfg):
    conv = nn.Conv2d(**_conv_kwargs(cfg), device=device)
    layer = pw.PointwiseConv2d(**cfg, device=device)
    assert set(layer.state_dict()) == set(conv.state_dict())
    for key, value in conv.state_dict().items():
        assert layer.state_dict()[key].shape == value.shape

    x = torch.randn(2, cfg["in_channels"], 7, 6, device=device)
    # nn.Conv2d -> PointwiseConv2d
    layer.load_state_dict(conv.state_dict())  # strict
    assert_rel_close(layer(x), conv(x), 1e-5, "PointwiseConv2d loaded from nn.Conv2d")
    # PointwiseConv2d -> nn.Conv2d
    layer2 = pw.PointwiseConv2d(**cfg, device=device)
    conv2 = nn.Conv2d(**_conv_kwargs(cfg), device=device)
    conv2.load_state_dict(layer2.state_dict())  # strict
    assert_rel_close(conv2(x), layer2(x), 1e-5, "nn.Conv2d loaded from PointwiseConv2d")
    for key, value in layer2.state_dict().items():
        assert torch.equal(conv2.state_dict()[key], value)


def test_parameters_like_conv2d():
    # Same shapes, and the same initialisation as nn.Conv2d for the same random state.
    torch.manual_seed(7)
    conv = nn.Conv2d(12, 6, 1, groups=3)
    torch.manual_seed(7)
    layer = pw.PointwiseConv2d(12, 6, groups=3)
    assert layer.weight.shape == (6, 4, 1, 1) and layer.bias.shape == (6,)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in pw.PointwiseConv2d(4, 4, bias=False).named_parameters()] == ["weight"]
    assert pw.PointwiseConv2d(4, 4, bias=False).bias is None


def test_factory_kwargs():
    layer = pw.PointwiseConv2d(4, 3, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.bias.dtype == torch.float64
    layer = pw.PointwiseConv2d(4, 3, device="meta")
    assert layer.weight.device.type == "meta"


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "silu", "gelu"], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_module_activation_and_residual(device, activation):
    layer = pw.PointwiseConv2d(6, 8, stride=2, padding=1, groups=2, activation=activation, device=device, dtype=torch.float64)
    x = make_tensor((2, 6, 5, 4), "channels_last", torch.float64, device, scale=3.0)
    r = torch.randn(2, 8, 4, 3, dtype=torch.float64, device=device)
    z = F.conv2d(x, layer.weight, layer.bias, 2, 1, 1, 2)
    assert_rel_close(layer(x), act64(z, activation), 1e-12, "module without residual")
    assert_rel_close(layer(x, r), act64(z + r, activation), 1e-12, "module with residual (positional)")
    assert_rel_close(layer(x, residual=r), act64(z + r, activation), 1e-12, "module with residual (keyword)")
    out = layer(x[0], residual=r[0])  # unbatched
    assert_rel_close(out, act64(z + r, activation)[0], 1e-12, "module unbatched")


def test_module_gradients_match_conv2d():
    conv = nn.Conv2d(6, 10, 1, stride=2, padding=(1, 0), groups=2)
    layer = pw.PointwiseConv2d(6, 10, stride=2, padding=(1, 0), groups=2)
    layer.load_state_dict(conv.state_dict())
    x = torch.randn(3, 6, 5, 5)
    grad = torch.randn(3, 10, 4, 3)
    conv(x).backward(grad)
    layer(x).backward(grad)
    assert_rel_close(layer.weight.grad, conv.weight.grad, 1e-5, "weight grad")
    assert_rel_close(layer.bias.grad, conv.bias.grad, 1e-5, "bias grad")


def test_repr():
    text = repr(pw.PointwiseConv2d(8, 16))
    assert text.startswith("PointwiseConv2d(8, 16")
    assert "bias=False" not in text and "activation" not in text and "groups" not in text and "padding" not in text
    text = repr(pw.PointwiseConv2d(6, 9, stride=2, padding=(1, 0), groups=3, bias=False, activation="relu6"))
    for fragment in ("PointwiseConv2d(6, 9", "stride=(2, 2)", "padding=(1, 0)", "groups=3", "bias=False", "activation='relu6'"):
        assert fragment in text, (fragment, text)


def test_import_in_a_fresh_interpreter():
    # `import pointwise_cuda` must work on its own (without torch imported first), and list its API.
    code = "import pointwise_cuda as pw; print(sorted(pw.__all__)); print(pw.build_info()['backends'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PointwiseConv2d" in result.stdout and "'cpu'" in result.stdout


def test_build_info():
    info = pw.build_info()
    assert "cpu" in info["backends"]
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    names = [isa["name"] for isa in pw._C.cpu_isas()]
    assert info["cpu_isa_compiled"][0] == "portable" and set(info["cpu_isa_compiled"]) <= set(names)
    assert info["cpu_isa"] in info["cpu_isa_compiled"] and info["cpu_isa_detected"] in info["cpu_isa_compiled"]
    if "cuda" in info["backends"]:
        assert info["cuda_version"] and info["cuda_arch_list"]
    else:
        assert info["cuda_version"] is None
    if torch.cuda.is_available():
        # A CUDA machine must run the CUDA kernels, not silently fall back to a CPU-only build.
        assert "cuda" in info["backends"]


# ---- convert() ---------------------------------------------------------------------------------


def _count_1x1(model):
    return sum(1 for m in model.modules() if type(m) is nn.Conv2d and m.kernel_size == (1, 1))


MODELS = {
    # name: (constructor, number of 1x1 convolutions in it)
    "resnet18": (lambda: _torchvision().models.resnet18(weights=None), 3),
    "mobilenet_v2": (lambda: _torchvision().models.mobilenet_v2(weights=None), 34),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_pair(request):
    torch.manual_seed(0)
    build, expected = MODELS[request.param]
    model = build()
    # Non-trivial batch-norm statistics, so eval mode is not the identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return request.param, model, expected


def test_convert_replaces_every_1x1_and_nothing_else(model_pair):
    name, model, expected = model_pair
    assert _count_1x1(model) == expected
    before = {n: m for n, m in model.named_modules()}
    converted = pw.convert(model)
    after = dict(converted.named_modules())
    assert list(before) == list(after), "module tree changed"
    replaced = 0
    for n, m in before.items():
        if type(m) is nn.Conv2d and m.kernel_size == (1, 1):
            assert type(after[n]) is pw.PointwiseConv2d, n
            assert (after[n].stride, after[n].padding, after[n].groups) == (m.stride, m.padding, m.groups)
            assert (after[n].in_channels, after[n].out_channels) == (m.in_channels, m.out_channels)
            replaced += 1
        else:
            assert type(after[n]) is type(m), n
    assert replaced == expected
    assert _count_1x1(converted) == 0
    assert sum(1 for m in converted.modules() if isinstance(m, pw.PointwiseConv2d)) == expected
    # Other convolutions (3x3, depthwise) stay nn.Conv2d.
    assert any(type(m) is nn.Conv2d for m in converted.modules())
    # Same parameters (values) under the same names.
    sd, csd = model.state_dict(), converted.state_dict()
    assert list(sd) == list(csd)
    assert all(torch.equal(sd[k], csd[k]) for k in sd)


def test_convert_outputs_match_in_eval_mode(model_pair):
    name, model, _ = model_pair
    model.eval()
    converted = pw.convert(model).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), converted(x)
    assert_rel_close(out, ref, 1e-4, f"{name} converted output")
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_rel_close(converted(x_cl), ref, 1e-4, f"{name} converted output, channels_last")


def _training_step_matches(name, model, dtype, tol):
    model = copy.deepcopy(model).to(dtype).train()
    converted = pw.convert(model).train()
    x = torch.randn(4, 3, 64, 64, dtype=dtype)
    target = torch.randint(0, 1000, (4,))
    for m in (model, converted):
        m.zero_grad()
        torch.manual_seed(1)  # the same dropout mask in both models
        F.cross_entropy(m(x), target).backward()
    params = dict(model.named_parameters())
    converted_params = dict(converted.named_parameters())
    assert list(params) == list(converted_params)
    largest = max(p.grad.norm().item() for p in params.values())
    checked = []
    for key, p in params.items():
        mine = converted_params[key].grad
        assert mine is not None, key
        if p.grad.norm().item() < 1e-9 * largest:
            # Mathematically zero (a bias followed by batch norm): rounding noise in both models.
            assert mine.norm().item() < 1e-6 * largest, key
            continue
        assert_rel_close(mine, p.grad, tol, f"{name} {dtype} grad {key}")
        checked.append(key)
    assert len(checked) > len(params) // 2
    # One SGD step from the same state lands on the same parameters.
    for m in (model, converted):
        with torch.no_grad():
            for p in m.parameters():
                p -= 0.1 * p.grad
    for key in checked:
        assert_rel_close(converted_params[key], params[key], tol, f"{name} {dtype} param {key} after a step")


def test_convert_training_step_gradients_match_float64(model_pair):
    # In float64 the converted model's gradients equal the original's to rounding. (In float32,
    # mobilenet_v2's training gradients are ill-conditioned: torch's own differ by ~5e-3 between 1
    # and 2 threads, so float32 is checked on resnet18 only.)
    name, model, _ = model_pair
    _training_step_matches(name, model, torch.float64, 1e-9)


def test_convert_training_step_gradients_match_float32_resnet18():
    torch.manual_seed(0)
    _training_step_matches("resnet18", _torchvision().models.resnet18(weights=None), torch.float32, 1e-4)


def test_convert_not_inplace_leaves_original_untouched(model_pair):
    name, model, expected = model_pair
    types = {n: type(m) for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = {n: p for n, p in model.named_parameters()}
    converted = pw.convert(model, inplace=False)
    assert converted is not model
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert _count_1x1(model) == expected
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    # The copy owns its parameters: training it does not move the original's.
    for n, p in converted.named_parameters():
        assert p is not params[n] and p.data_ptr() != params[n].data_ptr()
    with torch.no_grad():
        for p in converted.parameters():
            p.add_(1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_convert_inplace_holds_the_same_parameters():
    torch.manual_seed(0)
    model = _torchvision().models.mobilenet_v2(weights=None)
    params = {n: p for n, p in model.named_parameters()}
    convs = {n: m for n, m in model.named_modules() if type(m) is nn.Conv2d and m.kernel_size == (1, 1)}
    converted = pw.convert(model, inplace=True)
    assert converted is model
    for n, p in converted.named_parameters():
        assert p is params[n], n
    modules = dict(converted.named_modules())
    for n, conv in convs.items():
        assert isinstance(modules[n], pw.PointwiseConv2d)
        assert modules[n].weight is conv.weight
        assert modules[n].bias is conv.bias


def test_convert_edge_cases():
    # A bare 1x1 conv converts to a PointwiseConv2d holding its parameters; others are untouched.
    conv = nn.Conv2d(4, 6, 1, stride=2)
    layer = pw.convert(conv, inplace=True)
    assert isinstance(layer, pw.PointwiseConv2d) and layer.weight is conv.weight and layer.bias is conv.bias

    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 1, padding=1, padding_mode="reflect"),
        MyConv(4, 4, 1),
        nn.Conv2d(4, 4, (1, 3)),
        nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.ReLU()),
    ).eval()
    converted = pw.convert(model)
    kinds = [type(m) for m in converted]
    assert kinds[:4] == [nn.Conv2d, nn.Conv2d, MyConv, nn.Conv2d]
    assert type(converted[4][0]) is pw.PointwiseConv2d and converted[4][0].bias is None
    x = torch.randn(2, 4, 6, 6)
    assert_rel_close(converted(x), model(x), 1e-5, "converted Sequential")


def test_convert_leaves_hooked_and_reparametrized_convs_alone():
    # Their replacement would not run the hooks that compute or watch the weight.
    from torch.nn.utils import prune

    hooked = nn.Conv2d(4, 4, 1)
    hooked.register_forward_hook(lambda module, args, out: out * 2)
    model = nn.Sequential(
        nn.utils.spectral_norm(nn.Conv2d(4, 4, 1)),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 1)),
        hooked,
        nn.Conv2d(4, 4, 1),
    ).eval()
    prune.l1_unstructured(model[3], "weight", amount=0.5)
    model.append(nn.Conv2d(4, 4, 1))  # the only plain one
    converted = pw.convert(model, inplace=True)
    assert [type(m) is pw.PointwiseConv2d for m in converted] == [False, False, False, False, True]
    x = torch.randn(2, 4, 3, 3)
    assert_rel_close(converted(x), model(x), 1e-6)


def test_converted_model_traces_with_fx():
    # torch.fx.symbolic_trace (feature extractors, FX quantization) works on a converted model.
    model = pw.convert(nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Conv2d(6, 3, 1, stride=2))).eval()
    traced = torch.fx.symbolic_trace(model)
    assert sum(n.op == "call_function" and n.target is pw.pointwise_conv2d for n in traced.graph.nodes) == 2
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(traced(x), model(x))


def test_module_arguments_after_channels_are_keyword_only():
    # nn.Conv2d(6, 4, 1, 2) is kernel 1, stride 2: the same positions must not mean stride 1, padding 2.
    with pytest.raises(TypeError):
        pw.PointwiseConv2d(6, 4, 1, 2)


def test_convert_keeps_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.Conv2d(4, 4, 1)).eval())
    converted = pw.convert(model)
    assert converted[0].training and not converted[1][0].training
