"""The CUDA kernels and their planning (csrc/cuda), run on the CPU by tests/emulator, against float64.

The emulator compiles gemm.cuh, gemm_launch.cuh and conv_gemm.cpp unchanged; PTX instructions and
launches are carried out by tests/emulator/runtime.cpp: fragment layouts written from the PTX ISA,
cp.async copies landing as late as PTX allows, NaN-filled shared memory, the launch limits of the
runtime; and every CPU tensor sits between guard pages. So every CI run checks the CUDA code's
indexing, pipeline, fragments, split-K, epilogues and bounds without a GPU. It does not replace
test_cuda.py, tools/cuda_cases.py or compute-sanitizer on a GPU: no timing, no registers, up to 15
bytes past a tensor's end go unnoticed, and barriers are the only memory model.
"""

import os

import pytest
import torch
import torch.nn.functional as F

import emulator
from emulator import FOUR_SMS, H100, SM86
from reference import (
    ACTIVATIONS,
    SPECIAL_VALUES,
    assert_activation_matches_torch,
    CASES,
    SPLIT_CASES,
    TF32_TOL,
    TOL,
    Case,
    _pair,
    assert_rel_close,
    make_tensor,
    misaligned,
    reference,
)

# name -> (dtype, TF32 allowed, relative error bound of the forward and grad-input)
DTYPES = {
    "f64": (torch.float64, False, TOL[torch.float64]),
    "f32": (torch.float32, False, TOL[torch.float32]),
    "tf32": (torch.float32, True, TF32_TOL),
    "f16": (torch.float16, False, TOL[torch.float16]),
    "bf16": (torch.bfloat16, False, TOL[torch.bfloat16]),
}
# Grad-weight sums N * P products per element instead of C_in or C_out.
GRAD_WEIGHT_SLACK = 4
LAYOUTS = ["nchw", "channels_last", "misaligned_nchw", "misaligned_channels_last"]


def _tensor(shape, layout, dtype):
    """Fresh random values of `shape` in `layout`; misaligned layouts start one element into their storage."""
    if layout.startswith("misaligned"):
        return misaligned(shape, dtype, "cpu", channels_last=layout.endswith("channels_last"))
    if len(shape) == 4:
        return make_tensor(shape, layout, dtype)
    return torch.randn(shape, dtype=torch.float64).to(dtype)


def _check_ops(emu, case: Case, dtype_name, layout, activation=None, bias=True, residual=False):
    """Runs the three emulated ops once on fresh inputs and checks each against float64. Returns each
    op's launches (as emu.launches() gives them) by op name."""
    dtype, tf32, tol = DTYPES[dtype_name]
    torch.backends.cudnn.allow_tf32 = tf32  # restored by the pin_tf32 fixture
    stride, padding = list(_pair(case.stride)), list(_pair(case.padding))
    x = _tensor(case.input_shape, layout, dtype)
    w = _tensor(case.weight_shape, "misaligned_nchw" if layout.startswith("misaligned") else "nchw", dtype)
    b = _tensor((case.c_out,), "nchw", dtype) if bias else None
    r = _tensor(case.output_shape, layout, dtype) if residual else None
    grad = _tensor(case.output_shape, layout, dtype)

    launches, seen = {}, len(emu.launches())

    def record(op):
        nonlocal seen
        now = emu.launches()
        launches[op], seen = now[seen:], len(now)

    out = emu.conv_forward(x, w, b, r, stride, padding, case.groups, activation or "none")
    record("forward")
    assert out.dtype == dtype and out.shape == case.output_shape
    assert_rel_close(out, reference(x, w, b, case.stride, case.padding, case.groups, activation, r), tol, "forward")

    x64 = x.double().requires_grad_(True)
    w64 = w.double().requires_grad_(True)
    F.conv2d(x64, w64, None, case.stride, case.padding, 1, case.groups).backward(grad.double())
    grad_input = emu.conv_backward_input(grad, w, list(case.input_shape), stride, padding, case.groups)
    record("grad_input")
    assert_rel_close(grad_input, x64.grad, tol, "grad input")
    grad_weight = emu.conv_backward_weight(grad, x, stride, padding, case.groups)
    record("grad_weight")
    assert_rel_close(grad_weight, w64.grad, tol * (1 if dtype == torch.float64 else GRAD_WEIGHT_SLACK), "grad weight")
    return launches


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_sweep(emu, case, dtype_name, layout):
    _check_ops(emu, case, dtype_name, layout)


