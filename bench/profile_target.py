"""The program the profilers run: one layer of the suite, a few warm-up calls, then the profiled calls.

    python bench/profile_target.py --layer r50:256>64@56 --dtype bf16 --layout channels_last --iters 5
    python bench/profile_target.py --shape 512,10,190,190 --impl conv        # any shape, any method

The profiled calls sit between torch.cuda.profiler.start() and stop() (cudaProfilerStart/Stop: the
capture range that `ncu --profile-from-start off` and `nsys --capture-range=cudaProfilerApi` obey),
inside an NVTX range, one NVTX range per call. Warm-up (module load, autotuning, allocator) stays outside.
bench/profile_ncu.sh and bench/profile_nsys.sh run this; it is also usable on its own.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402
from layers import Layer, layer_name  # noqa: E402
from run import PASSES, make_methods, timed_call  # noqa: E402

DEFAULT_LAYER = "r50:256>64@56"
IMPLS = ("ours", "conv", "matmul", "fused_ours", "fused_torch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--layer", default=None, help=f"a layer name from `python bench/layers.py` (default {DEFAULT_LAYER})")
    g.add_argument("--shape", default=None, help="C_in,C_out,H,W[,stride[,groups]] instead of a suite layer")
    p.add_argument("--impl", default="ours", help=f"comma-separated, from {', '.join(IMPLS)} (default: ours)")
    p.add_argument("--device", default=bu.default_device())
    p.add_argument("--dtype", default="fp32", choices=list(bu.DTYPES))
    p.add_argument("--layout", default="nchw", choices=list(bu.LAYOUTS))
    p.add_argument("--pass", dest="pass_", default="forward", choices=PASSES)
    p.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 1 on CPU")
    p.add_argument("--warmup", type=int, default=5, help="calls before the capture range")
    p.add_argument("--iters", type=int, default=5, help="calls inside the capture range")
    args = p.parse_args(argv)
    args.batch = args.batch or (32 if torch.device(args.device).type == "cuda" else 1)
    args.impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    bad = [i for i in args.impls if i not in IMPLS]
    if bad:
        p.error(f"unknown --impl {', '.join(bad)}; choose from {', '.join(IMPLS)}")
    return args


def find_layer(args) -> Layer:
    if args.shape:
        v = [int(s) for s in args.shape.split(",")]
        if len(v) not in (4, 5, 6):
            raise SystemExit("--shape needs C_in,C_out,H,W[,stride[,groups]]")
        c_in, c_out, h, w = v[:4]
        stride, groups = (v[4] if len(v) > 4 else 1), (v[5] if len(v) > 5 else 1)
        return Layer(layer_name("shape", c_in, c_out, h, w, stride, groups), c_in, c_out, h, w, stride, groups)
    from layers import suite

    name = args.layer or DEFAULT_LAYER
    for layer in suite():
        if layer.name == name:
            return layer
    raise SystemExit(f"no layer named {name!r}: see `python bench/layers.py`")


def prepare(args):
    """(layer, device, {impl: callable}) with the precision flags pinned and the inputs made."""
    device = torch.device(args.device)
    dtype, _ = bu.DTYPES[args.dtype]
    bu.pin_precision(args.dtype)
    torch.backends.cudnn.benchmark = False
    layer = find_layer(args)
    methods, _ = make_methods(layer, args.batch, dtype, bu.LAYOUTS[args.layout], device, args.pass_)
    calls = {impl: timed_call(*methods[impl], args.pass_) for impl in args.impls}
    return layer, device, calls


def main(argv=None) -> int:
    args = parse_args(argv)
    layer, device, calls = prepare(args)
    cuda = device.type == "cuda"
    for _ in range(args.warmup):
        for call in calls.values():
            call()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.profiler.start()
    nvtx = torch.cuda.nvtx if cuda else None
    tag = f"{layer.name} {args.pass_} {args.dtype} {args.layout} b{args.batch}"
    if nvtx:
        nvtx.range_push(f"timed: {tag}")
    for i in range(args.iters):
        for impl, call in calls.items():
            if nvtx:
                nvtx.range_push(f"{impl} #{i}")
            call()
            if nvtx:
                nvtx.range_pop()
    if nvtx:
        nvtx.range_pop()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.profiler.stop()
    print(f"profiled {args.iters} calls each of {', '.join(calls)} on {tag} "
          f"({layer.flops(args.batch) / 1e9:.2f} GFLOP forward per call) after {args.warmup} warm-up calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
