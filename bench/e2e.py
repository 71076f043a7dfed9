"""End to end: torchvision models against what this package makes of them, and against torch.compile.

    python bench/e2e.py --device cpu --threads 2 --batch 4 --dtype bf16 --layout channels_last
    python bench/e2e.py --device cuda --dtype bf16 --layout channels_last --batch 32

For each model (weights=None, random init with calibrated BatchNorm statistics, 224x224 random
images), inference (eval mode, no_grad) of each variant, in one run:
  torchvision           the model as torchvision builds it, eager
  converted             pointwise_cuda.convert(model): every 1x1 conv ours
  fused                 pointwise_cuda.convert(model, fuse=True): BatchNorm folded, adds and activations
                        in our epilogue
  compiled_torchvision  torch.compile(model)
  compiled_fused        torch.compile(fused)
  frozen_torchvision    torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(model))) (CPU)
and one training step (forward, cross-entropy, backward, SGD step) of torchvision's and the converted
model; each the median time of the step from pointwise_cuda.timing.median_ms. Every variant's eval
output is checked against the torchvision model's in float64 before it is timed. On CUDA the eager
steps are also timed "tuned": torch.backends.cudnn.benchmark and pointwise_cuda.set_autotune on.
Writes <out>/e2e-<device>-<dtype>-<layout>-b<batch>.{json,md}.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil as bu  # noqa: E402

import pointwise_cuda as pw  # noqa: E402
from pointwise_cuda.timing import median_ms  # noqa: E402

MODELS = ("mobilenet_v2", "resnet50", "efficientnet_b0", "shufflenet_v2_x1_0")
# Whole network, eval mode, against the torchvision model in float64. bf16 rounds every layer's
# output, so the torchvision model itself is about 0.1 off in bf16, and folding BatchNorm into
# weights rounded to bf16 (fused, frozen_torchvision) adds 10-30% to that: a variant passes within
# TOLERANCE or within ERROR_SLACK times the torchvision model's own error in the same dtype.
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 1e-1, "fp16": 2e-2}
ERROR_SLACK = 1.5
INFERENCE = ("torchvision", "converted", "fused", "compiled_torchvision", "compiled_fused", "frozen_torchvision")


def build(name, device, dtype, memory_format):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    return model.to(device=device, dtype=dtype, memory_format=memory_format)


def calibrate_batchnorm(model, x):
    """Running statistics from a few batches, as a trained model has: with the init's mean 0 / var 1, an
    eval-mode forward of a random-init network lets activations drift into denormals, which on CPU
    run orders of magnitude slower and would time the FPU's slow path instead of the convolutions."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    model.eval()


def model_flops(name, batch, image_size) -> int:
    """FLOPs of one inference: twice the multiply-adds of every convolution and matrix product, as
    torch.utils.flop_counter counts them (no element-wise work), on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(name, "meta", torch.float32, torch.contiguous_format).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty(batch, 3, image_size, image_size, device="meta"))
    return counter.get_total_flops()


def matmul_rate(device, dtype, args) -> dict:
    """torch.matmul's measured throughput in the run's dtype, or in float32 where that is faster (a CPU
    without 16-bit arithmetic multiplies faster in float32): the rate each model's FLOPs are put
    against. A reference, not a bound: oneDNN's convolutions can run faster than torch.matmul."""
    n = 8192 if device.type == "cuda" else 2048
    by_dtype = {str(dtype): bu.matmul_ceiling(device, dtype, n, warmup=3, repeat=10, rounds=args.rounds)}
    if dtype != torch.float32:
        by_dtype[str(torch.float32)] = bu.matmul_ceiling(device, torch.float32, n, warmup=3, repeat=10, rounds=args.rounds)
    return {"matmul": by_dtype, "flop_per_s": max(m["matmul_flop_per_s"] for m in by_dtype.values())}


def inference_step(model, x):
    model.eval()

    def step():
        with torch.no_grad():
            return model(x)

    return step


def training_step(model, x, target):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return loss

    return step


def tuned(step):
    """The step with both autotuners on (cuDNN's for every convolution cuDNN runs, ours for the 1x1s)."""

    def run():
        torch.backends.cudnn.benchmark = True
        pw.set_autotune(True)
        try:
            return step()
        finally:
            torch.backends.cudnn.benchmark = False
            pw.set_autotune(False)

    return run


