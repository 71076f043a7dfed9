"""The layer benchmark: our op against F.conv2d, torch.matmul and the roofline, layer by layer.

    python bench/run.py --device cuda --dtype bf16 --layout channels_last --pass forward --batch 32
    python bench/run.py --smoke --device cpu --out /tmp/smoke          # the CI configuration

For each layer of the suite (bench/layers.py), in one run and on the same inputs:
  ours          pointwise_cuda.pointwise_conv2d(x, w, stride=, groups=)
  ours tuned    the same with pointwise_cuda.set_autotune(True) (CUDA only); every candidate plan's time
                is recorded in the JSON (the layer's "autotune" entries)
  F.conv2d      cuDNN with torch.backends.cudnn.benchmark off (on CPU: whatever PyTorch picks, oneDNN or
                its own GEMM path; for a 1x1 conv with batch < 16 on one thread it is the GEMM path)
  F.conv2d bm   the same with cudnn.benchmark on (CUDA only)
  matmul        torch.matmul on the zero-copy GEMM view (cuBLAS; on CPU, MKL/oneDNN):
                channels_last: x.permute(0,2,3,1).reshape(-1, C_in) @ W.t(); NCHW: W @ x.view(N, C_in, H*W);
                groups by reshaping; a stride-2 layer's input is gathered once beforehand (outside the timing)
  roofline      max(FLOPs / matmul peak, min bytes / copy bandwidth), both ceilings measured at startup
  fused         ours with bias + residual + ReLU in one call, against F.relu(F.conv2d(x, w, b) + r)
Every time is a median from pointwise_cuda.timing.median_ms (L2 flushed between calls on CUDA), with
glibc malloc's thresholds fixed (benchutil.pin_allocator), so that no method's calls pay page faults
that another's did not.
Before timing, our output (with autotuning off and on) is checked against F.conv2d in float64.
Writes <out>/layers-<device>-<dtype>-<layout>-<pass>-b<batch>.{json,md} and -speedup.png, -roofline.png.
"""

import argparse
import math
import os
import statistics
import sys
import time
import traceback
import zlib

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402
from layers import suite  # noqa: E402

import pointwise_cuda as pw  # noqa: E402
from pointwise_cuda.timing import median_ms  # noqa: E402

PASSES = ("forward", "backward", "fwdbwd")
# Relative error of our forward against F.conv2d in float64, by --dtype.
TOLERANCE = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 2e-2, "fp16": 5e-3}
LATENCY_FLOOR_MS = 0.005  # a layer whose roofline time is under this is classed latency-bound
METHODS = ("ours", "ours_autotune", "conv", "conv_benchmark", "matmul", "fused_ours", "fused_torch")


# ---- what is timed --------------------------------------------------------------------------


