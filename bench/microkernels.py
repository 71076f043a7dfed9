"""Our CPU micro-kernels against PyTorch's brgemm (oneDNN's ukernel) on the same packed operands.

    python bench/microkernels.py            # prints a table; --json FILE writes it too

One thread, operands resident in cache (a GEMM block of the drivers' sizes), GFLOP/s per kernel set
the CPU runs (float32; bfloat16 where a kernel set packs it as bfloat16). The comparison behind the
choice of micro-kernel recorded in ARCHITECTURE.md: it builds the package's own kernel files
(csrc/cpu) with a small harness (microkernels.cpp), so what it times is what the ops run.
"""

import argparse
import json
import os
import sys

import torch
import torch.utils.cpp_extension

import pointwise_cuda as pw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["bench/microkernels.cpp", "csrc/cpu/isa.cpp", "csrc/cpu/avx2_kernels.cpp", "csrc/cpu/avx512_kernels.cpp",
           "csrc/cpu/avx512_bf16_kernels.cpp", "csrc/cpu/amx_kernels.cpp"]
# (M, N, K): about a drivers' block (24 row panels of 8 x 8 column panels over one depth block; M a
# whole number of every kernel set's tile rows: 6, 8, 12, 32), a short reduction (a 32-channel
# layer), a long one.
SHAPES = [(192, 256, 256), (192, 256, 32), (192, 256, 1024)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # The kernel sets the package was built with (setup.py leaves AMX out where the toolchain lacks it).
    flags = ["-O3", "-DPOINTWISE_WITH_X86_KERNELS=1"]
    if "amx" in pw.build_info()["cpu_isa_compiled"]:
        flags.append("-DPOINTWISE_WITH_AMX_KERNELS=1")
    module = torch.utils.cpp_extension.load(
        name="pointwise_microkernels", sources=[os.path.join(REPO, s) for s in SOURCES],
        extra_include_paths=[os.path.join(REPO, "csrc")], extra_cflags=flags,
        build_directory=_build_dir(), verbose=False)
    rows = []
    for dtype in ("float32", "bfloat16"):
        for m, n, k in SHAPES:
            reps = max(3, int(4e9 / (2 * m * n * k)))
            for isa, ours, brgemm in module.compare(dtype, m, n, k, reps):
                rows.append({"dtype": dtype, "isa": isa, "m": m, "n": n, "k": k, "ours_gflops": ours, "brgemm_gflops": brgemm})
    env = {"cpu": bu.device_name(torch.device("cpu")), "isa_flags": bu.cpu_isa_flags(), "torch": torch.__version__, **bu.git_info()}
    print(f"{env['cpu']} ({' '.join(env['isa_flags'])}), torch {env['torch']}, one thread")
    print(f"{'dtype':<9}{'kernel set':<13}{'M x N x K':<16}{'ours GFLOP/s':>13}{'brgemm GFLOP/s':>16}{'ours / brgemm':>15}")
    for r in rows:
        shape = f"{r['m']}x{r['n']}x{r['k']}"
        print(f"{r['dtype']:<9}{r['isa']:<13}{shape:<16}{r['ours_gflops']:>13.1f}{r['brgemm_gflops']:>16.1f}"
              f"{r['ours_gflops'] / r['brgemm_gflops']:>15.2f}")
    if args.json:
        bu.write_json(args.json, {"environment": env, "results": rows})


def _build_dir():
    path = os.path.join(REPO, "build", "microkernels")
    os.makedirs(path, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
