"""A napkin model of each layer's time on an H100 and an H200: model, not measured.

For every kernel a layer's plan launches (tools/cuda_audit.py: the plan, blocks per SM, bytes in
flight), three lower bounds, and the largest of them is the kernel's time:
  memory    compulsory bytes / (copy bandwidth x sector efficiency)
            the kernel's own bytes: A and B read once, C (or the split partial sums) written once;
            sector efficiency from the CPU emulator's counters (tests/emulator), sampled blocks
  compute   FLOPs / matmul ceiling, stretched by the rounds of SMs the grid needs
            (a grid of b blocks keeps at most b of the 132 SMs busy)
  latency   bytes read / (bytes in flight on the GPU / memory latency): Little's law, with the
            operand stages each SM's resident blocks keep loading
A layer's time is the sum over its kernels (a split GEMM and its finishing kernel). No launch
overhead, no caches, no instruction issue limits: what the model leaves out shows up as the ratio
to a measurement.

Figures: copy bandwidth 3.0 TB/s and the matmul ceilings (bf16 787, fp16 749, TF32 408, fp32 51.7
TFLOP/s) are the ones bench/run.py measured on the H100 (bench/results/nvidia-h100-80gb-hbm3). The
H200 has the H100's SMs and 4.8 / 3.35 of its memory bandwidth (datasheets): its copy bandwidth is
the H100's scaled so, not measured. Latency 700 ns: the middle of the 600-800 ns that loaded HBM3
latency is reported in, above the ~500 ns of an idle pointer chase, since these kernels run at or
near full bandwidth.

--kernels h100-run models the kernels the H100 run measured (commit d67c0eb: its forward plan rule,
transcribed below, and the registers of its build, --library) to check the model against those
measurements: rank correlation and the spread of measured / modelled, layer by layer.

    python bench/gpu_model.py                                   # today's kernels
    python bench/gpu_model.py --kernels h100-run --library /path/to/d67c0eb/_C.so
"""

import argparse
import json
import math
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(HERE))
import cuda_audit  # noqa: E402

H100_RESULTS = HERE / "results" / "nvidia-h100-80gb-hbm3"
LATENCY_S = 700e-9
H200_BANDWIDTH_SCALE = 4.8 / 3.35
ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}
# (dtype, layout) -> the H100 run's forward results, whose ceilings the model uses.
MEASURED = {("fp32", "nchw"): "fp32-nchw", ("tf32", "nchw"): "tf32-nchw", ("bf16", "nchw"): "bf16-nchw",
            ("bf16", "channels_last"): "bf16-channels_last", ("fp16", "channels_last"): "fp16-channels_last"}


def h100_run(dtype, layout, passes="forward"):
    path = H100_RESULTS / f"layers-nvidia-h100-80gb-hbm3-{MEASURED[(dtype, layout)]}-{passes}-b32.json"
    return json.loads(path.read_text())