EPILOGUE_CASES = [c for c in CASES if c.name in ("cin63_cout63", "stride2_pad1x2", "groups3", "odd_large")]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "misaligned_channels_last"])
@pytest.mark.parametrize("dtype_name", ["f32", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("case", EPILOGUE_CASES, ids=str)
def test_fused_epilogue(emu, case, activation, dtype_name, layout):
    _check_ops(emu, case, dtype_name, layout, activation=activation, residual=True)


def _launch_threads(emu):
    return [threads for _, threads, _ in emu.launches()]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype_name", ["f64", "f32", "tf32", "bf16"])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=str)
def test_split_channel_reductions(emu, case, dtype_name, layout):
    """Few output tiles on a 132-SM GPU: the forward or grad-input (whichever has the long channel
    reduction) cuts K, and a second kernel adds the partials (with the epilogue)."""
    launches = _check_ops(emu, case, dtype_name, layout, activation="silu", residual=True)
    op = "forward" if case.c_in >= case.c_out else "grad_input"
    assert len(launches[op]) == 2, f"{op}: expected a split GEMM and its finishing kernel, got {launches[op]}"
    (gemm_grid, _, _), (_, _, finishing_smem) = launches[op]
    assert gemm_grid[2] > case.groups, f"{op}: the GEMM was not split"
    assert finishing_smem == 0, f"{op}: no kernel added the split partials"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype_name", ["f64", "f32", "tf32", "f16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS[1:])
@pytest.mark.parametrize("path", ["conv", "residual", "split"])
def test_special_values(emu, path, activation, dtype_name, layout):
    """NaN, infinities and the far tails through every activation, as torch's own activations treat
    them, in every CUDA store path: z from the GEMM itself (one input channel, a weight of 1; not
    under TF32, which rounds the input), or from the residual (zero weights) stored by the GEMM or,
    with 512 input channels and few output tiles, by the kernel that adds the split partials."""
    dtype, tf32, tol = DTYPES[dtype_name]
    if path == "conv" and tf32:
        pytest.skip("TF32 rounds the input that the conv path passes through")
    torch.backends.cudnn.allow_tf32 = tf32
    n, h, w, c_out = 3, 7, 11, 5
    c_in = {"conv": 1, "residual": 3, "split": 512}[path]
    values = torch.tensor(SPECIAL_VALUES, dtype=torch.float64).to(dtype)
    z = values.repeat(n * h * w * c_out // len(values) + 1)[: n * h * w * c_out].reshape(n, c_out, h, w)
    x = _tensor((n, c_in, h, w), layout, dtype)
    if path == "conv":
        x.copy_(z[:, :1])
        z = z[:, :1].expand(n, c_out, h, w)
        weight, residual = torch.ones(c_out, 1, 1, 1, dtype=dtype), None
    else:
        weight = torch.zeros(c_out, c_in, 1, 1, dtype=dtype)
        residual = _tensor((n, c_out, h, w), layout, dtype)
        residual.copy_(z)
    emu.clear_launches()
    out = emu.conv_forward(x, weight, None, residual, [1, 1], [0, 0], 1, activation)
    assert (len(emu.launches()) == 2) == (path == "split"), f"the {path} path ran {emu.launches()}"
    assert_activation_matches_torch(out, z, activation, tol, f"{activation} ({path}, {dtype_name}, {layout})")


# m and n over 64 and at least 8 tiles of 128 x 128: the large tile on the 4-SM GPU.
LARGE_TILE = Case("large_tile", 2, 64, 160, 16, 16)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "misaligned_nchw"])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_large_tile(emu, on_device, dtype_name, layout):
    on_device(FOUR_SMS)
    emu.clear_launches()
    _check_ops(emu, LARGE_TILE, dtype_name, layout, activation="relu", residual=True)
    if dtype_name != "f64":  # float64 has one small tile
        assert 256 in _launch_threads(emu), "the large tile (256 threads) never ran"


@pytest.mark.parametrize("dtype_name", ["f32", "tf32", "bf16"])
def test_large_tile_falls_back_where_it_does_not_fit(emu, on_device, dtype_name):
    """On a GPU granting 99 KB a block, 4-byte types run the medium tile instead of failing."""
    on_device(SM86)
    emu.clear_launches()
    # grad-weight takes the large tile for any m or n over 64, whatever the SM count
    _check_ops(emu, LARGE_TILE, dtype_name, "nchw")
    limit = 99 * 1024
    assert all(smem <= limit for _, _, smem in emu.launches())
    if dtype_name == "bf16":  # 16-bit tiles fit in 99 KB: the large tile stays
        assert 256 in _launch_threads(emu)


@pytest.mark.parametrize("dtype_name", ["f32", "tf32", "f16"])
@pytest.mark.parametrize("case", [CASES[-1], SPLIT_CASES[1], LARGE_TILE], ids=str)
def test_early_copy_landing(emu, on_device, case, dtype_name):
    """cp.async copies that land the moment they are issued: a stage overwritten while another
    thread still reads it would show up here (late landing shows stages read before they arrive)."""
    on_device(FOUR_SMS if case is LARGE_TILE else H100)
    emu.set_copy_landing("early")
    try:
        _check_ops(emu, case, dtype_name, "channels_last", activation="gelu", residual=True)
    finally:
        emu.set_copy_landing("late")


