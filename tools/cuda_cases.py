"""A representative set of CUDA calls of every op, checked against float64 F.conv2d.

    python tools/cuda_cases.py [-v] [--quick]

Every dtype (float64, float32 with TF32 off and on, float16, bfloat16) x shape x layout x storage
alignment: a correctness sweep on its own. --quick keeps one engine of each kind (exact fp32, TF32,
bf16) and alternates the alignment, a third of the calls over the same tiles, orientations and
split paths: what tools/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck), whose
slowdown the full set would not fit in a device call. Exits non-zero on any mismatch.
"""

import itertools
import pathlib
import sys

import torch
import torch.nn.functional as F

import pointwise_cuda  # noqa: F401  (registers torch.ops.pointwise_cuda)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from reference import misaligned, poisoned_allocations  # noqa: E402

ops = torch.ops.pointwise_cuda
# (dtype, tf32) -> relative error bound against float64
BOUNDS = {
    (torch.float64, False): 1e-12,
    (torch.float32, False): 1e-5,
    (torch.float32, True): 2e-3,
    (torch.float16, False): 2e-3,
    (torch.bfloat16, False): 1e-2,
}
# (N, C_in, C_out, H, W, stride, padding, groups)
SHAPES = [
    (2, 17, 10, 5, 5, 1, 0, 1),
    (2, 64, 96, 9, 9, 2, 1, 2),
    (1, 32, 48, 8, 8, 1, 0, 1),
    (3, 48, 40, 7, 7, (2, 1), (1, 0), 4),
    (2, 256, 64, 12, 12, 1, 0, 1),
    # Few output tiles and a long channel reduction: the forward or grad-input splits K.
    (32, 1152, 48, 1, 1, 1, 0, 1),
    (4, 576, 40, 7, 7, 1, 0, 1),
    (2, 40, 600, 7, 7, 2, 1, 1),
    (8, 256, 64, 3, 3, 1, 0, 2),
]


def rel_error(out, ref):
    return ((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def cpu64(t):
    """The float64 reference runs on the CPU: no cuDNN kernel under compute-sanitizer."""
    return t.detach().double().cpu()


def cases(quick: bool):
    """(dtype, tf32, shape, channels_last, misaligned) for every call of the sweep."""
    if not quick:
        return list(itertools.product(BOUNDS, SHAPES, (False, True), (False, True)))
    kinds = [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)]
    return [(kind, shape, channels_last, (i + channels_last) % 2 == 1)
            for kind in kinds for i, shape in enumerate(SHAPES) for channels_last in (False, True)]


def main() -> int:
    torch.manual_seed(0)
    failures = 0
    selected = cases("--quick" in sys.argv)
    for (dtype, tf32), shape, channels_last, offset in selected:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        n, cin, cout, h, w, stride, padding, groups = shape
        sp = (stride, stride) if isinstance(stride, int) else stride
        pp = (padding, padding) if isinstance(padding, int) else padding
        make = (lambda s: misaligned(s, dtype, "cuda", channels_last)) if offset else (
            lambda s: torch.randn(s, device="cuda", dtype=dtype).contiguous(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format))
        x = make((n, cin, h, w))
        weight = torch.randn(cout, cin // groups, 1, 1, device="cuda", dtype=dtype)
        bias = torch.randn(cout, device="cuda", dtype=dtype)
        ref_z = F.conv2d(cpu64(x), cpu64(weight), cpu64(bias), sp, pp, 1, groups)
        residual = make(tuple(ref_z.shape))
        ref = F.relu(ref_z + cpu64(residual))
        grad = make(tuple(ref_z.shape))
        with poisoned_allocations():  # outputs start as NaN: an element no kernel writes shows up
            out = ops.conv_forward(x, weight, bias, residual, list(sp), list(pp), groups, "relu")
            gi = ops.conv_backward_input(grad, weight, list(x.shape), list(sp), list(pp), groups)
            gw = ops.conv_backward_weight(grad, x, list(sp), list(pp), groups)
        xd, wd = cpu64(x).requires_grad_(), cpu64(weight).requires_grad_()
        F.conv2d(xd, wd, None, sp, pp, 1, groups).backward(cpu64(grad))
        errors = {"forward": rel_error(out, ref), "grad_input": rel_error(gi, xd.grad), "grad_weight": rel_error(gw, wd.grad)}
        bound = BOUNDS[(dtype, tf32)] * (4 if dtype != torch.float64 else 1)  # grad-weight sums ~10^2-10^3 terms
        ok = all(e <= bound and e == e for e in errors.values())
        failures += not ok
        if not ok or "-v" in sys.argv:
            print(f"{'ok  ' if ok else 'FAIL'} {str(dtype):15} tf32={tf32:d} {shape} cl={channels_last:d} "
                  f"misaligned={offset:d} " + " ".join(f"{k}={v:.1e}" for k, v in errors.items()))
    torch.cuda.synchronize()
    print(f"cuda_cases: {failures} failing of {len(selected)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
