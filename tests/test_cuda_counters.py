"""The memory counters of the emulated CUDA kernels (tests/emulator/runtime.h), as CI guards.

The emulator groups the lanes of each warp instruction as the hardware does and counts what the
instruction would cost: the 32-byte sectors of a global access, the bank wavefronts of a shared
one. That is a model of the memory pipeline, not a measurement (no caches, no timing), but it is
the model Nsight Compute's memory tables are read against, and it makes the defects found so far
by reading the code (stores V elements apart, uncoalesced bias loads, bank conflicts in the C tile)
fail a test on a machine without a GPU.

Every plan autotuning may pick for a dense, 16-byte-aligned layer is run with counting on, for
each dtype, layout and op, and each kernel's figures are held to
  - the floors that hold wherever the layout allows them: global accesses at least 90% sector
    efficient, ldmatrix free of bank conflicts;
  - no worse than tests/cuda_counters_baseline.json (today's figures, after the fixes they showed).
A change that improves a figure updates the baseline: POINTWISE_UPDATE_COUNTER_BASELINE=1 pytest
tests/test_cuda_counters.py rewrites it, and the diff is part of the change.
"""

import json
import os
import pathlib

import pytest
import torch

import emulator
from reference import Case, _pair, make_tensor, misaligned, reference, assert_rel_close, TOL

BASELINE_PATH = pathlib.Path(__file__).with_name("cuda_counters_baseline.json")
UPDATE = os.environ.get("POINTWISE_UPDATE_COUNTER_BASELINE") == "1"

GLOBAL = ("global_load", "global_store", "cp_async_global")
SHARED = ("shared_load", "shared_store", "cp_async_shared", "ldmatrix")
# Bytes the lanes of a dense, aligned layer's global accesses use of the sectors they touch, at the
# least. A vector along n needs its one bias value per output channel, a broadcast: its own
# instruction is 25% efficient, which keeps the loads of an NCHW epilogue near 95%, not at 100%.
MIN_SECTOR_EFFICIENCY = 0.9

DTYPES = {"f32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False),
          "f16": (torch.float16, False)}
# 128 -> 96 channels over 2 x 8 x 16 pixels: every tile shape and split is a candidate, the 128-row
# tiles end inside the layer, and every operand is dense and 16-byte aligned in both layouts.
DENSE = Case("dense", 2, 128, 96, 8, 16)
OPS = ("forward", "grad_input", "grad_weight")


def _operands(case, dtype, layout):
    x = make_tensor(case.input_shape, layout, dtype)
    w = make_tensor(case.weight_shape, "nchw", dtype)
    b = torch.randn(case.c_out, dtype=torch.float64).to(dtype)
    r = make_tensor(case.output_shape, layout, dtype)
    g = make_tensor(case.output_shape, layout, dtype)
    return x, w, b, r, g


def _op_call(emu, op, case, x, w, b, r, g):
    stride, padding = list(_pair(case.stride)), list(_pair(case.padding))
    if op == "forward":
        return lambda: emu.conv_forward(x, w, b, r, stride, padding, case.groups, "relu")
    if op == "grad_input":
        return lambda: emu.conv_backward_input(g, w, list(case.input_shape), stride, padding, case.groups)
    return lambda: emu.conv_backward_weight(g, x, stride, padding, case.groups)


def _counted_runs(emu, call, counting, run_uncounted):
    """{plan: its launches' counters} for every candidate plan of the call's GEMM, each pinned
    through autotuning and then run alone with counting on."""
    emu.prefer_plan("none")  # no plan has this name: every candidate ties, none is run twice
    call()
    (_, plans, _), = emu.autotune_entries()
    runs = {}
    for plan in plans:
        emu.clear_autotune_cache()
        emu.prefer_plan(plan)
        call()  # tunes: the candidates run once each, uncounted
        emu.clear_launches()
        emu.set_counting(counting, run_uncounted)
        try:
            call()
        finally:
            emu.set_counting("off")
        runs[plan] = emu.launch_counters()
    return runs


