"""A static audit of the built CUDA kernels, and the plans the suite's layers get: what Nsight
Compute's launch statistics and occupancy sections would say, computed without a GPU.

  kernels   every kernel of pointwise_cuda/_C*.so for sm_90: registers, stack and local memory
            (spills), static shared memory, SASS code bytes (cuobjdump, from PyPI's
            nvidia-cuda-cuobjdump: requirements-dev.txt);
  plans     for each layer of bench/layers.py at the GPU bench's batch, each dtype and layout it
            covers, each op: the heuristic's plan and every autotuning candidate, as the CPU
            emulator (tests/emulator) launches them without running a block, joined with the
            kernels' resources: blocks per SM on an H100 and an H200 and what limits them, waves,
            SMs left idle, and the operand bytes each SM has in flight.

Occupancy follows the CUDA occupancy calculator's rules for compute capability 9.0; H100 SXM and
H200 have the same SM (132 of them, 64K registers and 228 KB of shared memory each), so their
occupancy is the same and only their memory bandwidth differs (bench/gpu_model.py). All of it is
arithmetic on compiler output and launch configurations: a model, not measured.

    python tools/cuda_audit.py [--out bench/results/model-sm90] [--layers NAMES]
"""

import argparse
import dataclasses
import functools
import glob
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class SmSpec:
    """What bounds the blocks an SM holds (CUDA occupancy calculator, compute capability 9.0)."""

    name: str
    sms: int
    registers: int = 65536
    register_unit: int = 256  # registers are given to a warp in units of 256
    threads: int = 2048
    blocks: int = 32
    smem: int = 233472  # 228 KB an SM
    smem_reserved_per_block: int = 1024  # the runtime's, on sm_80 and later
    smem_unit: int = 128


GPUS = (SmSpec("H100 SXM", 132), SmSpec("H200", 132))


# ---- the kernels' resources ---------------------------------------------------------------------