# Small problems with several kinds of candidate plans: the forward's channel reduction splits, the
# grad-weight's pixel reduction splits 1 or 2 ways, and a strided, padded one maps pixels.
AUTOTUNE_CASES = [Case("tune_split", 2, 136, 20, 12, 12), Case("tune_strided", 2, 136, 72, 9, 9, stride=2, padding=1)]


@pytest.mark.parametrize("case", AUTOTUNE_CASES, ids=str)
def test_autotune_times_each_problem_once(emu, autotuning, case):
    _check_ops(emu, case, "f32", "channels_last", activation="relu", residual=True)
    entries = emu.autotune_entries()
    assert [problem.split()[0] for problem, _, _ in entries] == ["forward", "grad_input", "grad_weight"]
    for problem, plans, kept in entries:
        assert len(plans) > 1 and len(set(plans)) == len(plans) and kept in plans, (problem, plans)

    emu.clear_launches()
    _check_ops(emu, case, "f32", "channels_last", activation="relu", residual=True)
    assert emu.autotune_entries() == entries, "a problem was tuned twice"
    assert len(emu.launches()) <= 6, "a tuned problem ran more than its plan's GEMM and finishing kernel"


def test_autotune_tells_problems_apart(emu, autotuning):
    """The cache key holds what changes a plan's speed: here the layout (which dimension is contiguous),
    and for the forward its epilogue."""
    case = AUTOTUNE_CASES[0]
    for layout in ("nchw", "channels_last"):
        _check_ops(emu, case, "f32", layout)
    _check_ops(emu, case, "f32", "nchw", activation="relu")
    problems = [problem for problem, _, _ in emu.autotune_entries()]
    assert len(problems) == 7 and len(set(problems)) == 7, problems


# The SIMT engine on both cases and layouts; the (slowly emulated) tensor-core one on the strided case.
@pytest.mark.parametrize("case,dtype_name,layout", [
    (case, "f32", layout) for case in AUTOTUNE_CASES for layout in ("nchw", "channels_last")
] + [(AUTOTUNE_CASES[1], "bf16", layout) for layout in ("nchw", "channels_last")], ids=str)
def test_every_autotune_candidate_is_correct(emu, autotuning, case, dtype_name, layout):
    """Each candidate plan, made the fastest in turn, computes all three ops correctly and is kept."""
    _check_ops(emu, case, dtype_name, layout, activation="silu", residual=True)
    candidates = {problem: plans for problem, plans, _ in emu.autotune_entries()}
    assert len(candidates) == 3 and all(len(plans) > 1 for plans in candidates.values()), candidates
    for plan in sorted({plan for plans in candidates.values() for plan in plans}):
        emu.clear_autotune_cache()
        emu.prefer_plan(plan)
        _check_ops(emu, case, dtype_name, layout, activation="silu", residual=True)
        for problem, plans, kept in emu.autotune_entries():
            assert kept == (plan if plan in candidates[problem] else plans[0]), (problem, plan)


@pytest.mark.parametrize("dtype_name", ["bf16", "f16"])
@pytest.mark.parametrize(
    "hw,layout,copy_bytes",
    [
        ((4, 4), "nchw", {16}),  # 16 pixels an image: 16-byte vectors
        ((6, 6), "nchw", {16, 4}),  # 36: pairs of pixels (the weights still as vectors)
        ((7, 7), "nchw", {16}),  # 49: pixels one by one, through registers (no cp.async)
        ((6, 6), "misaligned_nchw", set()),  # storage one element in: nothing 4-byte aligned
    ],
    ids=str,
)
def test_16bit_loads(emu, dtype_name, hw, layout, copy_bytes):
    """16-bit NCHW activations move as 16-byte vectors, 4-byte pairs or single elements, whichever
    their images allow; every way gives the same results (checked against float64)."""
    emu.clear_launches()
    _check_ops(emu, Case("loads", 2, 32, 24, *hw), dtype_name, layout)
    assert set(emu.copies_by_size()) == copy_bytes


def test_groups_past_the_grid_raise_before_any_launch(emu):
    """More groups than a grid's z dimension holds: a clear error naming the limit, not a launch failure."""
    emu.clear_launches()
    with pytest.raises(RuntimeError, match="up to 65535 groups"):
        emu.conv_forward(torch.randn(1, 65536, 1, 1), torch.randn(65536, 1, 1, 1), None, None, [1, 1], [0, 0], 65536, "none")
    assert emu.launches() == []


def test_more_output_tiles_than_a_grid_dimension_holds(emu):
    """65536 tiles of M (65536 x 32 output channels on float64's 32-row tile), more than a grid's y
    dimension holds: every output tile goes on x."""
    emu.clear_launches()
    x = torch.randn(1, 2, 1, 1, dtype=torch.float64)
    w = torch.randn(65536 * 32, 2, 1, 1, dtype=torch.float64)
    out = emu.conv_forward(x, w, None, None, [1, 1], [0, 0], 1, "none")
    assert_rel_close(out, reference(x, w), TOL[torch.float64])
    ((grid, _, _),) = emu.launches()
    assert grid[:2] == [65536, 1], grid
