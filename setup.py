"""Builds pointwise_cuda._C: CUDA + CPU kernels when torch has CUDA and a toolkit is found, CPU only otherwise.

Environment switches:
  POINTWISE_CUDA_FORCE_CPU=1   build the CPU kernels only, even where CUDA could be built.
  CUDA_HOME=/path/to/cuda      the CUDA toolkit to build with (found from nvcc otherwise).
  TORCH_CUDA_ARCH_LIST="9.0a"  the GPU architectures to compile for (default below).
  POINTWISE_CUDA_NO_AVX2=1     leave out the x86 vector CPU kernels, AVX2, AVX-512 and AMX (portable kernels only).
  MAX_JOBS=N                   parallel compile jobs (ninja).
"""

import glob
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import find_packages, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from cuda_toolkit import find_cuda_home  # noqa: E402

# Covers Ampere and Hopper with machine code, and newer GPUs through the PTX of the newest.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"


cuda_home = None if os.environ.get("POINTWISE_CUDA_FORCE_CPU") == "1" else find_cuda_home()
if cuda_home is not None:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
    os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

with_cuda = cuda_home is not None and torch.version.cuda is not None
with_avx2 = os.environ.get("POINTWISE_CUDA_NO_AVX2") != "1"



def compiler_builds_amx():
    """Whether the C++ compiler knows the AMX target and its assembler the tile instructions (GCC 11
    or Clang 12, binutils 2.36, and newer): older toolchains build everything but the AMX kernels."""
    compiler = shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")
    probe = ('__attribute__((target("amx-tile,amx-bf16"))) void f(const void* p, long s) {\n'
             '  asm volatile("ldtilecfg (%0)\\n tileloadd (%0,%1,1), %%tmm4\\n tdpbf16ps %%tmm6, %%tmm5, %%tmm4\\n'
             ' tilerelease" :: "r"(p), "r"(s) : "memory");\n}\n')
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "amx_probe.cpp")
        with open(source, "w") as f:
            f.write(probe)
        try:
            result = subprocess.run(compiler + ["-c", source, "-o", os.path.join(folder, "amx_probe.o")],
                                    capture_output=True)
        except OSError:
            return False
    return result.returncode == 0


sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
define_macros = [("POINTWISE_WITH_X86_KERNELS", "1")] if with_avx2 else []
if with_avx2 and platform.machine() in ("x86_64", "AMD64") and compiler_builds_amx():
    define_macros.append(("POINTWISE_WITH_AMX_KERNELS", "1"))
# No -std here: torch's BuildExtension adds the standard its headers need (C++17 or C++20).
# -fopenmp: at::parallel_for is inline OpenMP code compiled into this extension; without the flag
# it silently runs on one thread (libgomp then resolves to the copy torch ships).
extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}

if with_cuda:
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    define_macros.append(("POINTWISE_WITH_CUDA", "1"))
    extra_compile_args["nvcc"] = ["-O3", "-lineinfo"]
    Extension = CUDAExtension
else:
    Extension = CppExtension

define_macros.append(("POINTWISE_CUDA_ARCH_LIST", '"%s"' % (os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else "")))

# The torch the extension is compiled against, for pointwise_cuda/__init__.py to compare with the
# torch it is imported with: a mismatch there would fail in the dynamic loader or crash.
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "pointwise_cuda", "_built_with.py"), "w") as f:
    f.write(
        '"""Written by setup.py: the torch this build of the extension was compiled against."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n"
        f"SOURCE_DIR = {here!r}\n"
    )

setup(
    name="pointwise_cuda",
    version="0.1.0",
    description="Hand-written CUDA/CPU 1x1 (pointwise) convolution for PyTorch",
    packages=find_packages(include=["pointwise_cuda", "pointwise_cuda.*"]),
    ext_modules=[
        Extension(
            name="pointwise_cuda._C",
            sources=sources,
            include_dirs=[os.path.abspath("csrc")],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
)