def cuobjdump():
    """cuobjdump: on PATH, in the toolkit, or from the nvidia-cuda-cuobjdump wheel; None if none."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    sys.path.insert(0, str(REPO / "tools"))
    from cuda_toolkit import find_cuda_home

    home = find_cuda_home()
    if home and os.path.exists(os.path.join(home, "bin", "cuobjdump")):
        return os.path.join(home, "bin", "cuobjdump")
    try:
        import nvidia.cu13  # the wheel's namespace package

        for root in nvidia.cu13.__path__:
            candidate = os.path.join(root, "bin", "cuobjdump")
            if os.path.exists(candidate):
                return candidate
    except ImportError:
        pass
    return None


def extension_library():
    libs = sorted(glob.glob(str(REPO / "pointwise_cuda" / "_C*.so")))
    if not libs:
        raise FileNotFoundError("no pointwise_cuda/_C*.so: build the extension first (pip install -e .)")
    return libs[0]


def _text_section_sizes(cubin: bytes):
    """{kernel's mangled name: bytes of its .text section} from an ELF64 cubin's section headers."""
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)

    def header(i):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize)
        return name, offset, size

    _, strtab, _ = header(shstrndx)
    sizes = {}
    for i in range(shnum):
        name_at, _, size = header(i)
        end = cubin.index(b"\0", strtab + name_at)
        name = cubin[strtab + name_at:end].decode()
        if name.startswith(".text."):
            sizes[name[len(".text."):]] = size
    return sizes


@functools.cache
def kernel_resources(library=None, tool=None):
    """{mangled kernel name: {registers, stack, local, static_smem, code_bytes}} for every sm_90
    kernel of the library."""
    library = library or extension_library()
    tool = tool or cuobjdump()
    if tool is None:
        raise FileNotFoundError("cuobjdump not found: pip install -r requirements-dev.txt (nvidia-cuda-cuobjdump)")
    report = subprocess.run([tool, "-arch", "sm_90", "-res-usage", library], capture_output=True, text=True,
                            check=True).stdout
    kernels = {}
    for name, usage in re.findall(r"Function (\S+):\n\s*(REG:.*)", report):
        fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", usage))
        kernels[name] = {"registers": int(fields["REG"]), "stack": int(fields["STACK"]),
                         "local": int(fields["LOCAL"]), "static_smem": int(fields["SHARED"])}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([tool, "-arch", "sm_90", "-xelf", "all", library], cwd=tmp, capture_output=True, check=True)
        for cubin in pathlib.Path(tmp).glob("*.cubin"):
            for name, size in _text_section_sizes(cubin.read_bytes()).items():
                if name in kernels:
                    kernels[name]["code_bytes"] = size
    return kernels


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short_name(demangled):
    """pointwise_gemm_kernel<mma16 bf16 128x128x32 s3 A_K B_K R0 partials> and the like."""
    s = demangled.replace("pointwise::cuda::", "").replace("pointwise::", "")
    s = re.sub(r"\(GemmProblem.*\)$", "", s).replace("void ", "")
    return s


# ---- occupancy ----------------------------------------------------------------------------------


def blocks_per_sm(registers, threads, smem_bytes, gpu: SmSpec):
    """(blocks an SM holds, what limits it) for a kernel of `registers` a thread, `threads` a block
    and `smem_bytes` of shared memory a block (static + dynamic)."""
    warps = -(-threads // 32)
    regs_per_warp = -(-registers * 32 // gpu.register_unit) * gpu.register_unit
    limits = {
        "registers": gpu.registers // (regs_per_warp * warps) if registers else gpu.blocks,
        "threads": gpu.threads // (warps * 32),
        "blocks": gpu.blocks,
        "shared memory": gpu.smem // (-(-(smem_bytes + gpu.smem_reserved_per_block) // gpu.smem_unit) * gpu.smem_unit),
    }
    limiter = min(limits, key=lambda k: limits[k])
    return limits[limiter], limiter


_TILE = re.compile(r"TileConfig<(\d+), (\d+), (\d+), (\d+), (\d+), (\d+)>")
_ELEMENT = {"double": 8, "float": 4, "__half": 2, "__nv_bfloat16": 2}


def tile_of(demangled):
    """(BM, BN, BK, STAGES, element bytes) of a GEMM kernel, or None for the finishing kernel."""
    m = _TILE.search(demangled)
    if m is None:
        return None
    bm, bn, bk, _, _, stages = map(int, m.groups())
    element = re.search(r"pointwise_gemm_kernel<\(Math\)\d, ([\w:]+),", demangled.replace("pointwise::cuda::", ""))
    return bm, bn, bk, stages, _ELEMENT[element.group(1)]


# ---- the plans of the suite's layers ---------------------------------------------------------------


# The GPU bench's configurations (bench/results/nvidia-h100-80gb-hbm3): dtype, layout, ops.
CONFIGS = (("fp32", "nchw", ("forward", "grad_input", "grad_weight")), ("tf32", "nchw", ("forward",)),
           ("bf16", "nchw", ("forward",)), ("bf16", "channels_last", ("forward", "grad_input", "grad_weight")),
           ("fp16", "channels_last", ("forward",)))
BATCH = 32


def _load_emulator():
    sys.path.insert(0, str(REPO / "tests"))
    import emulator

    return emulator, emulator.load()


def _gemm_k(layer, op):
    if op == "grad_weight":
        return BATCH * ((layer.h - 1) // layer.stride + 1) * ((layer.w - 1) // layer.stride + 1)
    return (layer.c_in if op == "forward" else layer.c_out) // layer.groups


def _launches_of(plan, op):
    """Launches a plan makes: the GEMM, and the finishing kernel where it writes partial sums."""
    return 2 if op == "grad_weight" or not plan.endswith(" x1") else 1


def layer_plans(layers, configs=CONFIGS):
    """For each (layer, dtype, layout, op): the heuristic plan's name and every candidate's launches
    (kernel's mangled name, grid, threads, dynamic shared memory), without running a block."""
    import torch

    emulator, emu = _load_emulator()
    emu.set_device(emulator.H100)
    emu.set_autotune(True)
    emu.set_counting("off", False)  # launches recorded and checked, no block run
    dtypes = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False),
              "fp16": (torch.float16, False)}
    out = []
    try:
        for layer in layers:
            for dtype_name, layout, ops in configs:
                dtype, tf32 = dtypes[dtype_name]
                torch.backends.cudnn.allow_tf32 = tf32
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                h_out, w_out = (layer.h - 1) // layer.stride + 1, (layer.w - 1) // layer.stride + 1
                x = torch.empty(BATCH, layer.c_in, layer.h, layer.w, dtype=dtype).to(memory_format=fmt)
                w = torch.empty(layer.c_out, layer.c_in // layer.groups, 1, 1, dtype=dtype)
                g = torch.empty(BATCH, layer.c_out, h_out, w_out, dtype=dtype).to(memory_format=fmt)
                stride = [layer.stride] * 2
                calls = {
                    "forward": lambda: emu.conv_forward(x, w, None, None, stride, [0, 0], layer.groups, "none"),
                    "grad_input": lambda: emu.conv_backward_input(g, w, list(x.shape), stride, [0, 0], layer.groups),
                    "grad_weight": lambda: emu.conv_backward_weight(g, x, stride, [0, 0], layer.groups),
                }
                for op in ops:
                    emu.clear_autotune_cache()
                    emu.prefer_plan("none")  # every candidate ties: each runs once, then the heuristic's
                    emu.clear_launches()
                    calls[op]()
                    (_, plans, kept), = emu.autotune_entries()
                    launches = emu.launch_counters()
                    candidates, at = [], 0
                    for plan in plans:
                        count = _launches_of(plan, op)
                        candidates.append({"plan": plan, "launches": [
                            {"kernel": emulator.kernel_name(emu, L), "grid": L["grid"], "threads": L["threads"],
                             "smem_bytes": L["smem_bytes"]} for L in launches[at:at + count]]})
                        at += count
                    assert at + _launches_of(kept, op) == len(launches), (layer.name, op, plans, len(launches))
                    out.append({"layer": layer.name, "dtype": dtype_name, "layout": layout, "op": op,
                                "heuristic": kept, "k": _gemm_k(layer, op),
                                "candidates": candidates})
    finally:
        emu.set_counting("off", True)
        emu.set_autotune(False)
        emu.prefer_plan(None)
        emu.clear_autotune_cache()
    return out


def audit_launch(launch, resources, names, k, plan, gpu: SmSpec):
    """A launch joined with its kernel's resources: occupancy, waves, idle SMs, bytes in flight."""
    res = resources.get(launch["kernel"])
    if res is None:
        raise KeyError(f"kernel {launch['kernel']} is not in the built extension")
    blocks = launch["grid"][0] * launch["grid"][1] * launch["grid"][2]
    per_sm, limiter = blocks_per_sm(res["registers"], launch["threads"], launch["smem_bytes"] + res["static_smem"], gpu)
    resident = min(blocks, per_sm * gpu.sms)
    row = {"kernel": short_name(names[launch["kernel"]]), "blocks": blocks, "threads": launch["threads"],
           "registers": res["registers"], "smem_bytes": launch["smem_bytes"] + res["static_smem"],
           "blocks_per_sm": per_sm, "limiter": limiter, "waves": blocks / (per_sm * gpu.sms),
           "sms_busy": min(blocks, gpu.sms), "in_flight_bytes_per_sm": None}
    tile = tile_of(names[launch["kernel"]])
    if tile is not None:
        bm, bn, bk, stages, element = tile
        splits = int(plan.split("x")[-1])
        k_tiles = -(-(-(-k // splits)) // bk)
        # The pipeline keeps STAGES - 1 stages of A and B loading while one is computed (fewer
        # when the block's K range is shorter), in every block resident on the SM.
        stages_in_flight = max(1, min(stages - 1, k_tiles))
        per_block = stages_in_flight * (bm * bk + bk * bn) * element
        row["in_flight_bytes_per_sm"] = per_block * min(per_sm, -(-blocks // gpu.sms))
    return row


# A launch's figures in audit.json, one list per launch in this order ("kernel": an index into "kernels").
LAUNCH_COLUMNS = ["kernel", "blocks", "threads", "registers", "smem_bytes", "blocks_per_sm", "limiter", "waves",
                  "sms_busy", "in_flight_bytes_per_sm"]


def audit(layers, out_dir):
    resources = kernel_resources()
    names = demangle(list(resources))
    plans = layer_plans(layers)
    gpu = GPUS[0]  # H200: the same SM and count, so the same figures
    kernels = [{"kernel": short_name(names[n]), "mangled": n, **r} for n, r in sorted(resources.items(), key=lambda kv: names[kv[0]])]
    index = {k["kernel"]: i for i, k in enumerate(kernels)}
    rows = []
    for p in plans:
        cands = []
        for c in p["candidates"]:
            launches = [audit_launch(L, resources, names, p["k"], c["plan"], gpu) for L in c["launches"]]
            for launch in launches:  # an index into "kernels", which names it once
                launch["kernel"] = index[launch["kernel"]]
                launch["waves"] = round(launch["waves"], 4)
            cands.append({"plan": c["plan"], "launches": [[launch[k] for k in LAUNCH_COLUMNS] for launch in launches]})
        rows.append({**{k: p[k] for k in ("layer", "dtype", "layout", "op", "heuristic", "k")}, "candidates": cands})
    result = {"kind": "cuda_audit", "model": "model, not measured", "gpus": [dataclasses.asdict(g) for g in GPUS],
              "batch": BATCH, "kernels": kernels, "launch_columns": LAUNCH_COLUMNS, "plans": rows, "commit": _commit()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
    (out_dir / "audit.md").write_text(markdown(result))
    return result


def _commit():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench/results"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
        return {"commit": head or None, "dirty": dirty}
    except OSError:
        return {"commit": None, "dirty": None}


def markdown(result):
    c = result["commit"]
    lines = [
        "### CUDA audit: kernels and plans on sm_90 (H100 SXM, H200) · model, not measured",
        "",
        f"commit `{(c['commit'] or 'none')[:12]}`{' (dirty)' if c['dirty'] else ''}, batch {result['batch']}. "
        "Registers, spills and code bytes: cuobjdump of the built extension. Plans: the launches the CPU "
        "emulator makes for each layer. Blocks per SM: the occupancy calculator's rules for sm_90 "
        "(H100 SXM and H200 share the SM and its count, 132). Nothing here ran on a GPU.",
        "",
        "#### Kernels",
        "",
        "| kernel | registers | stack | local | static smem | code bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in result["kernels"]:
        lines.append(f"| `{k['kernel']}` | {k['registers']} | {k['stack']} | {k['local']} | {k['static_smem']} | "
                     f"{k.get('code_bytes', '')} |")
    lines += ["", "#### The heuristic's plan of each layer (its GEMM kernel)", "",
              "| layer | dtype | layout | op | plan | blocks | blocks/SM | limit | waves | SMs busy | KB in flight/SM |",
              "|---|---|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in result["plans"]:
        chosen = next(c for c in r["candidates"] if c["plan"] == r["heuristic"])
        g = dict(zip(result["launch_columns"], chosen["launches"][0]))
        flight = "" if g["in_flight_bytes_per_sm"] is None else f"{g['in_flight_bytes_per_sm'] / 1024:.0f}"
        lines.append(f"| {r['layer']} | {r['dtype']} | {r['layout']} | {r['op']} | {r['heuristic']} | {g['blocks']} | "
                     f"{g['blocks_per_sm']} | {g['limiter']} | {g['waves']:.2f} | {g['sms_busy']} | {flight} |")
    lines += ["", "Every autotuning candidate's figures are in audit.json. In flight: (STAGES - 1, or the block's "
              "K tiles if fewer) stages of A and B tiles, times the blocks resident on an SM."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "model-sm90"))
    p.add_argument("--layers", default=None, help="comma-separated substrings of layer names (default: all)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "bench"))
    import layers as suite_layers

    result = audit(suite_layers.suite(only=args.layers), pathlib.Path(args.out))
    print(f"{len(result['kernels'])} kernels, {len(result['plans'])} layer plans -> {args.out}/audit.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
