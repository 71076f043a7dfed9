"""Host time per call: what a call of our op costs the CPU before any kernel runs, against F.conv2d.

    python bench/overhead.py --device cpu --threads 1
    python bench/overhead.py --device cuda

A layer too small to matter (8 -> 8 channels, one 1x1 image) is called back to back, forward
under no_grad and forward + backward; each figure is the median over rounds of (wall time of
`--calls` calls) / calls, synchronised once per round. That is the rate at which a model of small
layers can issue work: on CUDA the kernels take a few microseconds and the host is the bottleneck,
so this measures the Python wrapper, the dispatcher, the argument checks and the launch.
(median_ms is the wrong timer here: it times one call at a time, after flushing the L2.)
Writes <out>/overhead-<device>.{json,md}.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402

import pointwise_cuda as pw  # noqa: E402


def per_call_us(fn, device, calls, rounds):
    for _ in range(calls // 10 + 1):
        fn()
    samples = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=bu.default_device())
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=None, help="folder for the JSON/markdown (default bench/results/<device>/)")
    args = parser.parse_args()
    device = bu.prepare_device(args.device, args.threads)

    x = torch.randn(1, 8, 1, 1, device=device)
    w = torch.randn(8, 8, 1, 1, device=device)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

    def no_grad(f):
        def call():
            with torch.no_grad():
                f(x, w)
        return call

    def train(f):
        return lambda: f(xg, wg).sum().backward()

    cases = {
        "forward (no_grad)": (no_grad(pw.pointwise_conv2d), no_grad(F.conv2d)),
        "forward + backward": (train(pw.pointwise_conv2d), train(F.conv2d)),
    }
    rows = []
    for name, (ours, theirs) in cases.items():
        ours_us = per_call_us(ours, device, args.calls, args.rounds)
        theirs_us = per_call_us(theirs, device, args.calls, args.rounds)
        rows.append({"case": name, "ours_us": ours_us, "conv2d_us": theirs_us, "ratio": ours_us / theirs_us})
        print(f"{name:20s} ours {ours_us:7.1f} us   F.conv2d {theirs_us:7.1f} us   {ours_us / theirs_us:.2f}x", flush=True)

    stem = os.path.join(args.out or os.path.join(bu.RESULTS_DIR, bu.device_slug(device)),
                        f"overhead-{bu.device_slug(device)}" + ("" if device.type == "cuda" else f"-t{torch.get_num_threads()}"))
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    env = bu.environment(device)
    bu.write_json(stem + ".json", {"kind": "overhead", "environment": env, "calls": args.calls,
                                   "rounds": args.rounds, "rows": rows})
    with open(stem + ".md", "w") as f:
        f.write(f"Host time per call, 8 -> 8 channels at 1x1, batch 1 — {env['device']}, torch {env['torch']}, "
                f"commit {env['commit']}{' (dirty)' if env['dirty'] else ''}\n\n")
        f.write("| call | ours (us) | F.conv2d (us) | ours / F.conv2d |\n|---|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['case']} | {r['ours_us']:.1f} | {r['conv2d_us']:.1f} | {r['ratio']:.2f} |\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
