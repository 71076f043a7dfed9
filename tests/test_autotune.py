"""pointwise_cuda.set_autotune: the switch and the cache everywhere, the tuning itself on a GPU.
(tests/test_cuda_emulated.py checks on the CPU that every candidate plan computes correct results.)"""

import math

import pytest
import torch

import pointwise_cuda as pw
from reference import SPLIT_CASES, TOL, Case, assert_rel_close, make_tensor, reference



@pytest.fixture
def autotuning():
    """Autotuning on, from an empty cache, for one test; off and empty afterwards."""
    pw.clear_autotune_cache()
    pw.set_autotune(True)
    yield
    pw.set_autotune(False)
    pw.clear_autotune_cache()


def test_switch():
    assert not pw.autotune_enabled(), "autotuning must be off by default"
    pw.set_autotune(True)
    try:
        assert pw.autotune_enabled()
    finally:
        pw.set_autotune(False)
    assert not pw.autotune_enabled()
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="set_autotune: enabled must be a bool"):
            pw.set_autotune(bad)
    assert not pw.autotune_enabled()


def test_cpu_calls_tune_nothing(autotuning):
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    w = torch.randn(4, 8, 1, 1, requires_grad=True)
    out = pw.pointwise_conv2d(x, w)
    out.sum().backward()
    assert_rel_close(out, reference(x, w), TOL[torch.float32])
    assert pw.autotune_cache() == []


def _inputs(case, layout, dtype, seed):
    torch.manual_seed(seed)
    x = make_tensor(case.input_shape, layout, dtype, "cuda").requires_grad_(True)
    w = torch.randn(case.weight_shape, device="cuda").to(dtype).requires_grad_(True)
    b = torch.randn(case.c_out, device="cuda").to(dtype).requires_grad_(True)
    return x, w, b


def _run(case, x, w, b, grad_out=None):
    """Forward (bias + ReLU) and, with grad_out, the backward: the output and the three gradients."""
    for t in (x, w, b):
        t.grad = None
    out = pw.pointwise_conv2d(x, w, b, case.stride, case.padding, groups=case.groups, activation="relu")
    if grad_out is None:
        return [out.detach()]
    out.backward(grad_out)
    return [out.detach(), x.grad, w.grad, b.grad]


# A squeeze-excite layer (its channel reductions split), a stride-2 grad-input scatter, and a
# 28x28 map whose grad-weight reduces over 25k pixels.
CUDA_CASES = [SPLIT_CASES[0], SPLIT_CASES[2], Case("map28", 32, 64, 96, 28, 28)]


@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", CUDA_CASES, ids=str)
def test_autotuned_results(autotuning, case, dtype, layout):
    x, w, b = _inputs(case, layout, dtype, seed=11)
    grad_out = torch.randn(case.output_shape, device="cuda").to(dtype).contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    first = _run(case, x, w, b, grad_out)

    entries = pw.autotune_cache()
    assert sorted(e["problem"].split()[0] for e in entries) == ["forward", "grad_input", "grad_weight"]
    for e in entries:
        times = e["timings_ms"]
        assert len(times) > 1 and e["chosen"] in times, e
        assert all(math.isfinite(ms) and ms > 0 for ms in times.values()), e
        assert times[e["chosen"]] == min(times.values()), e

    leaves = [t.detach().double().cpu().requires_grad_(True) for t in (x, w, b)]
    ref = reference(*leaves, case.stride, case.padding, case.groups, "relu")
    ref.backward(grad_out.double().cpu())
    assert_rel_close(first[0], ref, TOL[dtype], "forward")
    for name, ours, theirs in zip(("input", "weight", "bias"), first[1:], leaves):
        assert_rel_close(ours, theirs.grad, TOL[dtype] * (4 if name == "weight" else 1), f"grad {name}")

    second = _run(case, x, w, b, grad_out)
    assert pw.autotune_cache() == entries, "a tuned problem was tuned again"
    for name, a, c in zip(("output", "grad input", "grad weight", "grad bias"), first, second):
        assert torch.equal(a, c), f"{name}: not the same bits on a second call of the kept plan"



@pytest.mark.cuda
@pytest.mark.parametrize("tuned_before", [False, True], ids=["untuned", "tuned"])
def test_autotune_under_cuda_graph_capture(autotuning, tuned_before):
    """A capture must not wait for the GPU: an untuned problem runs the heuristic's plan (and stays
    untuned); a tuned one runs its kept plan."""
    case = SPLIT_CASES[0]
    x, w, b = (t.detach() for t in _inputs(case, "channels_last", torch.bfloat16, seed=12))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, which tunes the problem
        _run(case, x, w, b)
        if not tuned_before:
            pw.clear_autotune_cache()
    torch.cuda.current_stream().wait_stream(side)
    before = pw.autotune_cache()
    assert len(before) == (1 if tuned_before else 0)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = _run(case, x, w, b)[0]
    assert pw.autotune_cache() == before, "autotuning ran during a capture"

    fresh = [torch.randn(t.shape, device="cuda").to(t.dtype) for t in (x, w, b)]
    for static, new in zip((x, w, b), fresh):
        static.copy_(new)
    graph.replay()
    torch.cuda.synchronize()
    assert_rel_close(static_out, reference(*fresh, case.stride, case.padding, case.groups, "relu"),
                     TOL[torch.bfloat16], "replay")

