"""The CPU kernels: both instruction-set paths against float64, and determinism (bitwise, across runs and thread counts)."""

import pytest
import torch

import pointwise_cuda as pw
import torch.nn.functional as F

from reference import make_tensor, rel_err

# Big enough that at::parallel_for splits the work (and the grad-weight reduction) across threads.
SHAPE = dict(n=4, c_in=40, c_out=48, h=24, w=22)


def _run(dtype, layout, stride=1, padding=0, groups=1, activation="silu", seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c_in, c_out, h, w = SHAPE["n"], SHAPE["c_in"], SHAPE["c_out"], SHAPE["h"], SHAPE["w"]
    x = make_tensor((n, c_in, h, w), layout, torch.float64)
    x.copy_(torch.randn(x.shape, generator=g, dtype=torch.float64))
    x = x.to(dtype).requires_grad_(True)
    wt = torch.randn(c_out, c_in // groups, 1, 1, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    out_hw = ((h + 2 * padding - 1) // stride + 1, (w + 2 * padding - 1) // stride + 1)
    r = torch.randn(n, c_out, *out_hw, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    out = pw.pointwise_conv2d(x, wt, b, stride, padding, groups=groups, activation=activation, residual=r)
    out.backward(torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype))
    return out.detach(), x.grad, wt.grad, b.grad, r.grad


CONFIGS = [
    pytest.param(torch.float32, "nchw", 1, 0, 1, id="f32-nchw"),
    pytest.param(torch.float32, "channels_last", 2, 1, 2, id="f32-channels_last-stride2-pad1-groups2"),
    pytest.param(torch.float64, "channels_last", 1, 0, 1, id="f64-channels_last"),
    pytest.param(torch.bfloat16, "nchw", 1, 1, 4, id="bf16-nchw-pad1-groups4"),
    pytest.param(torch.float16, "channels_last", 1, 0, 1, id="f16-channels_last"),
]


@pytest.mark.parametrize("dtype,layout,stride,padding,groups", CONFIGS)
def test_bitwise_deterministic_across_runs(dtype, layout, stride, padding, groups):
    first = _run(dtype, layout, stride, padding, groups)
    second = _run(dtype, layout, stride, padding, groups)
    for name, a, b in zip(("output", "grad input", "grad weight", "grad bias", "grad residual"), first, second):
        assert torch.equal(a, b), f"{name} differs between two identical runs"


@pytest.mark.parametrize("dtype,layout,stride,padding,groups", CONFIGS)
def test_grad_weight_bitwise_independent_of_thread_count(dtype, layout, stride, padding, groups, restore_num_threads):
    torch.set_num_threads(2)
    two = _run(dtype, layout, stride, padding, groups)
    torch.set_num_threads(1)
    one = _run(dtype, layout, stride, padding, groups)
    assert torch.equal(one[2], two[2]), "grad weight differs between 1 and 2 threads"
    for name, a, b in zip(("output", "grad input", "grad bias", "grad residual"), (one[0], one[1], one[3], one[4]), (two[0], two[1], two[3], two[4])):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"


TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype,layout,stride,padding,groups", CONFIGS)
def test_each_cpu_path_matches_float64(cpu_path, dtype, layout, stride, padding, groups):
    assert pw._C.cpu_isa() == cpu_path
    out, grad_x, grad_w, grad_b, grad_r = _run(dtype, layout, stride, padding, groups)
    # The same inputs in float64 through F.conv2d's autograd.
    g = torch.Generator().manual_seed(0)
    n, c_in, c_out, h, w = SHAPE["n"], SHAPE["c_in"], SHAPE["c_out"], SHAPE["h"], SHAPE["w"]
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64).to(dtype).double().requires_grad_(True)
    wt = torch.randn(c_out, c_in // groups, 1, 1, generator=g, dtype=torch.float64).to(dtype).double().requires_grad_(True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64).to(dtype).double().requires_grad_(True)
    out_hw = ((h + 2 * padding - 1) // stride + 1, (w + 2 * padding - 1) // stride + 1)
    r = torch.randn(n, c_out, *out_hw, generator=g, dtype=torch.float64).to(dtype).double().requires_grad_(True)
    ref = F.silu(F.conv2d(x, wt, b, stride, padding, 1, groups) + r)
    ref.backward(torch.randn(ref.shape, generator=g, dtype=torch.float64).to(dtype).double())
    tol = TOLERANCE[dtype] * (1 if dtype == torch.float64 else 4)  # gradients sum hundreds of terms
    for name, ours, theirs in (("output", out, ref), ("grad input", grad_x, x.grad), ("grad weight", grad_w, wt.grad),
                               ("grad bias", grad_b, b.grad), ("grad residual", grad_r, r.grad)):
        assert rel_err(ours, theirs.detach()) <= tol, f"{name} on the {cpu_path} path: {rel_err(ours, theirs):.2e}"


def _isa_in_subprocess(cap):
    import os
    import subprocess
    import sys

    code = "import torch, pointwise_cuda as pw; pw.pointwise_conv2d(torch.randn(1, 4, 3, 3), torch.randn(2, 4, 1, 1)); print(pw.build_info()['cpu_isa'])"
    env = {**os.environ, "POINTWISE_CPU_ISA": cap}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_the_isa_cap_selects_the_portable_kernels():
    result = _isa_in_subprocess("portable")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["portable"]


def test_a_cap_above_the_cpu_runs_the_best_the_cpu_has():
    best = pw.build_info()["cpu_isa_detected"]
    top = [isa["name"] for isa in pw._C.cpu_isas()][-1]
    result = _isa_in_subprocess(top)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [best]


def test_an_unknown_isa_cap_names_the_allowed_ones():
    result = _isa_in_subprocess("avx9000")
    assert result.returncode != 0
    names = ", ".join(isa["name"] for isa in pw._C.cpu_isas())
    assert f"POINTWISE_CPU_ISA must be one of {names}; got 'avx9000'" in result.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_grad_weight_of_a_big_weight_over_long_chunks(cpu_path, dtype):
    # A weight this big limits the partial sums to 7 chunks of 586 pixels here, so each chunk's
    # pixels are packed and summed a slice at a time (the sums going on from slice to slice).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1536, 64, 64, generator=g).to(dtype)
    grad = torch.randn(1, 1536, 64, 64, generator=g).to(dtype)
    ours = torch.ops.pointwise_cuda.conv_backward_weight(grad, x, [1, 1], [0, 0], 1)
    ref = grad.double().reshape(1536, -1) @ x.double().reshape(1536, -1).t()
    tol = TOLERANCE[dtype] * 4
    assert rel_err(ours.reshape(1536, 1536), ref) <= tol
    again = torch.ops.pointwise_cuda.conv_backward_weight(grad, x, [1, 1], [0, 0], 1)
    assert torch.equal(ours, again)


# Grad-weight shapes whose GEMM puts a different operand on A with 1 thread than with 2
# on the 6 x 16 tile (backward_weight_typed): the grad output's channels on A, so that the tiles go straight to
# grad_weight, or the input's, so that each tile is scattered over grad_weight's rows. Channels
# last, 24 -> 40 over 256 pixels: 1 chunk, so only with 2 threads do units cut A into blocks, and
# the operand with fewer channels goes to B. NCHW, 1024 -> 48 over 144 pixels: rows 4 KiB apart,
# and the model moves the input to B only with 1 thread (less transposing). The sums must not
# change with the operands' places.
@pytest.mark.parametrize("layout,c_in,c_out,n,hw", [("channels_last", 24, 40, 1, 16), ("nchw", 1024, 48, 1, 12)],
                         ids=["channels_last-24-40", "nchw-1024-48"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_grad_weight_matches_float64_whichever_operand_is_a(cpu_path, dtype, layout, c_in, c_out, n, hw,
                                                            restore_num_threads):
    g = torch.Generator().manual_seed(c_in + c_out)
    x = make_tensor((n, c_in, hw, hw), layout, torch.float64)
    x.copy_(torch.randn(x.shape, generator=g, dtype=torch.float64))
    grad = make_tensor((n, c_out, hw, hw), layout, torch.float64)
    grad.copy_(torch.randn(grad.shape, generator=g, dtype=torch.float64))
    x, grad = x.to(dtype), grad.to(dtype)
    sums = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sums[threads] = torch.ops.pointwise_cuda.conv_backward_weight(grad, x, [1, 1], [0, 0], 1)
    ref = grad.double().transpose(0, 1).reshape(c_out, -1) @ x.double().transpose(0, 1).reshape(c_in, -1).t()
    assert rel_err(sums[1].reshape(c_out, c_in), ref) <= TOLERANCE[dtype] * 4
    assert torch.equal(sums[1], sums[2]), "grad weight differs between 1 and 2 threads"


# Channels-last grad-weight of few channels reads them in place (backward_weight_typed): 24 -> 48,
# both operands; 32 -> 16, the input, and the grad output's 2 whole panels of 6 (its partial last
# panel is packed and run in a pass of its own); 48 -> 48 in 2 groups, the grad output (in
# float64, pixels 32 channels apart at most: only the 24 input channels). NCHW never does, and
# both layouts take the same products in the same order: the sums must be equal, bit for bit.
@pytest.mark.parametrize("c_in,c_out,groups", [(24, 48, 1), (32, 16, 1), (48, 48, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_grad_weight_in_place_equals_packed(cpu_path, dtype, c_in, c_out, groups):
    g = torch.Generator().manual_seed(c_in * 100 + c_out + groups)
    x = torch.randn(2, c_in, 32, 32, generator=g, dtype=torch.float64)
    grad = torch.randn(2, c_out, 32, 32, generator=g, dtype=torch.float64)
    sums = {layout: torch.ops.pointwise_cuda.conv_backward_weight(make_tensor(grad.shape, layout, dtype).copy_(grad),
                                                                  make_tensor(x.shape, layout, dtype).copy_(x),
                                                                  [1, 1], [0, 0], groups)
            for layout in ("channels_last", "nchw")}
    per_group = [grad[:, i * (c_out // groups):(i + 1) * (c_out // groups)].transpose(0, 1).reshape(c_out // groups, -1)
                 @ x[:, i * (c_in // groups):(i + 1) * (c_in // groups)].transpose(0, 1).reshape(c_in // groups, -1).t()
                 for i in range(groups)]
    ref = torch.cat(per_group).reshape(c_out, c_in // groups, 1, 1)
    assert rel_err(sums["channels_last"], ref) <= TOLERANCE[dtype] * 4
    assert torch.equal(sums["channels_last"], sums["nchw"])


# Channel counts that each of an ISA's tile widths pads least (kernel_set.h's dispatch_width): 24
# and 65 run the AVX2 set's 4 x 24 tile, 16 and 48 its 6 x 16 one (48 the AVX-512 set's 12 x 16),
# on the forward's columns (output channels) and the grad-input's (input channels); reductions
# shorter and longer than one depth block. In NCHW the pixels are the columns, and the tiles of one
# depth block run along the rows of C instead of down its columns (gemm.h's TileOrder).
@pytest.mark.parametrize("c_in,c_out", [(24, 16), (600, 24), (24, 65), (65, 48), (16, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_each_tile_width_matches_float64(cpu_path, layout, dtype, c_in, c_out):
    g = torch.Generator().manual_seed(c_in * 1000 + c_out)
    x = make_tensor((2, c_in, 5, 7), layout, torch.float64)
    x.copy_(torch.randn(x.shape, generator=g, dtype=torch.float64))
    x = x.to(dtype).requires_grad_(True)
    wt = torch.randn(c_out, c_in, 1, 1, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64).to(dtype)
    r = make_tensor((2, c_out, 5, 7), layout, dtype)
    r.copy_(torch.randn(r.shape, generator=g, dtype=torch.float64))
    grad = torch.randn(2, c_out, 5, 7, generator=g, dtype=torch.float64).to(dtype)
    out = pw.pointwise_conv2d(x, wt, b, residual=r, activation="relu")
    out.backward(grad)
    x64, w64 = x.detach().double().requires_grad_(True), wt.detach().double().requires_grad_(True)
    ref = F.relu(F.conv2d(x64, w64, b.double()) + r.double())
    ref.backward(grad.double())
    tol = TOLERANCE[dtype] * 4
    for name, ours, theirs in (("output", out, ref), ("grad input", x.grad, x64.grad), ("grad weight", wt.grad, w64.grad)):
        assert rel_err(ours, theirs) <= tol, f"{name} on the {cpu_path} path: {rel_err(ours, theirs):.2e}"


def _check_fused_forward_and_grad_input(cpu_path, dtype, input_shape, c_out, groups, memory_format, seed):
    """relu(conv(x) + bias + residual) and its grad-input, ours in dtype against float64 on the same
    rounded inputs, all activations in memory_format."""
    g = torch.Generator().manual_seed(seed)
    n, c_in, h, w = input_shape
    x64 = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64)
    w64 = torch.randn(c_out, c_in // groups, 1, 1, generator=g, dtype=torch.float64)
    b64 = torch.randn(c_out, generator=g, dtype=torch.float64)
    r64 = torch.randn(n, c_out, h, w, generator=g, dtype=torch.float64)
    grad64 = torch.randn(n, c_out, h, w, generator=g, dtype=torch.float64)
    x = x64.to(dtype).contiguous(memory_format=memory_format).requires_grad_(True)
    r = r64.to(dtype).contiguous(memory_format=memory_format)
    out = pw.pointwise_conv2d(x, w64.to(dtype), b64.to(dtype), groups=groups, residual=r, activation="relu")
    out.backward(grad64.to(dtype).contiguous(memory_format=memory_format))
    x_ref = x64.to(dtype).double().requires_grad_(True)
    ref = F.relu(F.conv2d(x_ref, w64.to(dtype).double(), b64.to(dtype).double(), groups=groups) + r64.to(dtype).double())
    ref.backward(grad64.to(dtype).double())
    tol = TOLERANCE[dtype] * 4
    assert out.is_contiguous(memory_format=memory_format)
    assert rel_err(out, ref) <= tol, f"output on the {cpu_path} path: {rel_err(out, ref):.2e}"
    assert rel_err(x.grad, x_ref.grad) <= tol, f"grad input on the {cpu_path} path: {rel_err(x.grad, x_ref.grad):.2e}"


# NCHW planes a page or more apart (47x49 pixels: 9 KiB in float32, 4.5 KiB in bfloat16) with
# reductions short enough for the pixels' block to stay in L1 (16 input channels for the forward, 30
# output channels for grad-input): the tiles run along the rows of C (gemm.h's TileOrder), the
# last pixel panel partial and the 30 channels not a whole number of row panels.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_nchw_tiles_along_rows_match_float64(cpu_path, dtype):
    _check_fused_forward_and_grad_input(cpu_path, dtype, (2, 16, 47, 49), 30, 1, torch.contiguous_format, seed=47)


# Groups that share cache lines in channels_last (ShuffleNetV2's 240 -> 60 in 3 groups, scaled down:
# 20 channels a group, 80 bytes in float32): the units run span by span of pixels, every group on a
# span in turn (pointwise_cpu.cpp), and 13x13 pixels in 3 images leave units past the last pixel
# panel, split between 2 threads. The 20 channels fill 20 columns of the AVX2 set's 4 x 24 tile (16
# and 4 of the portable set's 6 x 16), stored as a padded panel's run (TileColumns::run); forward
# and grad-input both.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_channels_last_groups_sharing_lines_match_float64(cpu_path, dtype, restore_num_threads):
    torch.set_num_threads(2)
    _check_fused_forward_and_grad_input(cpu_path, dtype, (3, 60, 13, 13), 60, 3, torch.channels_last, seed=60)


def test_grad_weight_reading_nchw_channels_in_place(cpu_path):
    # NCHW, 3 images of 36x36: the grad-weight chunks of 486 pixels lie in one image (A's whole
    # panels of input channels read in place, the partial last panel packed) or cross into the next
    # (packed run by run, each image's pixels copied into rows: pack_panels' in_long_runs).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 40, 36, 36, generator=g)
    grad = torch.randn(3, 20, 36, 36, generator=g)
    ours = torch.ops.pointwise_cuda.conv_backward_weight(grad, x, [1, 1], [0, 0], 1)
    ref = torch.einsum("nopq,nipq->oi", grad.double(), x.double())
    assert rel_err(ours.reshape(20, 40), ref) <= TOLERANCE[torch.float32]
