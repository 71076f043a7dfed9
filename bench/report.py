"""The README's performance tables, generated from the committed results under bench/results/ (never typed).

    python bench/report.py                          # prints the markdown
    python bench/report.py --update-readme README.md  # replaces the text between the bench markers
    python bench/report.py --check README.md          # exits 1 if the README's tables are out of date

The README holds the block between `<!-- bench:begin -->` and `<!-- bench:end -->`.
Smoke runs (run.py --smoke) are left out.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = {
    "pass": ["forward", "backward", "fwdbwd"],
    "dtype": ["fp32", "tf32", "bf16", "fp16"],
    "layout": ["nchw", "channels_last"],
}


def load(results_dir):
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "*.json"), recursive=True)):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        if data.get("kind") in ("layers", "e2e") and not data.get("config", {}).get("smoke"):
            data["_path"] = path
            runs.append(data)
    return runs


def _rank(run):
    cfg, env = run["config"], run["environment"]

    def pos(key, value):
        return ORDER[key].index(value) if value in ORDER[key] else len(ORDER[key])

    return (env["device_type"] != "cuda", env["device"], pos("pass", cfg.get("pass", "forward")),
            pos("dtype", cfg["dtype"]), pos("layout", cfg["layout"]), cfg["batch"])


def _device(run):
    """The device as the tables name it; a CPU with its ISA tier (results of different CPUs never share a row)."""
    env = run["environment"]
    if env["device_type"] == "cuda":
        return env["device"]
    # Results from before the tier was recorded lie in a folder named for it (cpu-<model>-<tier>).
    tier = env.get("cpu_isa_tier") or os.path.basename(os.path.dirname(run["_path"])).rsplit("-", 1)[-1]
    # Before the family and model numbers were recorded, one CPU name could cover several generations.
    unknown = "" if "cpu_generation" in env else " (family not recorded)"
    return f"{env['device']}{unknown}, {tier} ({env['threads']} threads)"


def _commit(env):
    c = (env.get("commit") or "none")[:8]
    return f"`{c}`" + (" (dirty)" if env.get("dirty") else "")


def _link(run, base_dir):
    md = os.path.splitext(run["_path"])[0] + ".md"
    return f"[table]({os.path.relpath(md, base_dir).replace(os.sep, '/')})" if os.path.exists(md) else ""


def layers_table(runs, base_dir):
    lines = [
        "| device | pass | dtype | layout | batch | layers | × F.conv2d (geomean) | slowest layer | × best cuDNN | "
        "autotuned × F.conv2d | % of roofline | memory-bound: % of roofline | compute-bound: % of matmul | "
        "fused epilogue × | commit | |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in sorted(runs, key=_rank):
        cfg, env, s = run["config"], run["environment"], run["summary"]
        cuda = env["device_type"] == "cuda"
        device = _device(run)
        n_layers = f"{s['layers']} (filter {cfg['layers_filter']!r})" if cfg.get("layers_filter") else s["layers"]
        slowest = f"{s['min_speedup_vs_conv_layer']} {bu.fmt(s['min_speedup_vs_conv'], '.2f')}×" if s["min_speedup_vs_conv_layer"] else "—"
        lines.append(
            f"| {device} | "
            f"{cfg['pass']} | {cfg['dtype']} | {cfg['layout']} | {cfg['batch']} | {n_layers} | "
            f"**{bu.fmt(s['geomean_speedup_vs_conv'], '.2f', '×')}** | {slowest} | "
            f"{bu.fmt(s['geomean_speedup_vs_conv_best'], '.2f', '×') if cuda else '—'} | "
            f"{bu.fmt(s.get('geomean_autotune_speedup_vs_conv'), '.2f', '×')} | "
            f"{bu.fmt(s['geomean_pct_of_roofline'], '.0f', '%')} | "
            f"{bu.fmt(s['memory_bound_geomean_pct_of_roofline'], '.0f', '%')} ({s['memory_bound_layers']}) | "
            f"{bu.fmt(s['compute_bound_geomean_pct_of_matmul'], '.0f', '%')} ({s['compute_bound_layers']}) | "
            f"{bu.fmt(s['geomean_fused_speedup'], '.2f', '×')} | {_commit(env)} | {_link(run, base_dir)} |"
        )
    return lines


def _speedups(record, what):
    """{variant: torchvision eager time / the variant's} of a model's record, for one step."""
    if "speedup" in record:
        return record["speedup"].get(what, {})
    ms = record["ms"].get(what, {})  # records from before the variants: only 'converted'
    return {"converted": ms["speedup"]} if "speedup" in ms else {}


def e2e_table(runs, base_dir):
    lines = [
        "| device | model | dtype | layout | batch | inference ms, torchvision | × converted | × fused | "
        "× compiled torchvision | × compiled fused | × frozen torchvision | × at matmul's rate | "
        "train step × converted | commit | |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in sorted(runs, key=_rank):
        cfg, env = run["config"], run["environment"]
        for r in run["models"]:
            inf, tr = _speedups(r, "inference"), _speedups(r, "train_step")
            cells = [bu.fmt(inf.get(v), ".2f", "×") for v in
                     ("converted", "fused", "compiled_torchvision", "compiled_fused", "frozen_torchvision")]
            cells[1] = f"**{cells[1]}**"
            eager_ms, at_rate_ms = r["ms"].get("inference", {}).get("torchvision"), r.get("matmul_rate_ms")
            cells.append(bu.fmt(eager_ms / at_rate_ms if eager_ms and at_rate_ms else None, ".2f", "×"))
            lines.append(
                f"| {_device(run)} | {r['model']}{'' if r.get('check_ok', True) else ' ⚠'} | {cfg['dtype']} | "
                f"{cfg['layout']} | {cfg['batch']} | {bu.fmt(r['ms'].get('inference', {}).get('torchvision'), '.2f')} | "
                + " | ".join(cells) + f" | {bu.fmt(tr.get('converted'), '.2f', '×')} | {_commit(env)} | {_link(run, base_dir)} |"
            )
    return lines


def report(results_dir, base_dir) -> str:
    runs = load(results_dir)
    layer_runs = [r for r in runs if r["kind"] == "layers"]
    e2e_runs = [r for r in runs if r["kind"] == "e2e"]
    lines = ["<!-- generated by `python bench/report.py` from bench/results/; do not edit by hand -->", ""]
    if not runs:
        return "\n".join(lines + ["No results committed under bench/results/ yet."])
    if layer_runs:
        lines += [
            "**1x1 layers of MobileNetV2, ResNet-50, EfficientNet-B0, ShuffleNetV1 (g=3) and the 512→10 reduction** "
            "(one row per run; × = the baseline's time / ours, above 1 = ours faster; geomeans over the layers; "
            "autotuned: with `pointwise_cuda.set_autotune(True)`, CUDA only; "
            "roofline = max(FLOPs / measured matmul peak, minimum bytes / measured copy bandwidth); "
            "the fused epilogue is conv + bias + residual + ReLU in one call against PyTorch's unfused sequence):",
            "",
        ] + layers_table(layer_runs, base_dir) + [""]
    if e2e_runs:
        lines += ["**End to end**, inference of torchvision models (× = torchvision eager's time / the variant's; "
                  "converted: `pointwise_cuda.convert(model)`; fused: `convert(model, fuse=True)`, BatchNorm folded "
                  "and adds and activations in our epilogue; compiled: `torch.compile`; frozen: "
                  "`torch.jit.freeze` + `optimize_for_inference`, CPU; at matmul's rate: torchvision's time over that of "
                  "the model's convolution and matrix-product FLOPs at torch.matmul's measured throughput, how "
                  "compute-bound the model is and not a bound, recorded since 2026-12-07), and a training step of the converted model:", ""]
        lines += e2e_table(e2e_runs, base_dir) + [""]
    lines.append("Times are medians from `pointwise_cuda.timing.median_ms` (L2 flushed between calls on CUDA). "
                 "See bench/README.md for the method and bench/results/ for every figure.")
    return "\n".join(lines)


def splice(text: str, block: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"the README needs the markers {BEGIN} and {END}, in that order")
    return text[: start + len(BEGIN)] + "\n" + block.rstrip("\n") + "\n" + text[end:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=bu.RESULTS_DIR, help="folder of result JSON files (default: bench/results)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update-readme", metavar="README", help="replace the block between the bench markers")
    g.add_argument("--check", metavar="README", help="exit 1 if the block between the markers is out of date")
    args = p.parse_args(argv)
    readme = args.update_readme or args.check
    base_dir = os.path.dirname(os.path.abspath(readme)) if readme else os.getcwd()
    block = report(args.results, base_dir)
    if not readme:
        print(block)
        return 0
    with open(readme) as f:
        text = f.read()
    try:
        new = splice(text, block)
    except ValueError as e:
        print(f"{readme}: {e}", file=sys.stderr)
        return 1
    if args.check:
        if new != text:
            print(f"{readme}: the performance tables are out of date; run python bench/report.py --update-readme {readme}",
                  file=sys.stderr)
            return 1
        print(f"{readme}: up to date")
        return 0
    if new != text:
        with open(readme, "w") as f:
            f.write(new)
        print(f"updated {readme}")
    else:
        print(f"{readme}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