def inference_variant(which, base, device):
    """The model `which` names (INFERENCE), built from the calibrated torchvision model `base`."""
    import warnings

    if which == "torchvision":
        return base
    if which == "converted":
        return pw.convert(base)
    if which == "fused":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report's warning: the JSON records what was fused
            return pw.convert(base, fuse=True)
    if which == "compiled_torchvision":
        return torch.compile(base)
    if which == "compiled_fused":
        return torch.compile(inference_variant("fused", base, device))
    if which == "frozen_torchvision":
        if device.type == "cuda":
            raise NotImplementedError("torch.jit.optimize_for_inference is a CPU path here")
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(base.eval())))
    raise ValueError(which)


def bench_model(name, args, device, dtype, memory_format, rate) -> dict:
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).to(dtype)
    x = x.contiguous(memory_format=memory_format)
    base = build(name, device, dtype, memory_format)
    calibrate_batchnorm(base, x)
    base.eval()
    with torch.no_grad():  # the float64 reference: the same weights and statistics, the same images
        import copy

        ref = copy.deepcopy(base).double()(x.double()).double()
    target = torch.randint(0, 1000, (args.batch,), device=device)

    flops = model_flops(name, args.batch, args.image_size)
    rec = {"model": name, "ms": {}, "rel_err": {}, "errors": {}, "check_ok": True,
           "flops": flops, "matmul_rate_ms": flops / rate["flop_per_s"] * 1e3}
    steps = {}
    for which in args.variants:
        try:
            model = inference_variant(which, base, device)
            with torch.no_grad():
                out = model(x).double()
            err = ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        except Exception as e:  # noqa: BLE001 (recorded: the variant is not timed)
            rec["errors"][f"inference/{which}"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            continue
        rec["rel_err"][which] = err
        rec["check_ok"] &= err <= max(TOLERANCE[args.dtype], ERROR_SLACK * rec["rel_err"].get("torchvision", 0.0))
        if which == "converted":
            rec["converted_layers"] = sum(isinstance(m, pw.PointwiseConv2d) for m in model.modules())
        if which == "fused":
            rec["fusion"] = {"fused": len(model.fusion_report.fused), "not_fused": model.fusion_report.not_fused}
        steps[("inference", which)] = inference_step(model, x)
    if not args.inference_only:
        # Separate copies for training, so the steps that change the weights leave the eval copies alone.
        base_t = build(name, device, dtype, memory_format)
        conv_t = pw.convert(base_t)
        steps[("train_step", "torchvision")] = training_step(base_t, x, target)
        steps[("train_step", "converted")] = training_step(conv_t, x, target)
    if args.tuned:
        steps.update({(what, which + "_tuned"): tuned(step) for (what, which), step in list(steps.items())
                      if which in ("torchvision", "converted", "fused")})
    rounds, faults = {}, {}
    for _ in range(args.rounds):  # interleaved, so that noise lands on every variant
        for key, step in steps.items():
            if "/".join(key) in rec["errors"]:
                continue
            try:
                rounds.setdefault(key, []).append(median_ms(step, device, warmup=args.warmup, repeat=args.repeat))
                faults_before = minor_faults()  # of one more call, warm: what every call pays
                step()
                faults.setdefault(key, []).append(minor_faults() - faults_before)
            except Exception as e:  # noqa: BLE001 (recorded; the run fails)
                rec["errors"]["/".join(key)] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    for (what, which), times in rounds.items():
        rec["ms"].setdefault(what, {})[which] = statistics.median(times)
        rec.setdefault("ms_rounds", {}).setdefault(what, {})[which] = times
        rec.setdefault("minor_faults_per_call", {}).setdefault(what, {})[which] = statistics.median(faults[what, which])
    for what, ms in rec["ms"].items():
        base_ms = ms.get("torchvision")
        rec.setdefault("speedup", {})[what] = {k: base_ms / v for k, v in ms.items() if base_ms and k != "torchvision"}
    return rec


def minor_faults() -> int:
    """Minor page faults of this process so far, all threads: pages its allocator took from the kernel
    afresh, each zeroed by the kernel on first touch. Until glibc's adaptive thresholds have risen, its
    malloc gives large freed blocks back to the kernel (munmap, trim), so a model that frees and
    reallocates its activations can pay this at every call: time no kernel of the model spends."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _worst_spread(rec):
    """The largest (max - min) / median of a variant's round medians, or None with one round."""
    spreads = [(max(t) - min(t)) / statistics.median(t) for by_variant in rec["ms_rounds"].values()
               for t in by_variant.values() if len(t) > 1]
    return max(spreads) if spreads else None


def markdown(result) -> str:
    cfg, env = result["config"], result["environment"]
    load = result.get("loadavg_1min") or {}
    load = "" if env["device_type"] == "cuda" else (
        f" (1-minute load average {load.get('start')} at the start, {load.get('end')} at the end, on {env.get('cpu_count')} CPUs)")
    device = env["device"] if env["device_type"] == "cuda" else f"{env['device']}, {env.get('cpu_isa_tier')}"
    variants = [v for v in INFERENCE if any(v in r["ms"].get("inference", {}) for r in result["models"])]
    lines = [
        f"### end to end · {cfg['dtype']} · {cfg['layout']} · batch {cfg['batch']} · {device}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, commit `{(env['commit'] or 'none')[:12]}`"
        f"{' (dirty)' if env['dirty'] else ''}, {env['threads']} CPU threads{load}, {cfg['image_size']}x{cfg['image_size']} images.",
        "",
        "Inference, ms (× torchvision eager):",
        "",
        "| model | " + " | ".join(variants) + " | at matmul's rate |",
        "|---|" + "---:|" * (len(variants) + 1),
    ]
    for r in result["models"]:
        ms, x = r["ms"].get("inference", {}), r.get("speedup", {}).get("inference", {})
        cells = [f"{bu.fmt(ms.get(v), '.2f')}" + (f" ({x[v]:.2f}×)" if v in x else "") for v in variants]
        at_rate = r["matmul_rate_ms"]
        cells.append(f"{at_rate:.2f}" + (f" ({ms['torchvision'] / at_rate:.2f}×)" if "torchvision" in ms else ""))
        lines.append(f"| {r['model']}{'' if r['check_ok'] else ' ⚠'} | " + " | ".join(cells) + " |")
    if any("train_step" in r["ms"] for r in result["models"]):
        lines += ["", "Training step (forward, cross-entropy, backward, SGD), ms:", "",
                  "| model | torchvision | converted | × |", "|---|---:|---:|---:|"]
        for r in result["models"]:
            ms = r["ms"].get("train_step", {})
            lines.append(f"| {r['model']} | {bu.fmt(ms.get('torchvision'), '.2f')} | {bu.fmt(ms.get('converted'), '.2f')} | "
                         f"{bu.fmt(r.get('speedup', {}).get('train_step', {}).get('converted'), '.2f')} |")
    if env["device_type"] == "cpu":
        faults = "; ".join(f"{r['model']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["minor_faults_per_call"].get("inference", {}).items())
                           for r in result["models"] if r.get("minor_faults_per_call"))
        allocator = ", ".join(f"{k}={v}" for k, v in env.get("allocator_env", {}).items()) or "none set"
        lines += ["", f"Minor page faults per inference call (pages the allocator took from the kernel afresh, zeroed on "
                  f"first touch; allocator variables: {allocator}): {faults}."]
    errors = "; ".join(f"{r['model']}: " + ", ".join(f"{k} {v:.1e}" for k, v in r["rel_err"].items()) for r in result["models"])
    spreads = {r["model"]: _worst_spread(r) for r in result["models"] if r.get("ms_rounds")}
    if any(s is not None for s in spreads.values()):
        lines += ["", f"Spread between the {cfg['rounds']} interleaved rounds (max - min of the rounds' medians over "
                  "their median), the worst variant of each model: "
                  + ", ".join(f"{m} {s:.0%}" for m, s in spreads.items() if s is not None) + "."]
    flops = ", ".join(f"{r['model']} {r['flops'] / 1e9:.1f} G" for r in result["models"])
    rate = result["matmul_rate"]
    products = ", ".join(f"{k.removeprefix('torch.')} n={v['matmul_n']}" for k, v in rate["matmul"].items())
    lines += [
        "",
        "ms: medians of the whole step. ×: torchvision eager time / the variant's (above 1 = faster). "
        "fused: convert(model, fuse=True); compiled_*: torch.compile (Inductor); frozen_torchvision: "
        "torch.jit.freeze + optimize_for_inference. ⚠: an output over the tolerance. "
        f"at matmul's rate: the model's convolution and matrix-product FLOPs ({flops}; torch.utils.flop_counter) at "
        f"torch.matmul's measured {rate['flop_per_s'] / 1e9:.0f} GFLOP/s ({products}; the faster), a time no variant "
        "ran: how compute-bound the model is, not a bound (oneDNN's convolutions can beat torch.matmul's rate).",
        "",
        f"Relative error of each variant's eval output against the torchvision model in float64: {errors}.",
    ]
    errors = {r["model"]: r["errors"] for r in result["models"] if r["errors"]}
    if errors:
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in errors.items())]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=bu.default_device())
    p.add_argument("--dtype", default="fp32", choices=list(bu.DTYPES))
    p.add_argument("--layout", default="nchw", choices=list(bu.LAYOUTS))
    p.add_argument("--batch", type=int, default=None, help="default: 32 on CUDA, 2 on CPU")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--inference-only", action="store_true")
    p.add_argument("--variants", default=",".join(INFERENCE), help=f"inference variants, from {', '.join(INFERENCE)}")
    p.add_argument("--no-tuned", dest="tuned", action="store_false",
                   help="skip the tuned timings (cudnn.benchmark + pointwise_cuda.set_autotune; CUDA only)")
    p.add_argument("--out", default=None, help="output folder (default: bench/results/<device>/)")
    p.add_argument("--warmup", type=int, default=None, help="default: 5 CUDA, 3 CPU (oneDNN builds its kernels in the first calls)")
    p.add_argument("--repeat", type=int, default=None, help="default: 20 CUDA, 5 CPU")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 1 CUDA, 2 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    args = p.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    args.batch = args.batch or (32 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 3)
    args.repeat = args.repeat or (20 if cuda else 5)
    args.rounds = args.rounds or (1 if cuda else 2)
    args.tuned = args.tuned and cuda  # both tuners act on CUDA kernels alone
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(INFERENCE)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(INFERENCE)}")
    args.variants = [v for v in INFERENCE if v in args.variants]  # torchvision first: the others' errors are judged by it
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = bu.prepare_device(args.device, args.threads)
    dtype, _ = bu.DTYPES[args.dtype]
    flags = bu.pin_precision(args.dtype)
    torch.backends.cudnn.benchmark = False
    memory_format = bu.LAYOUTS[args.layout]
    path_stem = bu.output_stem(args.out, "e2e", device, args.dtype, args.layout, None, args.batch)

    started, load_start = time.time(), bu.loadavg()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rate = matmul_rate(device, dtype, args)
    progress = bu.Progress(len(models), f"e2e {args.dtype} {args.layout}", unit="model")
    records = []
    for name in models:
        records.append(bench_model(name, args, device, dtype, memory_format, rate))
        r = records[-1]
        progress.update(f"{name} fused {bu.fmt(r.get('speedup', {}).get('inference', {}).get('fused'), '.2f', 'x')}")
    progress.close()
    result = {
        "kind": "e2e",
        "config": {"device": str(device), "dtype": args.dtype, "layout": args.layout, "batch": args.batch,
                   "image_size": args.image_size, "warmup": args.warmup, "repeat": args.repeat, "rounds": args.rounds,
                   "precision_flags": flags, "tuned": args.tuned, "variants": args.variants,
                   "timer": "pointwise_cuda.timing.median_ms"},
        "environment": bu.environment(device),
        "matmul_rate": rate,
        "models": records,
        "seconds": time.time() - started,
        "loadavg_1min": {"start": load_start, "end": bu.loadavg()},
    }
    bu.write_json(path_stem + ".json", result)
    md = markdown(result)
    with open(path_stem + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {path_stem}.json, {path_stem}.md")
    bad = [r["model"] for r in records if r["errors"] or not r["check_ok"]]
    if bad:
        print(f"FAILED: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