def _figures(launch):
    """Sector efficiency of each global access kind, excess wavefronts of each shared one."""
    a = launch["access"]
    figures = {k: emulator.sector_efficiency(a[k]) for k in GLOBAL}
    figures.update({k: emulator.excess_wavefronts(a[k]) for k in SHARED})
    return {k: v for k, v in figures.items() if v is not None}


def _where(launch):
    """The sites of a launch that need a look, for failure messages."""
    lines = []
    for s in launch["sites"]:
        f = s["file"].split("csrc/")[-1]
        if s["access"] in GLOBAL:
            lines.append(f"  {f}:{s['line']} {s['access']}: {emulator.sector_efficiency(s):.3f} of sector bytes used")
        else:
            lines.append(f"  {f}:{s['line']} {s['access']}: {s['wavefronts']} wavefronts, ideal {s['ideal_wavefronts']}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def baseline():
    current = json.loads(BASELINE_PATH.read_text()) if BASELINE_PATH.exists() else {}
    yield current
    if UPDATE:
        BASELINE_PATH.write_text(json.dumps(dict(sorted(current.items())), indent=1) + "\n")


# ---- the model itself, on textbook access patterns -------------------------------------------------


@pytest.mark.parametrize("bytes_per_lane,stride,sectors,used", [
    (4, 4, 4, 128),      # 32 consecutive floats: 4 sectors, all used
    (4, 8, 8, 128),      # every other float: half of each sector
    (2, 16, 16, 64),     # one bf16 per 16 bytes (a bias loaded per element of a vector)
    (16, 16, 16, 512),   # 16-byte vectors, consecutive
    (4, 0, 1, 4),        # a broadcast: one sector, 4 distinct bytes
    (4, 128, 32, 128),   # one float per 128 bytes: a sector per lane
])
def test_model_global_sectors(emu, bytes_per_lane, stride, sectors, used):
    counts = emu.count_instruction("global_load", bytes_per_lane, [(lane, 4096 + stride * lane) for lane in range(32)])
    assert (counts["requests"], counts["sectors"], counts["bytes"]) == (1, sectors, used)


@pytest.mark.parametrize("access,bytes_per_lane,stride,wavefronts,ideal", [
    ("shared_load", 4, 4, 1, 1),       # 32 banks, one word each
    ("shared_load", 4, 128, 32, 1),    # every lane on bank 0: 32-way conflict
    ("shared_load", 4, 0, 1, 1),       # a broadcast
    ("shared_store", 4, 8, 2, 1),      # even words only: 2-way
    ("shared_load", 8, 8, 2, 2),       # 8 bytes a lane: two half-warp phases, each conflict-free
    ("shared_load", 16, 16, 4, 4),     # 16 bytes a lane: four quarter-warp phases
    ("shared_load", 16, 32, 8, 4),     # 16 bytes 32 apart: each phase on half the banks
    ("ldmatrix", 16, 80, 4, 4),        # 8 rows of 16 bytes, 80 apart: distinct banks (our padding)
    ("ldmatrix", 16, 64, 16, 4),       # rows 64 bytes apart: every other row on the same banks, 4-way
])
def test_model_shared_wavefronts(emu, access, bytes_per_lane, stride, wavefronts, ideal):
    counts = emu.count_instruction(access, bytes_per_lane, [(lane, 4096 + stride * lane) for lane in range(32)])
    assert (counts["wavefronts"], counts["ideal_wavefronts"]) == (wavefronts, ideal)


def test_model_groups_lanes_of_one_instruction(emu, autotuning):
    """A kernel's counts add up: every cp.async of a dense forward is one request a warp, and the
    sectors its lanes touch are exactly the bytes staged (no lane counted twice or left out)."""
    x, w, b, r, g = _operands(DENSE, torch.float32, "channels_last")
    runs = _counted_runs(emu, _op_call(emu, "forward", DENSE, x, w, b, r, g), "all", True)
    (gemm,) = runs["medium x1"]
    copies = gemm["access"]["cp_async_global"]
    assert copies["bytes"] == 32 * copies["sectors"]
    assert copies["requests"] * 32 * 16 >= copies["bytes"] > (copies["requests"] - 1) * 16
    assert gemm["blocks_counted"] == gemm["grid"][0] * gemm["grid"][1] * gemm["grid"][2]


# ---- the kernels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_dense_layer_memory_counters(emu, autotuning, baseline, dtype_name, layout, op):
    dtype, tf32 = DTYPES[dtype_name]
    torch.backends.cudnn.allow_tf32 = tf32  # restored by the pin_tf32 fixture
    x, w, b, r, g = _operands(DENSE, dtype, layout)
    runs = _counted_runs(emu, _op_call(emu, op, DENSE, x, w, b, r, g), "sampled", False)
    failures = []
    for plan, launches in runs.items():
        for index, launch in enumerate(launches):
            kernel = "gemm" if index == 0 else "finish_splits"
            key = f"{dtype_name}/{layout}/{op}/{plan}/{kernel}"
            figures = _figures(launch)
            problems = [f"{k} {v:.3f} of sector bytes used, under {MIN_SECTOR_EFFICIENCY}"
                        for k, v in figures.items() if k in GLOBAL and v < MIN_SECTOR_EFFICIENCY]
            if figures.get("ldmatrix", 0.0) > 0.0:
                problems.append(f"ldmatrix {figures['ldmatrix']:.3f} wavefronts over the ideal")
            if UPDATE:
                baseline[key] = figures
            elif key not in baseline:
                problems.append("no baseline (POINTWISE_UPDATE_COUNTER_BASELINE=1 adds it)")
            else:
                for k, v in figures.items():
                    was = baseline[key].get(k)
                    if was is None:
                        problems.append(f"{k}: not in the baseline")
                    elif k in GLOBAL and v < was - 1e-9:
                        problems.append(f"{k} sector efficiency {v:.3f}, was {was:.3f}")
                    elif k in SHARED and v > was + 1e-9:
                        problems.append(f"{k} wavefronts over the ideal {v:.3f}, was {was:.3f}")
            if problems:
                failures.append(f"{key}: " + "; ".join(problems) + "\n" + _where(launch))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype_name", ["f32", "bf16"])
def test_unsplit_forward_moves_only_compulsory_bytes(emu, autotuning, dtype_name, layout):
    """Each byte of the input, weight, bias and residual is read (at least once), nothing else;
    each byte of the output is written, nothing else: no reads past a tile's end, no stray stores."""
    dtype, _ = DTYPES[dtype_name]
    x, w, b, r, g = _operands(DENSE, dtype, layout)
    runs = _counted_runs(emu, _op_call(emu, "forward", DENSE, x, w, b, r, g), "all", True)
    size = dtype.itemsize
    compulsory_read = (x.numel() + w.numel() + b.numel() + r.numel()) * size
    for plan, launches in runs.items():
        if not plan.endswith(" x1"):
            continue
        (gemm,) = launches
        assert gemm["unique_bytes_read"] == compulsory_read, plan
        assert gemm["unique_bytes_written"] == r.numel() * size, plan


@pytest.mark.parametrize("dtype_name", ["f32", "bf16"])
def test_bias_not_aligned_to_a_vector(emu, dtype_name):
    """The channels_last epilogue loads a vector's bias in one 16-byte load where the bias allows;
    a bias starting one element into its storage takes the element-wise loads, with the same result."""
    dtype, _ = DTYPES[dtype_name]
    case = DENSE
    x = make_tensor(case.input_shape, "channels_last", dtype)
    w = make_tensor(case.weight_shape, "nchw", dtype)
    b = misaligned((case.c_out,), dtype, "cpu")
    out = emu.conv_forward(x, w, b, None, [1, 1], [0, 0], 1, "none")
    assert_rel_close(out, reference(x, w, b, 1, 0, 1, None, None), TOL[dtype], "forward")
