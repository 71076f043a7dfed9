"""The PEP 517 build backend of `pip install .`: setuptools', with torch as a build requirement
pinned to the torch of the environment the package is being installed into.

The extension has to be compiled against the very torch it will be imported with (same release,
same C++ ABI, same CUDA). pip builds in an isolated environment that has only what the build asks
for, and a plain "torch" there would be the newest release the index has, not the user's. So the
build asks for the release installed in the target environment, which pip then puts into the
isolated one (from its cache or the index), or, where the target has no torch yet, for any release
the package supports (pip installs the same newest release into both). A torch that is not a plain
index release (a local build, or one from PyTorch's own index such as 2.14.1+cu128) could not be
fetched again: the build stops at once and says to build against it with --no-build-isolation.
pointwise_cuda/__init__.py refuses to load an extension built against another torch than the one
imported, so a mismatch that gets through anyway is a clear error rather than a crash.
"""

import importlib.util
import os
import subprocess
import sys

from setuptools.build_meta import *  # noqa: F401,F403  (every hook; the three below add torch)

SUPPORTED_TORCH = "torch>=2.11"

REBUILD_HINT = "pip install --no-build-isolation ."

# Reads the target environment's torch version without importing torch.
_QUERY = "import importlib.metadata as m\ntry:\n    print(m.version('torch'))\nexcept m.PackageNotFoundError:\n    pass\n"


def installed_torch_version():
    """The torch release installed where the package is being installed, or None.

    pip runs this hook with the target environment's interpreter, its isolated environment put in
    front through PYTHONPATH (a sitecustomize that hides the target's site-packages): the same
    interpreter without that variable sees the target environment as it is.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    result = subprocess.run([sys.executable, "-c", _QUERY], env=env, capture_output=True, text=True, timeout=120)
    version = result.stdout.strip()
    return version or None


def torch_requirements():
    """What the build needs beyond pyproject.toml's requires: the torch to compile against."""
    if importlib.util.find_spec("torch") is not None:
        return []  # a build that already sees a torch (--no-build-isolation) compiles against that one
    version = installed_torch_version()
    if version is None:
        return [SUPPORTED_TORCH]
    if "+" in version:
        raise SystemExit(
            f"pointwise_cuda: your torch {version} is a build pip cannot fetch again for an isolated build, "
            f"so build against it instead: {REBUILD_HINT}"
        )
    return [f"torch=={version}"]


# Not setuptools' own hooks: they run setup.py, which imports torch, to look for setup_requires.
def get_requires_for_build_wheel(config_settings=None):
    return torch_requirements()


def get_requires_for_build_editable(config_settings=None):
    return torch_requirements()


def get_requires_for_build_sdist(config_settings=None):
    return torch_requirements()
