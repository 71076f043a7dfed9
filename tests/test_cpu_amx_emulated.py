"""The CPU drivers with the AMX kernel set (csrc/cpu/amx_*), its tile instructions emulated
(tests/amx_emulated), against float64: forward, grad-input and grad-weight in both layouts, with
depth tails, several depth blocks, partial panels, stride, padding, groups and the epilogue. Every
CPU tensor and packing buffer sits between guard pages and starts as NaN bytes, so a tile load past
an operand's end or a read of unwritten packing shows. On an AMX CPU, test_cpu_kernels.py runs the
real instructions (its amx path); here nothing of the AMX path but the instructions and the AVX-512
epilogue goes unchecked.
"""

import pytest
import torch
import torch.nn.functional as F

import pointwise_cuda as pw
from reference import TOL, assert_rel_close, make_tensor

pytestmark = pytest.mark.skipif("amx" not in pw.build_info()["cpu_isa_compiled"],
                                reason="this build has no AMX kernel set (not x86, or its compiler or assembler "
                                       "lacks AMX: setup.py's compiler_builds_amx)")


@pytest.fixture(scope="module")
def amx():
    import amx_emulated

    module = amx_emulated.load()
    module.guard_cpu_allocations(True)
    yield module
    module.guard_cpu_allocations(False)


# (n, c_in, c_out, h, w, stride, padding, groups): depths per group 40 (one 32-step and a tail of 8),
# 33 (odd: the packed zero step), 64 (whole steps), 300 (two depth blocks of 256, the second with a
# tail); output channels and pixels that leave partial 32-line panels.
CASES = [
    (2, 40, 48, 7, 9, 1, 0, 1),
    (1, 33, 70, 5, 5, 1, 0, 1),
    (2, 64, 32, 8, 8, 2, 1, 1),
    (1, 300, 40, 6, 7, 1, 0, 1),
    (2, 80, 96, 5, 6, 1, 1, 2),
]


def _case_id(case):
    n, c_in, c_out, h, w, stride, padding, groups = case
    return f"{n}x{c_in}>{c_out}@{h}x{w}-s{stride}p{padding}g{groups}"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_amx_kernel_set_matches_float64(amx, case, layout):
    n, c_in, c_out, h, w, stride, padding, groups = case
    x = make_tensor((n, c_in, h, w), layout, torch.bfloat16)
    weight = torch.randn(c_out, c_in // groups, 1, 1, dtype=torch.float64).to(torch.bfloat16)
    bias = torch.randn(c_out, dtype=torch.float64).to(torch.bfloat16)
    out_h, out_w = (h + 2 * padding - 1) // stride + 1, (w + 2 * padding - 1) // stride + 1
    residual = make_tensor((n, c_out, out_h, out_w), layout, torch.bfloat16)
    grad_out = make_tensor((n, c_out, out_h, out_w), layout, torch.bfloat16)
    s, p = [stride, stride], [padding, padding]
    dots_before = amx.dot_products()

    out = amx.conv_forward(x, weight, bias, residual, s, p, groups, "silu")
    grad_x = amx.conv_backward_input(grad_out, weight, list(x.shape), s, p, groups)
    grad_w = amx.conv_backward_weight(grad_out, x, s, p, groups)

    assert amx.dot_products() > dots_before, "the emulated tile instructions did not run"
    x64, w64 = x.double().requires_grad_(True), weight.double().requires_grad_(True)
    plain = F.conv2d(x64, w64, None, stride, padding, 1, groups)
    ref = F.silu(plain + bias.double().view(1, -1, 1, 1) + residual.double())
    plain.backward(grad_out.double())
    assert_rel_close(out, ref, TOL[torch.bfloat16], "forward")
    assert_rel_close(grad_x, x64.grad, TOL[torch.bfloat16], "grad input")
    assert_rel_close(grad_w, w64.grad, TOL[torch.bfloat16], "grad weight")
