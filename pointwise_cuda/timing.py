"""Median timing of a callable, shared by the main job (`python -m pointwise_cuda`) and bench/.

On CUDA each call is timed with events, after writing a buffer larger than the L2 cache so no
call finds its inputs already cached; on CPU with a monotonic clock. Medians, after warm-up.
"""

import statistics
import time
from typing import Callable

import torch

_L2_FLUSH_BYTES = 256 * 1024 * 1024  # several times the L2 of any current GPU (H100: 50 MB)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int = 5, repeat: int = 30) -> float:
    """Median wall time of fn() in milliseconds on `device`."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
