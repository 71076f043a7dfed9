"""The torch the compiled extension (pointwise_cuda._C) was built against, checked against the torch
being imported before the extension is loaded: built against another release, the extension
would fail in the dynamic loader with an undefined symbol, or crash."""

import torch

try:
    from . import _built_with
except ImportError:  # a source tree whose extension was never built (setup.py writes the module)
    _built_with = None


def describe(version: str, cuda) -> str:
    return f"torch {version} ({f'CUDA {cuda}' if cuda else 'CPU only'})"


def mismatch(built_version: str, built_cuda, running_version: str, running_cuda):
    """Why an extension built against torch `built_version` (CUDA `built_cuda`, or None) cannot load
    into torch `running_version`, or None if it can."""
    if (built_version, built_cuda) == (running_version, running_cuda):
        return None
    return (
        f"pointwise_cuda was built against {describe(built_version, built_cuda)}, but this is "
        f"{describe(running_version, running_cuda)}: its compiled kernels load only into the torch they were "
        f"built with. Rebuild it against this torch: pip install --no-build-isolation --force-reinstall "
    )


def check() -> None:
    """Raises ImportError, naming both torch releases and the command to rebuild, on a mismatch."""
    if _built_with is None:
        raise ImportError(
            "pointwise_cuda's extension is not built here: pip install --no-build-isolation -e . "
            "(from the repository root) builds it against your torch"
        )
    reason = mismatch(_built_with.TORCH_VERSION, _built_with.TORCH_CUDA_VERSION, torch.__version__, torch.version.cuda)
    if reason is not None:
        raise ImportError(reason + _built_with.SOURCE_DIR)
