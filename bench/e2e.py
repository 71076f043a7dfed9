"""End to end: torchvision MobileNetV2 and ResNet-50 after pointwise_cuda.convert() against the unconverted model.

    python bench/e2e.py --device cuda --dtype bf16 --layout channels_last --batch 32
    python bench/e2e.py --device cpu --batch 2

For each model (weights=None, random init, 224x224 random images): inference (eval mode, no_grad)
and one training step (forward, cross-entropy, backward, SGD step), each the median time of the
step from pointwise_cuda.timing.median_ms. The converted model is a deep copy with the same
weights; its eval output is checked against the original's before timing. On CUDA each step is
also timed "tuned": torch.backends.cudnn.benchmark and pointwise_cuda.set_autotune both on, so
that each side runs the kernels its own tuner picks (the warm-up calls tune).
Writes <out>/e2e-<device>-<dtype>-<layout>-b<batch>.{json,md}.
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
from pointwise_cuda.timing import median_ms  # noqa: E402

MODELS = ("mobilenet_v2", "resnet50")
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2, "fp16": 1e-2}  # whole network, eval mode, vs the original


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


def bench_model(name, args, device, dtype, memory_format) -> dict:
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device).to(dtype)
    x = x.contiguous(memory_format=memory_format)
    base = build(name, device, dtype, memory_format)
    calibrate_batchnorm(base, x)
    converted = pw.convert(base)  # a deep copy: the same weights and statistics
    n_converted = sum(isinstance(m, pw.PointwiseConv2d) for m in converted.modules())
    target = torch.randint(0, 1000, (args.batch,), device=device)

    rec = {"model": name, "converted_layers": n_converted, "ms": {}, "errors": {}}
    base.eval(), converted.eval()
    with torch.no_grad():
        ref = base(x).double()
        rec["rel_err"] = ((converted(x).double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        if args.tuned:
            out = tuned(lambda: converted(x))().double()
            rec["rel_err_tuned"] = ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    rec["check_ok"] = max(rec["rel_err"], rec.get("rel_err_tuned", 0.0)) <= TOLERANCE[args.dtype]

    steps = {
        ("inference", "torchvision"): inference_step(base, x),
        ("inference", "converted"): inference_step(converted, x),
    }
    if not args.inference_only:
        # Separate copies for training, so the steps that change the weights leave the eval copies alone.
        base_t = build(name, device, dtype, memory_format)
        conv_t = pw.convert(base_t)
        steps[("train_step", "torchvision")] = training_step(base_t, x, target)
        steps[("train_step", "converted")] = training_step(conv_t, x, target)
    if args.tuned:
        steps.update({(what, which + "_tuned"): tuned(step) for (what, which), step in list(steps.items())})
    rounds = {}
    for _ in range(args.rounds):  # interleaved, so that noise lands on both sides
        for key, step in steps.items():
            if key in rec["errors"]:
                continue
            try:
                rounds.setdefault(key, []).append(median_ms(step, device, warmup=args.warmup, repeat=args.repeat))
            except Exception as e:  # noqa: BLE001 (recorded; the run fails)
                rec["errors"]["/".join(key)] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    for (what, which), times in rounds.items():
        rec["ms"].setdefault(what, {})[which] = statistics.median(times)
    for what, ms in rec["ms"].items():
        if "torchvision" in ms and "converted" in ms:
            ms["speedup"] = ms["torchvision"] / ms["converted"]
        if "torchvision_tuned" in ms and "converted_tuned" in ms:
            ms["speedup_tuned"] = ms["torchvision_tuned"] / ms["converted_tuned"]
    return rec


def markdown(result) -> str:
    cfg, env = result["config"], result["environment"]
    load = result.get("loadavg_1min") or {}
    load = "" if env["device_type"] == "cuda" else (
        f" (1-minute load average {load.get('start')} at the start, {load.get('end')} at the end, on {env.get('cpu_count')} CPUs)")
    lines = [
        f"### end to end · {cfg['dtype']} · {cfg['layout']} · batch {cfg['batch']} · {env['device']}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, commit `{(env['commit'] or 'none')[:12]}`"
        f"{' (dirty)' if env['dirty'] else ''}, {env['threads']} CPU threads{load}, {cfg['image_size']}x{cfg['image_size']} images.",
        "",
        "| model | 1x1 convs converted | step | ms torchvision | ms converted | × | "
        "ms torchvision tuned | ms converted tuned | × tuned |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["models"]:
        for what in ("inference", "train_step"):
            ms = r["ms"].get(what, {})
            lines.append(
                f"| {r['model']}{'' if r['check_ok'] else ' ⚠'} | {r['converted_layers']} | {what} | "
                f"{bu.fmt(ms.get('torchvision'), '.2f')} | {bu.fmt(ms.get('converted'), '.2f')} | "
                f"{bu.fmt(ms.get('speedup'), '.2f')} | {bu.fmt(ms.get('torchvision_tuned'), '.2f')} | "
                f"{bu.fmt(ms.get('converted_tuned'), '.2f')} | {bu.fmt(ms.get('speedup_tuned'), '.2f')} |"
            )
    errors = ", ".join(f"{r['model']} {r['rel_err']:.1e}" + (f" (tuned {r['rel_err_tuned']:.1e})" if "rel_err_tuned" in r else "")
                       for r in result["models"])
    lines += [
        "",
        "ms: medians of the whole step. ×: torchvision time / converted time (above 1 = converted faster). "
        "train_step: forward, cross-entropy, backward and an SGD step. tuned: cudnn.benchmark and "
        "pointwise_cuda.set_autotune on (CUDA only). ⚠: over the tolerance.",
        "",
        f"Relative error of the converted model's eval output against the original's: {errors}.",
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
    progress = bu.Progress(len(models), f"e2e {args.dtype} {args.layout}", unit="model")
    records = []
    for name in models:
        records.append(bench_model(name, args, device, dtype, memory_format))
        r = records[-1]
        progress.update(f"{name} inference {bu.fmt(r['ms'].get('inference', {}).get('speedup'), '.2f', 'x')}")
    progress.close()
    result = {
        "kind": "e2e",
        "config": {"device": str(device), "dtype": args.dtype, "layout": args.layout, "batch": args.batch,
                   "image_size": args.image_size, "warmup": args.warmup, "repeat": args.repeat, "rounds": args.rounds,
                   "precision_flags": flags, "tuned": args.tuned, "timer": "pointwise_cuda.timing.median_ms"},
        "environment": bu.environment(device),
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
