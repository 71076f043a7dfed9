"""What every bench script shares: dtype and precision flags, the environment record, file names, a progress bar.

Timing is not here: every number comes from pointwise_cuda.timing.median_ms (L2 flushed on CUDA, medians).
"""

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from typing import Iterable, Optional

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

# --dtype name -> (tensor dtype, TF32 allowed). "tf32" is float32 tensors with TF32 math on both sides.
DTYPES = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def pin_precision(dtype_name: str) -> dict:
    """Sets the two TF32 flags explicitly (F.conv2d, torch.matmul and our op all read them) and returns them."""
    _, tf32 = DTYPES[dtype_name]
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return {
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


# glibc's mallopt parameters (malloc.h) and the values pin_allocator sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_PINNED_MALLOPT = {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 1 << 30}


def pin_allocator() -> Optional[dict]:
    """Fixes glibc malloc's thresholds for this process, so that host memory stays mapped between calls.

    By default glibc adapts them as blocks are freed: until it has, every call of a layer whose buffers
    are large gets them from the kernel afresh (mmap), and pays a page fault and the zeroing of each
    page. Measured on an AVX2 EPYC, 2 threads, an NCHW 16 -> 96 layer at 112x112, batch 2: 20 timed
    calls of F.conv2d early in a process took 8.2 ms and 5064 page faults each, 20 later ones 0.93 ms
    and none; with the thresholds fixed, the early ones took 1.1 ms and none. Which method paid that
    depended on where it fell in the run. Returns the values set, or None where the C library is not
    glibc (nothing is changed)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    libc = ctypes.CDLL(None)
    params = {"M_MMAP_THRESHOLD": _M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD}
    for name, value in _PINNED_MALLOPT.items():
        if libc.mallopt(params[name], value) != 1:
            raise RuntimeError(f"mallopt({name}, {value}) failed")
    return dict(_PINNED_MALLOPT)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpuinfo_field(name: str) -> Optional[str]:
    """The first value of a field of /proc/cpuinfo ('model name', 'cpu family', ...), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_generation() -> Optional[str]:
    """'family 23, model 49': the x86 CPU's family and model numbers. Virtual machines often name
    their CPU only 'AMD EPYC', which covers generations with different caches and vector units
    (Zen 2 is family 23, Zen 3 and Zen 4 family 25 with different models): the numbers tell them apart."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"family {family}, model {model}" if family is not None and model is not None else None


# The cpuinfo flags that decide which CPU kernels run, ours (cpu/isa.h) and oneDNN's, recorded with
# every CPU result so that results of different CPUs never mix.
CPU_ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
                 "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16", "amx_int8")


def cpu_isa_flags() -> list:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_ISA_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def cpu_isa_tier(flags) -> str:
    """The most capable tier of CPU vector ISA the flags name: amx, avx512-bf16, avx512, avx2, baseline."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "baseline"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name with its family and model numbers where it has them
    ('AMD EPYC (family 23, model 49)')."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    generation = cpu_generation()
    return f"{cpu_name()} ({generation})" if generation else cpu_name()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: torch.device) -> str:
    """Folder and file-name tag for a device: the CPU's name, family, model and ISA tier
    ('cpu-amd-epyc-family-23-model-49-avx2'), or the GPU's name ('nvidia-h100-80gb-hbm3')."""
    if device.type != "cuda":
        return f"cpu-{_slug(device_name(device))}-{cpu_isa_tier(cpu_isa_flags())}"
    return _slug(torch.cuda.get_device_name(device))


