"""torch.profiler over one layer: a Chrome trace and the kernel table. Works on CPU and CUDA.

    python bench/profile_torch.py --layer r50:256>64@56 --impl ours,conv --dtype bf16 --layout channels_last
    python bench/profile_torch.py --device cpu --batch 1 --impl ours,conv

Takes the same options as bench/profile_target.py. Each method's calls are labelled with
record_function(<impl>), so the table and the trace show ours beside F.conv2d. Writes
<out>/torch-<device>-<layer>-<dtype>-<layout>-<pass>.json (open in chrome://tracing or
https://ui.perfetto.dev) and prints key_averages() sorted by self device time (self CPU time on CPU).
"""

import argparse
import os
import re
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402
import profile_target  # noqa: E402


def main(argv=None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--out", default=os.path.join(bu.BENCH_DIR, "out", "profile"))
    extra.add_argument("--rows", type=int, default=25, help="rows of the printed table")
    extra.add_argument("--threads", type=int, default=None)
    ours, rest = extra.parse_known_args(argv)
    args = profile_target.parse_args(rest)
    if ours.threads:
        torch.set_num_threads(ours.threads)
    layer, device, calls = profile_target.prepare(args)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):  # outside the profiler: module load, cuDNN heuristics, allocator
        for call in calls.values():
            call()
    sync()
    steps = args.iters
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            for impl, call in calls.items():
                with record_function(impl):
                    call()
            sync()

    os.makedirs(ours.out, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", layer.name).strip("_")
    trace = os.path.join(ours.out, f"torch-{bu.device_slug(device)}-{slug}-{args.dtype}-{args.layout}-{args.pass_}.json")
    prof.export_chrome_trace(trace)
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"{layer.name}, {args.pass_}, {args.dtype}, {args.layout}, batch {args.batch}, "
          f"{steps} profiled steps of {', '.join(calls)} on {bu.device_name(device)}")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=ours.rows))
    print(f"Chrome trace: {trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
