"""Where the CUDA toolkit is: used by setup.py to build the extension and by the tests' CPU
emulator of the CUDA kernels (tests/emulator), which compiles against the toolkit's headers."""

import os
import re
import shutil
import subprocess


def find_cuda_home():
    """The CUDA toolkit folder: $CUDA_HOME, else the folder that nvcc really runs from.

    torch guesses dirname(dirname(which nvcc)), which is wrong when the nvcc on PATH
    is a wrapper script outside the toolkit; `nvcc --dryrun` prints the real TOP.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    try:
        dryrun = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
    if match is None:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return os.path.realpath(match.group(1).strip())