def git_info() -> dict:
    """The commit these numbers came from, and whether the work tree differed from it (results excluded).

    A copy of the tree without its .git (what reaches a GPU machine) cannot tell: there
    $POINTWISE_COMMIT names the commit the copy was made from, and `dirty` stays unknown (None).
    """

    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--", ".", ":!bench/results", ":!bench/out")
    except (OSError, subprocess.SubprocessError):
        head = status = None
    if head is None or head.returncode != 0:
        return {"commit": os.environ.get("POINTWISE_COMMIT") or None, "dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty}


def environment(device: torch.device) -> dict:
    """Device, versions, build and commit: recorded in every JSON the bench writes."""
    import pointwise_cuda

    env = {
        "device": device_name(device),
        "device_type": device.type,
        "device_slug": device_slug(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "cpu_generation": cpu_generation() if device.type != "cuda" else None,
        "pointwise_cuda": pointwise_cuda.__version__,
        "build_info": _jsonable(pointwise_cuda.build_info()),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        **git_info(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["sm"] = f"{props.major}.{props.minor}"
        env["sm_count"] = props.multi_processor_count
        env["memory_gib"] = round(props.total_memory / 2**30, 1)
        env["driver"] = _nvidia_smi_driver()
    else:
        env["mkldnn"] = torch.backends.mkldnn.is_available()
        env["cpu_isa_flags"] = cpu_isa_flags()
        env["cpu_isa_tier"] = cpu_isa_tier(env["cpu_isa_flags"])
        # What decides how often the allocator hands memory back to the kernel (and so the page faults
        # an eager model pays per call): glibc's tunables, or another malloc preloaded.
        env["allocator_env"] = {k: v for k, v in sorted(os.environ.items())
                                if k.startswith(("MALLOC_", "GLIBC_TUNABLES")) or k == "LD_PRELOAD"}
    return env


def prepare_device(device_arg: str, threads: Optional[int]) -> torch.device:
    """The device a run measures (CUDA with an explicit index, made current), after setting the CPU thread count."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("CUDA is not available here: run with --device cpu")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def output_stem(out: Optional[str], kind: str, device: torch.device, dtype: str, layout: str,
                pass_: Optional[str], batch: int) -> str:
    """The path, without extension, of a run's JSON/markdown/PNGs: under --out, else bench/results/<device>/."""
    out_dir = out or os.path.join(RESULTS_DIR, device_slug(device))
    os.makedirs(out_dir, exist_ok=True)
    return os.path.join(out_dir, stem(kind, device, dtype, layout, pass_, batch))


# The longest one call of the ceiling's matmul may take: beyond it the product is made smaller.
MATMUL_CALL_BUDGET_S = 3.0


def affordable_matmul_n(device, dtype, n: int) -> int:
    """n, halved (down to 256) while one n x n matmul would take longer than MATMUL_CALL_BUDGET_S, as
    predicted from one product of a quarter the size (64 times fewer FLOPs).

    A CPU without bf16 or fp16 instructions runs PyTorch's 16-bit matmul on a slow path: bf16 at
    0.33 GFLOP/s on an AVX2 EPYC, 52 s a call at n = 2048 and 23 minutes of a run for the ceiling
    alone. There n becomes 1024, where one call ran at 0.95 GFLOP/s: that slow path is faster on
    smaller products, so the smaller ceiling is still a best case. fp32 keeps n = 2048 (its probe
    predicted 0.6 s a call). CUDA is not probed."""
    if device.type == "cuda":
        return n
    while n > 256:
        probe = torch.randn(n // 4, n // 4, device=device).to(dtype)
        start = time.perf_counter()
        probe @ probe
        if (time.perf_counter() - start) * 64 <= MATMUL_CALL_BUDGET_S:
            break
        n //= 2
    return n


def measure_ceilings(device, dtype, copy_bytes, matmul_n, warmup, repeat, rounds=1) -> dict:
    """Copy bandwidth (bytes read + written per second) and matmul throughput (FLOP/s) of this device, in this dtype.

    A ceiling is a best case: with several rounds, the fastest round's median counts."""
    from pointwise_cuda.timing import median_ms

    src = torch.rand(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    copy_ms = min(median_ms(lambda: dst.copy_(src), device, warmup=warmup, repeat=repeat) for _ in range(rounds))
    del src, dst
    return {
        "copy_bytes": copy_bytes,
        "copy_ms": copy_ms,
        "rounds": rounds,
        "copy_bandwidth_bytes_per_s": 2 * copy_bytes / (copy_ms * 1e-3),
        **matmul_ceiling(device, dtype, matmul_n, warmup, repeat, rounds),
    }


def matmul_ceiling(device, dtype, n, warmup, repeat, rounds=1) -> dict:
    """torch.matmul's throughput (FLOP/s) on an n x n product in this dtype (n made smaller where one
    call would be too slow): the fastest round's median."""
    from pointwise_cuda.timing import median_ms

    n = affordable_matmul_n(device, dtype, n)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm_ms = min(median_ms(lambda: a @ b, device, warmup=warmup, repeat=repeat) for _ in range(rounds))
    return {"matmul_n": n, "matmul_ms": mm_ms, "matmul_flop_per_s": 2 * n**3 / (mm_ms * 1e-3)}


def loadavg() -> Optional[float]:
    """This machine's 1-minute load average: a busy shared CPU slows the threaded CPU baselines most."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _nvidia_smi_driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def stem(kind: str, device: torch.device, dtype: str, layout: str, pass_: Optional[str], batch: int) -> str:
    """File name stem encoding what was measured: layers-nvidia-h100-80gb-hbm3-bf16-channels_last-forward-b32,
    layers-cpu-amd-epyc-avx512-bf16-t2-fp32-nchw-forward-b2 (CPU runs add their thread count)."""
    device_tag = device_slug(device) + ("" if device.type == "cuda" else f"-t{torch.get_num_threads()}")
    parts = [kind, device_tag, dtype, layout] + ([pass_] if pass_ else []) + [f"b{batch}"]
    return "-".join(parts)


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(_jsonable(data), f, indent=1)
        f.write("\n")


def geomean(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def fmt(value: Optional[float], spec: str = ".3f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


class Progress:
    """tqdm when it is installed, a plain counter on stderr otherwise."""

    def __init__(self, total: int, desc: str, unit: str = "layer"):
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        except ImportError:
            self._bar = None
        self.total, self.desc, self.done = total, desc, 0

    def update(self, label: str = "") -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)
        else:
            print(f"{self.desc}: {self.done}/{self.total} {label}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