def pass_figures(layer, batch, element_size, pass_):
    """FLOPs and minimum bytes of a pass: backward = grad-input + grad-weight, fwdbwd = forward + backward."""
    fwd_flops = layer.flops(batch)
    fwd_bytes = layer.min_bytes(batch, element_size)
    # backward reads grad_output, the used input pixels and the weight; writes grad_input (full size) and grad_weight.
    weight = layer.c_out * (layer.c_in // layer.groups)
    out = batch * layer.c_out * layer.h_out * layer.w_out
    used_in = batch * layer.c_in * layer.h_out * layer.w_out
    bwd_bytes = (out + used_in + weight + layer.input_elements(batch) + weight) * element_size
    if pass_ == "forward":
        return fwd_flops, fwd_bytes
    if pass_ == "backward":
        return 2 * fwd_flops, bwd_bytes
    return 3 * fwd_flops, fwd_bytes + bwd_bytes


def gemm_view(x, w, groups, channels_last):
    """torch.matmul on the GEMM that the 1x1 conv is, through views of x and w (no copies for stride 1)."""
    n, c_in, h, wd = x.shape
    c_out = w.shape[0]
    cin_g, cout_g = c_in // groups, c_out // groups
    if channels_last:
        rows = x.permute(0, 2, 3, 1).reshape(n * h * wd, c_in)  # a view when x is channels_last
        if groups == 1:
            return rows @ w.view(c_out, c_in).t()
        return torch.matmul(rows.view(-1, groups, cin_g).transpose(0, 1), w.view(groups, cout_g, cin_g).transpose(1, 2))
    return torch.matmul(w.view(groups, cout_g, cin_g), x.view(n, groups, cin_g, h * wd))


def make_methods(layer, batch, dtype, memory_format, device, pass_):
    """{method: (fn, leaves)}: fn() computes the output from tensors made here; leaves get gradients."""
    torch.manual_seed(zlib.crc32(layer.name.encode()))  # fresh inputs per layer, the same every run
    needs_grad = pass_ != "forward"

    def tensor(*shape, scale=1.0, fmt=True):
        t = torch.randn(*shape, device=device) * scale
        t = t.to(dtype)
        if fmt:
            t = t.contiguous(memory_format=memory_format)
        return t.requires_grad_(needs_grad)

    s, g = layer.stride, layer.groups
    x = tensor(batch, layer.c_in, layer.h, layer.w)
    w = tensor(layer.c_out, layer.c_in // g, 1, 1, scale=(layer.c_in // g) ** -0.5)
    b = tensor(layer.c_out, fmt=False)
    r = tensor(batch, layer.c_out, layer.h_out, layer.w_out)
    channels_last = memory_format == torch.channels_last
    # torch.matmul has no strided view: it gets the strided pixels gathered once, outside the timing.
    xg = x if s == 1 else tensor(batch, layer.c_in, layer.h_out, layer.w_out)
    methods = {
        "ours": (lambda: pw.pointwise_conv2d(x, w, None, s, groups=g), (x, w)),
        "conv": (lambda: F.conv2d(x, w, None, s, groups=g), (x, w)),
        "matmul": (lambda: gemm_view(xg, w, g, channels_last), (xg, w)),
        "fused_ours": (lambda: pw.pointwise_conv2d(x, w, b, s, groups=g, activation="relu", residual=r), (x, w, b, r)),
        "fused_torch": (lambda: F.relu(F.conv2d(x, w, b, s, groups=g) + r), (x, w, b, r)),
    }
    if device.type == "cuda":
        methods["conv_benchmark"] = methods["conv"]  # the same call, timed with cudnn.benchmark on
        methods["ours_autotune"] = methods["ours"]  # the same call, timed with pw.set_autotune(True)
    return methods, (x, w)


def timed_call(fn, leaves, pass_):
    """The callable to time for a pass: the forward (no autograd), the backward alone, or both."""
    if pass_ == "forward":

        def forward():
            with torch.no_grad():
                return fn()

        return forward
    y = fn()
    grad_y = torch.randn_like(y)
    if pass_ == "backward":
        return lambda: torch.autograd.grad(y, leaves, grad_y, retain_graph=True)
    return lambda: torch.autograd.grad(fn(), leaves, grad_y)


def relative_error(layer, x, w, autotune=False) -> float:
    pw.set_autotune(autotune)
    try:
        with torch.no_grad():
            y = pw.pointwise_conv2d(x, w, None, layer.stride, groups=layer.groups).double()
            ref = F.conv2d(x.double(), w.double(), None, layer.stride, groups=layer.groups)
            return ((y - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    finally:
        pw.set_autotune(False)


def _error(e: Exception, verbose: bool) -> str:
    if verbose:
        traceback.print_exc()
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}"


def bench_layer(layer, args, device, dtype, memory_format, ceilings, element_size) -> dict:
    flops, nbytes = pass_figures(layer, args.batch, element_size, args.pass_)
    compute_ms = flops / ceilings["matmul_flop_per_s"] * 1e3
    memory_ms = nbytes / ceilings["copy_bandwidth_bytes_per_s"] * 1e3
    rec = {
        "layer": layer.as_dict(),
        "flops": flops,
        "min_bytes": nbytes,
        "intensity": flops / nbytes,
        "roofline_ms": max(compute_ms, memory_ms),
        # Under a few microseconds no kernel launch can reach either ceiling: such layers (the
        # squeeze-excitation 1x1s) are latency-bound and kept out of the memory/compute-bound summaries.
        "bound": "latency" if max(compute_ms, memory_ms) < LATENCY_FLOOR_MS
        else ("compute" if compute_ms >= memory_ms else "memory"),
        "ms": {},
        "errors": {},
    }
    methods, (x, w) = make_methods(layer, args.batch, dtype, memory_format, device, args.pass_)
    pw.clear_autotune_cache()  # so that the entries recorded below are this layer's
    try:
        rec["rel_err"] = relative_error(layer, x, w)
        errors = [rec["rel_err"]]
        if "ours_autotune" in methods:
            rec["rel_err_autotune"] = relative_error(layer, x, w, autotune=True)
            errors.append(rec["rel_err_autotune"])
        rec["check_ok"] = all(math.isfinite(e) and e <= TOLERANCE[args.dtype] for e in errors)
    except Exception as e:  # noqa: BLE001 (recorded, and makes the run fail)
        rec["rel_err"], rec["check_ok"] = None, False
        rec["errors"]["check"] = f"{type(e).__name__}: {e}"
    # Rounds interleave the methods (ours, F.conv2d, ..., ours, F.conv2d, ...) so that a burst of
    # noise on a shared machine lands on all of them; each figure is the median of its rounds' medians.
    calls, rounds = {}, {}
    for name in METHODS:
        if name in methods:
            fn, leaves = methods[name]
            try:
                calls[name] = timed_call(fn, leaves, args.pass_)
            except Exception as e:  # noqa: BLE001 (one failing baseline must not lose the others)
                rec["errors"][name] = _error(e, args.verbose)
    for _ in range(args.rounds):
        for name, call in calls.items():
            if name in rec["errors"]:
                continue
            torch.backends.cudnn.benchmark = name == "conv_benchmark"
            pw.set_autotune(name == "ours_autotune")
            try:
                rounds.setdefault(name, []).append(median_ms(call, device, warmup=args.warmup, repeat=args.repeat))
            except Exception as e:  # noqa: BLE001
                rec["errors"][name] = _error(e, args.verbose)
                rounds.pop(name, None)
            finally:
                torch.backends.cudnn.benchmark = False
                pw.set_autotune(False)
    rec["ms"] = {name: statistics.median(v) for name, v in rounds.items()}
    if "ours_autotune" in methods:
        rec["autotune"] = pw.autotune_cache()
    if args.rounds > 1:
        rec["ms_rounds"] = rounds
    ms = rec["ms"]
    ours = ms.get("ours")
    conv_best = min((ms[k] for k in ("conv", "conv_benchmark") if k in ms), default=None)

    def ratio(a, b):
        return a / b if a is not None and b is not None and b > 0 else None

    rec.update(
        speedup_vs_conv=ratio(ms.get("conv"), ours),
        autotune_speedup_vs_conv=ratio(ms.get("conv"), ms.get("ours_autotune")),
        speedup_vs_conv_best=ratio(conv_best, ours),
        speedup_vs_matmul=ratio(ms.get("matmul"), ours),
        pct_of_roofline=None if ours is None else 100 * rec["roofline_ms"] / ours,
        fused_speedup=ratio(ms.get("fused_torch"), ms.get("fused_ours")),
        achieved_flop_per_s={k: flops / (v * 1e-3) for k, v in ms.items() if not k.startswith("fused")},
        achieved_bytes_per_s={k: nbytes / (v * 1e-3) for k, v in ms.items() if not k.startswith("fused")},
    )
    return rec


def summarize(records) -> dict:
    def gm(key):
        return bu.geomean(r.get(key) for r in records)

    ok = [r for r in records if r.get("speedup_vs_conv") is not None]
    worst = min(ok, key=lambda r: r["speedup_vs_conv"], default=None)
    mem = [r for r in records if r["bound"] == "memory" and r["ms"].get("ours")]
    comp = [r for r in records if r["bound"] == "compute" and r.get("speedup_vs_matmul")]
    latency = [r for r in records if r["bound"] == "latency" and r["ms"].get("ours")]
    return {
        "layers": len(records),
        "geomean_ms": {m: bu.geomean(r["ms"].get(m) for r in records) for m in METHODS},
        "geomean_roofline_ms": bu.geomean(r["roofline_ms"] for r in records),
        "geomean_speedup_vs_conv": gm("speedup_vs_conv"),
        "geomean_autotune_speedup_vs_conv": gm("autotune_speedup_vs_conv"),
        "geomean_speedup_vs_conv_best": gm("speedup_vs_conv_best"),
        "geomean_speedup_vs_matmul": gm("speedup_vs_matmul"),
        "geomean_pct_of_roofline": gm("pct_of_roofline"),
        "geomean_fused_speedup": gm("fused_speedup"),
        "min_speedup_vs_conv": None if worst is None else worst["speedup_vs_conv"],
        "min_speedup_vs_conv_layer": None if worst is None else worst["layer"]["name"],
        "memory_bound_layers": len(mem),
        "memory_bound_geomean_pct_of_roofline": bu.geomean(r["pct_of_roofline"] for r in mem),
        "compute_bound_layers": len(comp),
        "compute_bound_geomean_pct_of_matmul": bu.geomean(100 * r["speedup_vs_matmul"] for r in comp),
        "latency_bound_layers": len(latency),
        "latency_bound_geomean_speedup_vs_conv": bu.geomean(r.get("speedup_vs_conv") for r in latency),
        "checks_failed": [r["layer"]["name"] for r in records if not r.get("check_ok")],
        "errors": {r["layer"]["name"]: r["errors"] for r in records if r["errors"]},
    }


# ---- output ---------------------------------------------------------------------------------


def markdown(result) -> str:
    cfg, env, ceil, summ = result["config"], result["environment"], result["ceilings"], result["summary"]
    cuda = env["device_type"] == "cuda"
    conv = "cuDNN" if cuda else "F.conv2d"
    load = result.get("loadavg_1min") or {}
    load = "" if cuda else f" (1-minute load average {load.get('start')} at the start, {load.get('end')} at the end, on {env.get('cpu_count')} CPUs)"
    lines = [
        f"### {cfg['pass']} · {cfg['dtype']} · {cfg['layout']} · batch {cfg['batch']} · {env['device']}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, commit `{(env['commit'] or 'none')[:12]}`"
        f"{' (dirty)' if env['dirty'] else ''}, {env['threads']} CPU threads"
        f"{load}{', glibc malloc thresholds fixed' if cfg.get('mallopt') else ''}. "
        f"Ceilings measured: copy {ceil['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (read + write), "
        f"matmul {ceil['matmul_flop_per_s'] / 1e12:.2f} TFLOP/s ({cfg['dtype']}, n={ceil['matmul_n']}).",
        "",
        f"| layer | ours ms | ours tuned ms | {conv} ms | {conv} bm ms | matmul ms | roofline ms | bound | × {conv} | "
        f"tuned × {conv} | × best {conv} | × matmul | % roofline | fused ours ms | unfused ms | × fused |",
        "|---|" + "---:|" * 15,
    ]
    for r in result["layers"]:
        ms = r["ms"]
        flag = "" if r.get("check_ok") else " ⚠"
        lines.append(
            f"| {r['layer']['name']}{flag} | {bu.fmt(ms.get('ours'))} | {bu.fmt(ms.get('ours_autotune'))} | "
            f"{bu.fmt(ms.get('conv'))} | {bu.fmt(ms.get('conv_benchmark'))} | {bu.fmt(ms.get('matmul'))} | "
            f"{r['roofline_ms']:.3f} | {r['bound']} | {bu.fmt(r['speedup_vs_conv'], '.2f')} | "
            f"{bu.fmt(r.get('autotune_speedup_vs_conv'), '.2f')} | {bu.fmt(r['speedup_vs_conv_best'], '.2f')} | "
            f"{bu.fmt(r['speedup_vs_matmul'], '.2f')} | {bu.fmt(r['pct_of_roofline'], '.0f')} | "
            f"{bu.fmt(ms.get('fused_ours'))} | {bu.fmt(ms.get('fused_torch'))} | {bu.fmt(r['fused_speedup'], '.2f')} |"
        )
    g = summ["geomean_ms"]
    lines.append(
        f"| **geomean** | {bu.fmt(g['ours'])} | {bu.fmt(g['ours_autotune'])} | {bu.fmt(g['conv'])} | "
        f"{bu.fmt(g['conv_benchmark'])} | {bu.fmt(g['matmul'])} | {bu.fmt(summ['geomean_roofline_ms'])} | | "
        f"**{bu.fmt(summ['geomean_speedup_vs_conv'], '.2f')}** | "
        f"**{bu.fmt(summ['geomean_autotune_speedup_vs_conv'], '.2f')}** | {bu.fmt(summ['geomean_speedup_vs_conv_best'], '.2f')} | "
        f"{bu.fmt(summ['geomean_speedup_vs_matmul'], '.2f')} | {bu.fmt(summ['geomean_pct_of_roofline'], '.0f')} | "
        f"{bu.fmt(g['fused_ours'])} | {bu.fmt(g['fused_torch'])} | **{bu.fmt(summ['geomean_fused_speedup'], '.2f')}** |"
    )
    lines += [
        "",
        f"Slowest against {conv}: {summ['min_speedup_vs_conv_layer']} at {bu.fmt(summ['min_speedup_vs_conv'], '.2f')}×. "
        f"Memory-bound layers ({summ['memory_bound_layers']}): geomean {bu.fmt(summ['memory_bound_geomean_pct_of_roofline'], '.0f', '%')} "
        f"of the roofline. Compute-bound layers ({summ['compute_bound_layers']}): geomean "
        f"{bu.fmt(summ['compute_bound_geomean_pct_of_matmul'], '.0f', '%')} of torch.matmul's throughput. "
        f"Latency-bound layers (roofline under {LATENCY_FLOOR_MS * 1e3:.0f} µs: {summ['latency_bound_layers']}): geomean "
        f"{bu.fmt(summ['latency_bound_geomean_speedup_vs_conv'], '.2f')}× {conv}.",
        "",
        "ms: medians (L2 flushed between calls on CUDA). bm: cudnn.benchmark=True. "
        "tuned: pointwise_cuda.set_autotune(True) (CUDA only). "
        "× X: X's time / ours (above 1 = ours faster). % roofline: roofline time / ours. "
        "fused: bias + residual + ReLU, ours in one call against F.relu(F.conv2d(x, w, b) + r). "
        "⚠: our output failed the check against float64.",
    ]
    if summ["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in summ["errors"].items())]
    return "\n".join(lines) + "\n"


def plots(result, path_stem) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    cfg, env, ceil = result["config"], result["environment"], result["ceilings"]
    cuda = env["device_type"] == "cuda"
    conv = "cuDNN" if cuda else "F.conv2d (CPU)"
    title = f"{cfg['pass']}, {cfg['dtype']}, {cfg['layout']}, batch {cfg['batch']} — {env['device']}"
    recs = [r for r in result["layers"] if r.get("speedup_vs_conv")]
    written = []
    NETS = {"mbv2": "MobileNetV2", "r50": "ResNet-50", "effb0": "EfficientNet-B0", "shfl": "ShuffleNetV1 g=3",
            "reduce": "512->10 reduction"}
    colors = {"mbv2": "tab:blue", "r50": "tab:orange", "effb0": "tab:green", "shfl": "tab:purple", "reduce": "tab:red"}

    # Speedup per layer: horizontal bars, log scale, 1.0 = parity.
    if recs:
        names = [r["layer"]["name"] for r in recs]
        vals = [r["speedup_vs_conv"] for r in recs]
        fig, ax = plt.subplots(figsize=(8, 2.2 + 0.19 * len(recs)))
        ys = range(len(recs))
        ax.barh(ys, vals, color=[colors.get(n.split(":")[0], "gray") for n in names], height=0.7)
        best = [r.get("speedup_vs_conv_best") for r in recs]
        if cuda and any(best):
            ax.plot([v or float("nan") for v in best], ys, "k|", markersize=7, label=f"vs best of {conv} (benchmark on/off)")
        mm = [r.get("speedup_vs_matmul") or float("nan") for r in recs]
        ax.plot(mm, ys, "o", color="black", markersize=3, fillstyle="none", label="vs torch.matmul on the GEMM view")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        for net, color in colors.items():
            if any(n.startswith(net + ":") for n in names):
                ax.barh([0], [0], color=color, label=NETS.get(net, net))
        ax.set_yticks(list(ys))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_ylim(len(recs) - 0.5, -0.5)  # first layer on top, no margins
        ax.set_xlabel(f"speedup: {conv} time / ours (log scale; right of 1 = ours faster)")
        gm = result["summary"]["geomean_speedup_vs_conv"]
        ax.set_title(f"pointwise_cuda vs {conv}: geomean {gm:.2f}x\n{title}", fontsize=9)
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        height = fig.get_size_inches()[1]
        fig.subplots_adjust(bottom=1.0 / height)
        fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=3, frameon=False)
        written.append(path_stem + "-speedup.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    # Roofline: achieved FLOP/s against arithmetic intensity, under the two measured ceilings.
    recs = [r for r in result["layers"] if r["achieved_flop_per_s"]]
    if recs:
        unit, scale = ("TFLOP/s", 1e12) if cuda else ("GFLOP/s", 1e9)
        bw, peak = ceil["copy_bandwidth_bytes_per_s"], ceil["matmul_flop_per_s"]
        xs = [r["intensity"] for r in recs]
        lo, hi = min(xs) / 2, max(max(xs) * 2, 2 * peak / bw)
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        fig, ax = plt.subplots(figsize=(8, 5.5))
        ax.plot(grid, [min(peak, bw * i) / scale for i in grid], color="black", linewidth=1.5,
                label=f"roofline: copy {bw / 1e9:.0f} GB/s, matmul {peak / scale:.1f} {unit}")
        for key, style, label in (("matmul", dict(marker="x", color="gray", linestyle="none", markersize=5), "torch.matmul"),
                                  ("conv", dict(marker="o", color="tab:blue", fillstyle="none", linestyle="none", markersize=5), conv),
                                  ("ours", dict(marker="o", color="tab:red", linestyle="none", markersize=4), "ours")):
            pts = [(r["intensity"], r["achieved_flop_per_s"][key] / scale) for r in recs if key in r["achieved_flop_per_s"]]
            if pts:
                ax.plot(*zip(*pts), label=label, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("arithmetic intensity (FLOP per minimum byte moved)")
        ax.set_ylabel(f"achieved {unit}")
        ax.set_title(f"Roofline, one point per layer\n{title}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(which="both", alpha=0.3)
        fig.tight_layout()
        written.append(path_stem + "-roofline.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--device", default=bu.default_device())
    p.add_argument("--dtype", default="fp32", choices=list(bu.DTYPES))
    p.add_argument("--layout", default="nchw", choices=list(bu.LAYOUTS))
    p.add_argument("--pass", dest="pass_", default="forward", choices=PASSES)
    p.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 1 on CPU (smoke: 1)")
    p.add_argument("--layers", default=None, help="comma-separated substrings of layer names, e.g. 'r50:,reduce'")
    p.add_argument("--smoke", action="store_true", help="3 small layers, batch 1, few repeats, small ceilings (CI)")
    p.add_argument("--out", default=None, help="output folder (default: bench/results/<device>/)")
    p.add_argument("--warmup", type=int, default=None, help="calls before timing (default: 5 CUDA, 2 CPU, 1 smoke)")
    p.add_argument("--repeat", type=int, default=None, help="timed calls per median (default: 30 CUDA, 10 CPU, 3 smoke)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds of all methods, median of their medians (default: 1 CUDA, 3 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failing methods")
    args = p.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    if args.batch is None:
        args.batch = 1 if args.smoke or not cuda else 32
    if args.warmup is None:
        args.warmup = 1 if args.smoke else (5 if cuda else 2)
    if args.repeat is None:
        args.repeat = 3 if args.smoke else (30 if cuda else 10)
    if args.rounds is None:
        args.rounds = 1 if cuda or args.smoke else 3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = bu.prepare_device(args.device, args.threads)
    dtype, _ = bu.DTYPES[args.dtype]
    flags = bu.pin_precision(args.dtype)
    allocator = bu.pin_allocator()
    memory_format = bu.LAYOUTS[args.layout]
    element_size = torch.empty((), dtype=dtype).element_size()
    path_stem = bu.output_stem(args.out, "layers", device, args.dtype, args.layout, args.pass_, args.batch)

    layers = suite(smoke=args.smoke, only=args.layers)
    if not layers:
        print(f"no layer matches --layers {args.layers!r}", file=sys.stderr)
        return 2
    started, load_start = time.time(), bu.loadavg()
    if device.type == "cuda":
        copy_bytes, matmul_n = (64 << 20, 2048) if args.smoke else (1 << 30, 8192)
    else:
        copy_bytes, matmul_n = (32 << 20, 512) if args.smoke else (256 << 20, 2048)
    ceilings = bu.measure_ceilings(device, dtype, copy_bytes, matmul_n, warmup=2 if args.smoke else 3,
                                repeat=3 if args.smoke else 10, rounds=args.rounds)
    print(f"{bu.device_name(device)}: copy {ceilings['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"matmul {ceilings['matmul_flop_per_s'] / 1e12:.2f} TFLOP/s ({args.dtype})", file=sys.stderr)

    records = []
    progress = bu.Progress(len(layers), f"{args.pass_} {args.dtype} {args.layout}")
    for layer in layers:
        records.append(bench_layer(layer, args, device, dtype, memory_format, ceilings, element_size))
        r = records[-1]
        progress.update(f"{layer.name} {bu.fmt(r['speedup_vs_conv'], '.2f', 'x')}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    progress.close()

    result = {
        "kind": "layers",
        "config": {"device": str(device), "dtype": args.dtype, "torch_dtype": str(dtype), "layout": args.layout,
                   "pass": args.pass_, "batch": args.batch, "smoke": args.smoke, "layers_filter": args.layers,
                   "warmup": args.warmup, "repeat": args.repeat, "rounds": args.rounds, "precision_flags": flags,
                   "mallopt": allocator, "timer": "pointwise_cuda.timing.median_ms"},
        "environment": bu.environment(device),
        "ceilings": ceilings,
        "summary": summarize(records),
        "layers": records,
        "seconds": time.time() - started,
        "loadavg_1min": {"start": load_start, "end": bu.loadavg()},
    }
    bu.write_json(path_stem + ".json", result)
    md = markdown(result)
    with open(path_stem + ".md", "w") as f:
        f.write(md)
    written = [path_stem + ".json", path_stem + ".md"] + ([] if args.no_plots else plots(result, path_stem))
    s = result["summary"]
    print(f"geomean speedup vs F.conv2d {bu.fmt(s['geomean_speedup_vs_conv'], '.2f')}x "
          f"(slowest {s['min_speedup_vs_conv_layer']} {bu.fmt(s['min_speedup_vs_conv'], '.2f')}x), "
          f"fused {bu.fmt(s['geomean_fused_speedup'], '.2f')}x, {bu.fmt(s['geomean_pct_of_roofline'], '.0f')}% of roofline; "
          f"{len(records)} layers in {result['seconds']:.0f} s")
    print("wrote " + ", ".join(written))
    failed = s["checks_failed"] or [k for k, v in s["errors"].items() if "ours" in v or "fused_ours" in v]
    if failed:
        print(f"FAILED: our op failed or was wrong on {', '.join(sorted(set(failed)))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
