"""pointwise_cuda: a hand-written 1x1 (pointwise) convolution for PyTorch, on CUDA and CPU.

    import pointwise_cuda as pw
    y = pw.pointwise_conv2d(x, weight, bias, stride=1, padding=0, activation="relu", residual=r)
    layer = pw.PointwiseConv2d(512, 10)
    model = pw.convert(model)          # every 1x1 nn.Conv2d -> PointwiseConv2d

The ops live under torch.ops.pointwise_cuda (conv_forward, conv_backward_input,
conv_backward_weight); they work with autograd (to any order), torch.compile and torch.export.
"""

import torch  # noqa: F401  (first: _C links against torch's shared libraries)

from . import _build

_build.check()  # the extension below must have been built against this very torch

from . import _C  # noqa: F401,E402  (loads the library: the ops, their CPU/CUDA/Meta kernels, autograd)
from .functional import ACTIVATIONS, pointwise_conv2d
from .modules import PointwiseConv2d, convert

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build holds: backends, CUDA architectures, and the torch/CUDA versions it was built with."""
    return dict(_C.build_info())


def set_autotune(enabled: bool) -> None:
    """Autotune the CUDA kernels, as torch.backends.cudnn.benchmark does cuDNN's (off by default).

    When on, the first call of each distinct GEMM (op, dtype, sizes, layout, alignment, epilogue,
    GPU) times every candidate plan -- tile shape and split of the reduction -- on the GPU, waiting
    for it once, and keeps the fastest; every later call of that problem in this process runs it.
    Each plan is deterministic, so a problem gives the same bits on every call, but two processes may
    keep different plans and round differently. A call made while its stream is being captured into
    a CUDA graph runs the plan already kept, or the built-in heuristic's if the problem was never
    tuned (warm up before capturing). No effect on the CPU kernels."""
    if not isinstance(enabled, bool):
        raise TypeError(f"set_autotune: enabled must be a bool, got {type(enabled).__name__}")
    _C.set_autotune(enabled)


def autotune_enabled() -> bool:
    """Whether set_autotune(True) is in effect."""
    return _C.autotune_enabled()


def autotune_cache() -> list:
    """Every problem tuned so far, in order: {"problem": its description, "timings_ms": {plan: best
    of three runs}, "chosen": the plan kept}. Plans read "<tile> x<splits>"."""
    return [{"problem": problem, "timings_ms": dict(timings), "chosen": chosen}
            for problem, timings, chosen in _C.autotune_entries()]


def clear_autotune_cache() -> None:
    """Forgets every tuned problem: the next call of each is tuned again (if autotuning is on)."""
    _C.clear_autotune_cache()


__all__ = [
    "ACTIVATIONS",
    "PointwiseConv2d",
    "autotune_cache",
    "autotune_enabled",
    "build_info",
    "clear_autotune_cache",
    "convert",
    "pointwise_conv2d",
    "set_autotune",
]