def gemm_dims(layer, op, batch):
    """(m, n, k, groups) of the op's GEMM (gemm_problem.h)."""
    pixels = batch * ((layer.h - 1) // layer.stride + 1) * ((layer.w - 1) // layer.stride + 1)
    g = layer.groups
    if op == "forward":
        return layer.c_out // g, pixels, layer.c_in // g, g
    if op == "grad_input":
        return layer.c_in // g, pixels, layer.c_out // g, g
    return layer.c_out // g, layer.c_in // g, pixels, g


def kernel_bytes(dims, element, splits, partials, finishing):
    """(bytes read, bytes written) that a GEMM kernel or its finishing kernel must move."""
    m, n, k, g = dims
    if finishing:
        return splits * m * n * g * 4, m * n * g * element
    written = splits * m * n * g * 4 if partials else m * n * g * element
    return (m * k + k * n) * g * element, written


def kernel_time(row, read, written, flops, efficiency, bandwidth, peak, gpu):
    """The three bounds of one kernel launch (seconds) and which one binds."""
    t = {"memory": (read + written) / (bandwidth * efficiency)}
    rounds = math.ceil(row["blocks"] / gpu.sms)
    t["compute"] = flops / peak * rounds * gpu.sms / row["blocks"] if flops else 0.0
    in_flight = (row["in_flight_bytes_per_sm"] or 0) * row["sms_busy"]
    # The finishing kernel streams without a pipeline: one 4-byte load in flight per thread.
    in_flight = in_flight or row["threads"] * 4 * min(row["blocks_per_sm"], -(-row["blocks"] // gpu.sms)) * row["sms_busy"]
    t["latency"] = read / (in_flight / LATENCY_S)
    bound = max(t, key=t.get)
    return t[bound], bound, t


def sector_efficiency(emu, emulator, call):
    """Bytes used over sector bytes, over every global access of each launch of `call` (sampled
    blocks, the others not run)."""
    emu.clear_launches()
    emu.set_counting("sampled", False)
    try:
        call()
    finally:
        emu.set_counting("off", True)
    out = []
    for launch in emu.launch_counters():
        used = sum(launch["access"][k]["bytes"] for k in ("global_load", "global_store", "cp_async_global"))
        sectors = sum(launch["access"][k]["sectors"] for k in ("global_load", "global_store", "cp_async_global"))
        out.append(used / (32 * sectors) if sectors else 1.0)
    return out


# ---- the kernels of the H100 run (commit d67c0eb) ------------------------------------------------

# Its tiles (gemm.cuh there, the same as today's) and its forward plan rule (ops_cuda.cpp there,
# choose_tile: no split, every SM about two blocks), transcribed.
OLD_TILES = {"large": (128, 128, 32, 2, 4, 3), "medium": (64, 64, 32, 2, 2, 4), "narrow_m": (32, 128, 32, 1, 4, 4),
             "narrow_n": (128, 32, 32, 4, 1, 4)}


def old_forward_tile(m, n, groups, sms=132):
    def blocks(bm, bn):
        return -(-m // bm) * -(-n // bn) * groups

    if m <= 32:
        return "narrow_m"
    if n <= 32:
        return "narrow_n"
    if m > 64 and n > 64 and blocks(128, 128) >= 2 * sms:
        return "large"
    if m <= 48 and blocks(32, 128) >= blocks(64, 64) / 2:
        return "narrow_m"
    return "medium"


def old_forward_launch(layer, dtype, layout, resources, names, batch):
    """The launch the H100 run's forward made for the layer, as cuda_audit.audit_launch takes it."""
    m, n, k, g = gemm_dims(layer, "forward", batch)
    tile = old_forward_tile(m, n, g)
    bm, bn, bk, wm, wn, stages = OLD_TILES[tile]
    element = ELEMENT_BYTES[dtype]
    b_k = layout == "channels_last"  # A (the weight) is k-contiguous; B is k-contiguous in NHWC
    math_kind = {"fp32": 0, "tf32": 1}.get(dtype, 2)
    pad_k, pad_mn = 16, 32 if dtype == "tf32" else 16

    def tile_elems(outer, inner, pad):
        return outer * (inner + pad // element)

    a = tile_elems(bm, bk, pad_k)
    b = tile_elems(bn, bk, pad_k) if b_k else tile_elems(bk, bn, pad_mn)
    epilogue = 4 * max(bm * (bn + 4), bn * (bm + 4))
    smem = max(stages * (a + b) * element, epilogue)
    ctype = {"fp32": "float", "tf32": "float", "bf16": "__nv_bfloat16", "fp16": "__half"}[dtype]
    wanted = (f"pointwise_gemm_kernel<(Math){math_kind}, {ctype}, {ctype}, "
              f"TileConfig<{bm}, {bn}, {bk}, {wm}, {wn}, {stages}>, true, {'true' if b_k else 'false'}>")
    kernel = next((name for name in resources if cuda_audit.short_name(names[name]).startswith(wanted)), None)
    if kernel is None:
        raise KeyError(f"no kernel {wanted} in the library")
    return {"kernel": kernel, "grid": [-(-m // bm) * -(-n // bn), 1, g], "threads": 32 * wm * wn,
            "smem_bytes": smem}, f"{tile} x1"


# ---- the model over the suite --------------------------------------------------------------------


def model(layers, kernels, library, batch=32):
    import torch  # noqa: F401 (the emulator's extension needs it loaded)

    resources = cuda_audit.kernel_resources(library)
    names = cuda_audit.demangle(list(resources))
    h100, h200 = cuda_audit.GPUS
    rows = []
    if kernels == "today":
        plans = cuda_audit.layer_plans(layers)
        emulator, emu = cuda_audit._load_emulator()
    else:
        plans = [{"layer": layer.name, "dtype": d, "layout": lay, "op": "forward", "_layer": layer}
                 for layer in layers for d, lay, _ in cuda_audit.CONFIGS]
    by_name = {layer.name: layer for layer in layers}
    for p in plans:
        layer = by_name[p["layer"]]
        dims = gemm_dims(layer, p["op"], batch)
        element = ELEMENT_BYTES[p["dtype"]]
        if kernels == "today":
            chosen = next(c for c in p["candidates"] if c["plan"] == p["heuristic"])
            launches, plan = chosen["launches"], p["heuristic"]
            efficiencies = _efficiencies(emu, emulator, layer, p, plan, batch)
        else:
            launch, plan = old_forward_launch(layer, p["dtype"], p["layout"], resources, names, batch)
            launches, efficiencies = [launch], [1.0]  # no counters for that commit's kernels: assumed
        splits = int(plan.split("x")[-1])
        partials = len(launches) == 2
        measured = h100_run(p["dtype"], p["layout"])
        ceilings = measured["ceilings"]
        bandwidth, peak = ceilings["copy_bandwidth_bytes_per_s"], ceilings["matmul_flop_per_s"]
        total = {"H100": 0.0, "H200": 0.0}
        parts = []
        for index, launch in enumerate(launches):
            finishing = index == 1
            row = cuda_audit.audit_launch(launch, resources, names, p["k"] if "k" in p else dims[2], plan, h100)
            read, written = kernel_bytes(dims, element, splits, partials, finishing)
            flops = 0 if finishing else 2 * dims[0] * dims[1] * dims[2] * dims[3]
            eff = efficiencies[index] if index < len(efficiencies) else 1.0
            for gpu_name, scale in (("H100", 1.0), ("H200", H200_BANDWIDTH_SCALE)):
                t, bound, terms = kernel_time(row, read, written, flops, eff, bandwidth * scale, peak, h100)
                total[gpu_name] += t
                if gpu_name == "H100":
                    parts.append({"kernel": row["kernel"], "blocks": row["blocks"], "blocks_per_sm": row["blocks_per_sm"],
                                  "sector_efficiency": eff, "bound": bound,
                                  "terms_us": {k: v * 1e6 for k, v in terms.items()}})
        rec = {"layer": p["layer"], "dtype": p["dtype"], "layout": p["layout"], "op": p["op"], "plan": plan,
               "model_ms": {k: v * 1e3 for k, v in total.items()}, "kernels": parts}
        if p["op"] == "forward":
            m = next((r for r in measured["layers"] if r["layer"]["name"] == p["layer"]), None)
            if m is not None:
                rec["measured_ms"] = {"ours_at_d67c0eb": m["ms"].get("ours"), "cudnn": m["ms"].get("conv")}
        rows.append(rec)
    return rows


def _efficiencies(emu, emulator, layer, p, plan, batch):
    import torch

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p["dtype"]]
    torch.backends.cudnn.allow_tf32 = p["dtype"] == "tf32"
    fmt = torch.channels_last if p["layout"] == "channels_last" else torch.contiguous_format
    h_out, w_out = (layer.h - 1) // layer.stride + 1, (layer.w - 1) // layer.stride + 1
    x = torch.zeros(batch, layer.c_in, layer.h, layer.w, dtype=dtype).to(memory_format=fmt)
    w = torch.zeros(layer.c_out, layer.c_in // layer.groups, 1, 1, dtype=dtype)
    g = torch.zeros(batch, layer.c_out, h_out, w_out, dtype=dtype).to(memory_format=fmt)
    stride = [layer.stride] * 2
    call = {"forward": lambda: emu.conv_forward(x, w, None, None, stride, [0, 0], layer.groups, "none"),
            "grad_input": lambda: emu.conv_backward_input(g, w, list(x.shape), stride, [0, 0], layer.groups),
            "grad_weight": lambda: emu.conv_backward_weight(g, x, stride, [0, 0], layer.groups)}[p["op"]]
    emu.set_autotune(True)
    emu.clear_autotune_cache()
    emu.prefer_plan(plan)
    emu.set_counting("off", False)
    try:
        call()  # tunes (no block runs), keeping `plan`
        return sector_efficiency(emu, emulator, call)
    finally:
        emu.set_counting("off", True)
        emu.set_autotune(False)
        emu.prefer_plan(None)
        emu.clear_autotune_cache()


def spearman(xs, ys):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = rank
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _spread(ratios):
    ratios = sorted(ratios)
    return {"geomean": geomean(ratios), "p10": ratios[len(ratios) // 10], "median": statistics.median(ratios),
            "p90": ratios[len(ratios) * 9 // 10]}


def summary(rows, kernels):
    out = {}
    for (dtype, layout) in MEASURED:
        sel = [r for r in rows if r["op"] == "forward" and r["dtype"] == dtype and r["layout"] == layout and "measured_ms" in r]
        if not sel:
            continue
        model_ms = [r["model_ms"]["H100"] for r in sel]
        s = {"layers": len(sel), "model_geomean_ms": geomean(model_ms),
             "cudnn_measured_geomean_ms": geomean(r["measured_ms"]["cudnn"] for r in sel),
             "model_speedup_vs_cudnn_geomean": geomean(r["measured_ms"]["cudnn"] / r["model_ms"]["H100"] for r in sel)}
        # What a fixed cost a call would explain: the smallest time the H100 run measured for our op
        # in this configuration, added to every layer's model (a calibration on the measurements,
        # not a prediction; the host code has changed since, so for today's kernels it is a guess).
        ours = [r["measured_ms"]["ours_at_d67c0eb"] for r in sel]
        floor = min(ours)
        with_floor = [m + floor for m in model_ms]
        s.update({"measured_floor_ms": floor, "model_plus_floor_speedup_vs_cudnn_geomean": geomean(
            r["measured_ms"]["cudnn"] / m for r, m in zip(sel, with_floor))})
        if kernels == "h100-run":
            s.update({"spearman_measured_vs_model": spearman(ours, model_ms),
                      "measured_over_model": _spread([o / m for o, m in zip(ours, model_ms)]),
                      "spearman_measured_vs_model_plus_floor": spearman(ours, with_floor),
                      "measured_over_model_plus_floor": _spread([o / m for o, m in zip(ours, with_floor)])})
        out[f"{dtype}/{layout}"] = s
    return out


def markdown(result):
    k = result["kernels"]
    title = "today's kernels" if k == "today" else "the kernels the H100 run measured (commit d67c0eb)"
    c = result["commit"]
    lines = [f"### GPU time model, {title} · model, not measured", "",
             f"commit `{(c['commit'] or 'none')[:12]}`{' (dirty)' if c['dirty'] else ''}, batch {result['batch']}, "
             f"memory latency {LATENCY_S * 1e9:.0f} ns. Bounds per kernel (bench/gpu_model.py): compulsory bytes over "
             "the H100's measured copy bandwidth x the emulator's sector efficiency; FLOPs over its measured matmul "
             "ceiling per round of SMs; Little's law on the bytes in flight. H200: the H100's figures with 4.8/3.35 "
             "of its bandwidth. Measured columns: the H100 run (bench/results/nvidia-h100-80gb-hbm3).", "",
             "| dtype / layout (forward) | layers | model geomean ms | cuDNN measured geomean ms | model × cuDNN | "
             "(model + measured floor) × cuDNN |"
             + (" Spearman (measured, model) | measured / model: p10 · median · p90 | the same, model + measured floor |"
                if k == "h100-run" else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|---|---|" if k == "h100-run" else "")]
    for key, s in result["summary"].items():
        line = (f"| {key} | {s['layers']} | {s['model_geomean_ms']:.4f} | {s['cudnn_measured_geomean_ms']:.4f} | "
                f"{s['model_speedup_vs_cudnn_geomean']:.2f} | {s['model_plus_floor_speedup_vs_cudnn_geomean']:.2f} "
                f"(floor {s['measured_floor_ms'] * 1e3:.1f} us) |")
        if k == "h100-run":
            q, f = s["measured_over_model"], s["measured_over_model_plus_floor"]
            line += (f" {s['spearman_measured_vs_model']:.2f} | {q['p10']:.1f} · {q['median']:.1f} · {q['p90']:.1f} | "
                     f"Spearman {s['spearman_measured_vs_model_plus_floor']:.2f}, {f['p10']:.1f} · {f['median']:.1f} · "
                     f"{f['p90']:.1f} |")
        lines.append(line)
    lines += ["", "model × cuDNN: cuDNN's measured time over the model's (above 1: the model has us faster). "
              "Measured floor: the smallest time the H100 run measured for our op in that configuration, added to "
              "every layer's model: a calibration on the measurements, to see what a fixed cost a call explains.", "",
              "| layer | dtype | layout | op | plan | model H100 ms | model H200 ms | bound (GEMM) | sector eff. |"
              + (" measured ms | measured / model |" if k == "h100-run" else " cuDNN measured ms |"),
              "|---|---|---|---|---|---:|---:|---|---:|" + ("---:|---:|" if k == "h100-run" else "---:|")]
    for r in result["layers"]:
        g = r["kernels"][0]
        meas = r.get("measured_ms", {})
        line = (f"| {r['layer']} | {r['dtype']} | {r['layout']} | {r['op']} | {r['plan']} | {r['model_ms']['H100']:.4f} | "
                f"{r['model_ms']['H200']:.4f} | {g['bound']} | {g['sector_efficiency']:.2f} |")
        if k == "h100-run":
            ours = meas.get("ours_at_d67c0eb")
            line += f" {ours:.4f} | {ours / r['model_ms']['H100']:.1f} |" if ours else " | |"
        else:
            line += f" {meas['cudnn']:.4f} |" if meas.get("cudnn") else " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", choices=["today", "h100-run"], default="today")
    p.add_argument("--library", default=None, help="the built extension to read kernels from (default: this checkout's)")
    p.add_argument("--layers", default=None, help="comma-separated substrings of layer names (default: all)")
    p.add_argument("--out", default=str(HERE / "results" / "model-sm90"))
    args = p.parse_args(argv)
    import layers as suite_layers

    layers = suite_layers.suite(only=args.layers)
    rows = model(layers, args.kernels, args.library)
    result = {"kind": "gpu_model", "model": "model, not measured", "kernels": args.kernels, "batch": 32,
              "latency_ns": LATENCY_S * 1e9, "commit": cuda_audit._commit(), "summary": summary(rows, args.kernels),
              "layers": rows}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "model-today" if args.kernels == "today" else "model-h100-run"
    (out / f"{stem}.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    for key, s in result["summary"].items():
        print(key, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()})
    print(f"-> {out}/{stem}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
