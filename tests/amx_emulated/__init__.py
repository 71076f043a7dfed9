"""The CPU drivers with the AMX kernel set's micro-kernel on emulated tile registers (amx_emulated.cpp).

`load()` builds it (once; ninja rebuilds what changed) from csrc/cpu: what it checks on any x86
machine is the AMX path's indexing, packing, depth tails and partial sums against float64; what it
cannot is the instructions themselves and their speed, which need an AMX CPU (test_cpu_kernels.py's
amx path runs there).
"""

import os
import pathlib

import torch.utils.cpp_extension

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_DIR = REPO / "build" / "amx_emulated"


def load(verbose=False):
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    cpu = REPO / "csrc" / "cpu"
    sources = [HERE / "amx_emulated.cpp", REPO / "tests" / "emulator" / "guarded_allocator.cpp", REPO / "csrc" / "conv_args.cpp", cpu / "isa.cpp", cpu / "avx2_kernels.cpp",
               cpu / "avx512_kernels.cpp", cpu / "avx512_bf16_kernels.cpp", cpu / "amx_kernels.cpp"]
    os.environ.setdefault("MAX_JOBS", "2")
    return torch.utils.cpp_extension.load(
        name="pointwise_amx_emulated",
        sources=[str(s) for s in sources],
        extra_include_paths=[str(REPO / "csrc"), str(REPO / "tests" / "emulator")],
        extra_cflags=["-O1", "-fvisibility=hidden", "-fopenmp", "-DPOINTWISE_WITH_X86_KERNELS=1",
                     "-DPOINTWISE_WITH_AMX_KERNELS=1"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(BUILD_DIR),
        verbose=verbose,
    )
