"""The classic channel reduction: a 190x190 image with 512 channels squeezed to 10 by a 1x1 conv.

    python -m pointwise_cuda [--device cuda|cpu] [--dtype float32|float16|bfloat16|float64] [--batch N]

Prints the shapes, parameter count and activation memory before and after, checks the result
against F.conv2d (float64 reference), and times both. Exits non-zero if the check fails.
"""

import argparse
import sys

import torch
import torch.nn.functional as F

import pointwise_cuda as pw
from pointwise_cuda.timing import median_ms

# Relative error allowed against a float64 reference, by compute dtype (TF32 is pinned off below).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def mib(t: torch.Tensor) -> str:
    return f"{t.numel() * t.element_size() / 2**20:,.1f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pointwise_cuda", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: 8 on CUDA, 1 on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC input instead of NCHW")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    batch = args.batch if args.batch is not None else (8 if device.type == "cuda" else 1)
    torch.backends.cudnn.allow_tf32 = False  # exact fp32 on both sides
    torch.backends.cuda.matmul.allow_tf32 = False

    torch.manual_seed(0)
    layer = pw.PointwiseConv2d(512, 10, device=device, dtype=dtype)
    x = torch.randn(batch, 512, 190, 190, device=device, dtype=dtype)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = layer(x)
        reference = F.conv2d(x.double(), layer.weight.double(), layer.bias.double())
        baseline = lambda: F.conv2d(x, layer.weight, layer.bias)  # noqa: E731
        ours = lambda: layer(x)  # noqa: E731
        error = ((y.double() - reference).norm() / reference.norm()).item()

        print(f"pointwise_cuda {pw.__version__} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
              f" ({args.dtype}, {'channels_last' if args.channels_last else 'NCHW'})")
        print(f"  input  {tuple(x.shape)}  {mib(x)}")
        print(f"  weight {tuple(layer.weight.shape)} + bias {tuple(layer.bias.shape)}: "
              f"{sum(p.numel() for p in layer.parameters()):,} parameters")
        print(f"  output {tuple(y.shape)}  {mib(y)}  ({x.numel() / y.numel():.1f}x less activation memory)")
        ok = error <= TOLERANCE[dtype] and torch.isfinite(y).all().item()
        print(f"  check against F.conv2d (float64): relative error {error:.2e} "
              f"(limit {TOLERANCE[dtype]:.0e}) {'OK' if ok else 'FAILED'}")

        repeat = 30 if device.type == "cuda" else 10  # a CPU call of this size takes ~50-200 ms
        t_ours, t_base = median_ms(ours, device, repeat=repeat), median_ms(baseline, device, repeat=repeat)
        flops = 2 * x.shape[0] * 190 * 190 * 512 * 10
        print(f"\n  {'kernel':<28}{'median ms':>10}{'GFLOP/s':>10}{'speedup':>9}")
        for name, t in (("F.conv2d", t_base), ("pointwise_cuda", t_ours)):
            print(f"  {name:<28}{t:>10.3f}{flops / t / 1e6:>10.1f}{t_base / t:>8.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
