"""pointwise_cuda: a hand-written 1x1 (pointwise) convolution for PyTorch, on CUDA and CPU.

    import pointwise_cuda as pw
    y = pw.pointwise_conv2d(x, weight, bias, stride=1, padding=0, activation="relu", residual=r)
    layer = pw.PointwiseConv2d(512, 10)
    model = pw.convert(model)          # every 1x1 nn.Conv2d -> PointwiseConv2d

The ops live under torch.ops.pointwise_cuda (conv_forward, conv_backward_input,
conv_backward_weight); they work with autograd (to any order), torch.compile and torch.export.
"""

import torch  # noqa: F401  (first: _C links against torch's shared libraries)

from . import _C  # noqa: F401  (loads the library: registers the ops and their CPU/CUDA kernels)
from . import _ops  # noqa: F401  (registers the fake kernels of those ops)
from .functional import ACTIVATIONS, pointwise_conv2d
from .modules import PointwiseConv2d, convert

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build holds: backends, CUDA architectures, and the torch/CUDA versions it was built with."""
    return dict(_C.build_info())


__all__ = ["ACTIVATIONS", "PointwiseConv2d", "build_info", "convert", "pointwise_conv2d"]
