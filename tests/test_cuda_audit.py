"""CI guards on the built CUDA kernels and the plans the suite's layers get (tools/cuda_audit.py):
compiler output and launch configurations, a model of the GPU, not a measurement.

They fail when a kernel spills, when it takes more registers than its tile allows (the launch
bound of the 256-thread tiles; today's largest count for the others, so that growth is a decision
rather than an accident), when a kernel's code outgrows today's largest, or when a memory-bound
layer's plan leaves more than half of an H100's SMs idle.
"""

import importlib.util
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _audit_module():
    spec = importlib.util.spec_from_file_location("cuda_audit", REPO / "tools" / "cuda_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


audit = _audit_module()

# Registers a thread, at most, by threads a block: 256-thread tiles are launch-bounded to two blocks
# an SM (gemm_mainloop.cuh, kMinBlocks); the others have no bound, and these are today's largest
# counts, rounded up to the allocation unit of 8 (ptxas, sm_90, CUDA 13.0).
MAX_REGISTERS = {256: 128, 128: 96, 64: 88}
# Today's largest kernel (the 16-bit 128 x 128 tile of the grad-weight, reducing over pixels: 111.75
# KiB), rounded up to 8 KiB.
MAX_CODE_BYTES = 112 * 1024
# A memory-bound layer (by the H100 run's roofline) above the latency floor of bench/run.py.
LATENCY_FLOOR_MS = 0.005
H100_RESULTS = REPO / "bench" / "results" / "nvidia-h100-80gb-hbm3" / "layers-nvidia-h100-80gb-hbm3-bf16-channels_last-forward-b32.json"


@pytest.fixture(scope="module")
def resources():
    if audit.cuobjdump() is None:
        pytest.skip("no cuobjdump (pip install -r requirements-dev.txt installs nvidia-cuda-cuobjdump)")
    try:
        library = audit.extension_library()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    found = audit.kernel_resources(library)
    if not found:
        pytest.skip("the extension has no sm_90 kernels (built without CUDA, or for other architectures)")
    return found, audit.demangle(list(found))


def _threads(demangled):
    m = re.search(r"TileConfig<\d+, \d+, \d+, (\d+), (\d+), \d+>", demangled)
    return 32 * int(m.group(1)) * int(m.group(2)) if m else None


def test_no_kernel_spills(resources):
    kernels, names = resources
    spilled = [f"{audit.short_name(names[k])}: stack {r['stack']}, local {r['local']}"
               for k, r in kernels.items() if r["stack"] or r["local"]]
    assert not spilled, "\n".join(spilled)


def test_registers_within_their_bound(resources):
    kernels, names = resources
    over = []
    for k, r in kernels.items():
        threads = _threads(names[k])
        if threads is not None and r["registers"] > MAX_REGISTERS[threads]:
            over.append(f"{audit.short_name(names[k])}: {r['registers']} registers, bound {MAX_REGISTERS[threads]}")
    assert not over, "\n".join(over)


def test_code_size(resources):
    kernels, names = resources
    assert all("code_bytes" in r for r in kernels.values()), "a kernel without its .text section"
    big = [f"{audit.short_name(names[k])}: {r['code_bytes']} bytes" for k, r in kernels.items()
           if r["code_bytes"] > MAX_CODE_BYTES]
    assert not big, "\n".join(big)


def test_occupancy_rules():
    """The calculator on known cases: sm_90, 64K registers, 228 KB, 2048 threads, 32 blocks."""
    h100 = audit.GPUS[0]
    assert audit.blocks_per_sm(128, 256, 0, h100) == (2, "registers")
    assert audit.blocks_per_sm(24, 128, 0, h100) == (16, "threads")
    assert audit.blocks_per_sm(16, 32, 0, h100) == (32, "blocks")
    assert audit.blocks_per_sm(32, 128, 80 * 1024, h100) == (2, "shared memory")  # 3 x (80 + 1 reserved) KB > 228


def test_memory_bound_layers_fill_the_sms(resources):
    import json
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    import layers as suite_layers

    measured = {r["layer"]["name"]: r for r in json.loads(H100_RESULTS.read_text())["layers"]}
    memory_bound = [layer for layer in suite_layers.suite() if layer.name in measured
                    and measured[layer.name]["bound"] == "memory"
                    and measured[layer.name]["roofline_ms"] >= LATENCY_FLOOR_MS]
    assert len(memory_bound) >= 20, "the suite lost its memory-bound layers"
    kernels, names = resources
    h100 = audit.GPUS[0]
    idle = []
    for p in audit.layer_plans(memory_bound):
        chosen = next(c for c in p["candidates"] if c["plan"] == p["heuristic"])
        gemm = audit.audit_launch(chosen["launches"][0], kernels, names, p["k"], p["heuristic"], h100)
        if gemm["blocks"] < h100.sms / 2:
            idle.append(f"{p['layer']} {p['dtype']} {p['layout']} {p['op']}: {p['heuristic']}, {gemm['blocks']} blocks")
    assert not idle, "\n".join(idle)
