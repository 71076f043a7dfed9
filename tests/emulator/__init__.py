"""The package's CUDA kernels and GEMM planning, compiled as C++ and run on the CPU.

`load()` builds (once; ninja rebuilds what changed) an extension of csrc/cuda's gemm_*.cu kernel
units, conv_gemm.cpp and conv_args.cpp, with this folder's cuda/hardware.cuh standing in for the
real one: PTX instructions and kernel launches carried out by runtime.cpp. What it checks that a
CPU test otherwise cannot: tile indexing, the cp.async pipeline, ldmatrix/mma fragment layouts,
split-K and the epilogues, against float64 references, on every CI run; and, with counting on,
what each launch's memory instructions would cost (global sectors, shared-memory wavefronts: a
model of the memory pipeline, runtime.h). What it cannot: speed, registers, and memory-model or
bounds errors that only a GPU (and compute-sanitizer) shows.
"""

import functools
import importlib.util
import os
import pathlib
import subprocess

import torch.utils.cpp_extension

# The emulated GPUs (devices() of the module): an H100, an sm_86 with 99 KB of shared memory a block
# (the large tile does not fit for 4-byte types), and a 4-SM GPU on which small problems get large tiles.
H100, SM86, FOUR_SMS = 0, 1, 2

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_DIR = REPO / "build" / "emulator"


class ToolkitNotFound(RuntimeError):
    """No CUDA toolkit headers to compile the emulator against."""


def _find_cuda_home():
    spec = importlib.util.spec_from_file_location("cuda_toolkit", REPO / "tools" / "cuda_toolkit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_cuda_home()


def cuda_include_dir():
    """The toolkit's include folder (cuda_runtime.h, cuda_bf16.h, ...), or None."""
    home = _find_cuda_home()
    if home and (pathlib.Path(home) / "include" / "cuda_runtime.h").exists():
        return str(pathlib.Path(home) / "include")
    return None


def load(verbose=False):
    """The built emulator module (conv_forward, conv_backward_input, conv_backward_weight, ...)."""
    include = cuda_include_dir()
    if include is None:
        raise ToolkitNotFound("the CUDA emulator needs the CUDA toolkit's headers: set CUDA_HOME or put nvcc on PATH")
    # One small C++ file per kernel unit (each #includes its .cu) keeps the heavy templates in
    # parallel compile jobs, as in the real build.
    sources_dir = BUILD_DIR / "sources"
    sources_dir.mkdir(parents=True, exist_ok=True)
    units = []
    for cu in sorted((REPO / "csrc" / "cuda").glob("gemm_*.cu")):
        unit = sources_dir / (cu.stem + ".cpp")
        text = f'#include "cuda/{cu.name}"\n'
        if not unit.exists() or unit.read_text() != text:
            unit.write_text(text)
        units.append(str(unit))
    sources = [str(HERE / "runtime.cpp"), str(HERE / "guarded_allocator.cpp"), str(HERE / "bindings.cpp"), str(REPO / "csrc" / "conv_args.cpp"),
               str(REPO / "csrc" / "autotune.cpp"),
               str(REPO / "csrc" / "cuda" / "conv_gemm.cpp"), str(REPO / "csrc" / "cuda" / "plan.cpp"),
               str(REPO / "csrc" / "cuda" / "operand_layout.cpp"), str(REPO / "csrc" / "cuda" / "gemm_autotune.cpp")] + units
    os.environ.setdefault("MAX_JOBS", "2")
    return torch.utils.cpp_extension.load(
        name="pointwise_emulator",
        sources=sources,
        # This folder first: its cuda/hardware.cuh replaces csrc/cuda/hardware.cuh.
        extra_include_paths=[str(HERE), str(REPO / "csrc"), include],
        # C++20 named: the runtime uses it (defaulted ==, std::popcount), and torch 2.11's
        # cpp_extension defaults to C++17 where 2.14's gives C++20.
        extra_cflags=["-O1", "-fvisibility=hidden", "-std=c++20"],
        build_directory=str(BUILD_DIR),
        verbose=verbose,
    )


@functools.cache
def _symbols(library):
    """Address -> mangled name of every function the library defines (its symbol table: the
    emulator's kernels are hidden, so dladdr cannot name them)."""
    out = subprocess.run(["nm", "--defined-only", library], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            symbols[int(parts[0], 16)] = parts[2]
    return symbols


def kernel_name(module, launch):
    """The mangled name of a launch's kernel (a dict of module.launch_counters()): the same name
    nvcc gives the kernel in the real build, so it finds the kernel's registers in cuobjdump's report."""
    return _symbols(module.__file__).get(launch["kernel"])


def sector_efficiency(counts):
    """Bytes the lanes asked for over the bytes of the sectors they touched (1.0: every byte of
    every sector used). None where nothing was accessed."""
    return counts["bytes"] / (32 * counts["sectors"]) if counts["sectors"] else None


def excess_wavefronts(counts):
    """Shared-memory wavefronts beyond one a phase (bank conflicts), over the ideal: 0.0 is
    conflict-free, 1.0 twice the ideal. None where nothing was accessed."""
    ideal = counts["ideal_wavefronts"]
    return (counts["wavefronts"] - ideal) / ideal if ideal else None

