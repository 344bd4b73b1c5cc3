"""Training-step throughput and peak memory: our MobileNet V1 against timm's, same loop.

Each measurement runs in a fresh process (clean peak-RSS), models alternate (ours, timm,
ours, timm, ...) so that load from other processes hits both alike, and the best of the
repeats is kept. The loop: forward, cross-entropy, backward, ``RMSpropTF`` step (the paper
recipe), batch 32. ``pipeline`` rows feed the same step from Imagenette JPEGs (decode ->
random resized crop -> flip in DataLoader workers with per-sample seeds, idle-priority
workers and a prefetch of 4 batches each, uint8 batches normalized in the step, as the
trainer does) instead of synthetic tensors; their warm-up first drains the batches the
workers queued while the model was being built, and their throughput is images over the
wall time of all the measured steps (a median would hide the steps that wait for data).

nice python benchmarks/train/train_throughput.py [--steps 8] [--repeats 2] [--imagenette DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS, ROOT

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing, float_input
from mobilenet_v1.train.accel import accelerate
from mobilenet_v1.train.loaders import PREFETCH_FACTOR
from mobilenet_v1.train.optim import build_optimizer

BATCH = 32


def build(impl: str, alpha: float) -> torch.nn.Module:
    if impl == "ours":
        return accelerate(mobilenet_v1(alpha=alpha, num_classes=1000))  # as the trainer runs it
    from timm.models.efficientnet import _gen_mobilenet_v1

    # timm registers only mobilenetv1_100/_125; its generator takes any channel multiplier.
    return _gen_mobilenet_v1("mobilenetv1_100", alpha, num_classes=1000)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_batches(resolution: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, resolution, resolution, generator=gen)
    y = torch.randint(0, 1000, (BATCH,), generator=gen)
    while True:
        yield x, y


def jpeg_batches(resolution: int, imagenette: Path, workers: int, worker_nice: int, worker_idle: bool):
    """Imagenette train batches from the trainer's own loader (``train.loaders.build_loaders``)."""
    from mobilenet_v1.data.folders import load_splits
    from mobilenet_v1.train.config import TrainConfig
    from mobilenet_v1.train.loaders import build_loaders
    from mobilenet_v1.train.torchrun import DistEnv

    loader_options = {"workers": workers, "worker_nice": worker_nice, "worker_idle": worker_idle}
    config = TrainConfig(data=str(imagenette), output="unused", batch_size=BATCH, **loader_options)  # only read
    loader, sampler, _ = build_loaders(config, load_splits(imagenette), Preprocessing(resolution), DistEnv())
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        for x, y, _ in loader:
            yield x, y


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build(args.impl, args.alpha).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = build_optimizer("rmsprop-tf", model, lr=0.01, weight_decay=4e-5)
    if args.source == "synthetic":
        batches = synthetic_batches(args.resolution)
    else:
        batches = jpeg_batches(args.resolution, Path(args.imagenette), args.workers, args.worker_nice, args.worker_idle)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    preset = Preprocessing(args.resolution)
    baseline = rss_mb()
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        if i == args.warmup:
            first = start
        x, y = next(batches)
        x = x.contiguous(memory_format=fmt)
        if x.dtype == torch.uint8:  # JPEG batches: normalized here, as the trainer does
            x = float_input(x, preset)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median = statistics.median(times)
    total = BATCH * args.steps / (time.perf_counter() - first)
    return {"img_per_s": BATCH / median, "img_per_s_total": total, "step_s": median, "peak_mb": peak - baseline}


CONFIGS = [  # (alpha, resolution, precision, channels_last); cheapest first
    (0.25, 128, "fp32", True),
    (0.25, 128, "bf16", True),
    (0.25, 128, "fp32", False),
    (1.0, 224, "bf16", True),
    (1.0, 224, "fp32", True),
    (1.0, 224, "fp32", False),
]


PIPELINE = [(0.25, 128, "bf16"), (1.0, 224, "bf16")]


def run_child(**kw) -> dict:
    cmd = [sys.executable, __file__, "--child"]
    for key, value in kw.items():
        if isinstance(value, bool):
            cmd.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        elif value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(results: list[dict], key: str = "img_per_s") -> dict:
    top = max(results, key=lambda r: r[key])
    return {**top, "peak_mb": min(r["peak_mb"] for r in results), "runs_img_per_s": [r[key] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--imagenette", default=str(DATA / "imagenette"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-nice", type=int, default=10, help="as `train --worker-nice` (its default, 10)")
    parser.add_argument("--worker-idle", action=argparse.BooleanOptionalAction, default=True, help="as `train`")
    parser.add_argument("--output", type=Path, default=RESULTS / "train_throughput.json")
    parser.add_argument("--only", help="indices of CONFIGS, e.g. 0,3 (default: all; none: pipeline only)")
    parser.add_argument("--pipeline", type=int, default=len(PIPELINE), help="how many PIPELINE rows to run")
    # child-process options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--source", default="synthetic")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    common = {"steps": args.steps, "warmup": args.warmup}
    rows = []
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, batch {BATCH}, best of {args.repeats}")
    print("| alpha/res | precision | channels_last | ours img/s | timm img/s | ratio | ours MB | timm MB |")
    print("|---|---|---|---|---|---|---|---|")
    if args.only == "none":
        wanted = []
    else:
        wanted = range(len(CONFIGS)) if not args.only else [int(i) for i in args.only.split(",")]
    for index in wanted:
        alpha, res, precision, cl = CONFIGS[index]
        kw = {"alpha": alpha, "resolution": res, "precision": precision, "channels_last": cl, **common}
        runs: dict[str, list[dict]] = {"ours": [], "timm": []}
        for _ in range(args.repeats):
            for impl in runs:
                runs[impl].append(run_child(impl=impl, **kw))
        ours, timm = best(runs["ours"]), best(runs["timm"])
        row = {"alpha": alpha, "resolution": res, "precision": precision, "channels_last": cl, "ours": ours}
        row |= {"timm": timm, "ratio": ours["img_per_s"] / timm["img_per_s"]}
        rows.append(row)
        print(
            f"| {alpha:g}/{res} | {precision} | {cl} | {ours['img_per_s']:.1f} | {timm['img_per_s']:.1f} | "
            f"{row['ratio']:.2f} | {ours['peak_mb']:.0f} | {timm['peak_mb']:.0f} |",
            flush=True,
        )
    pipeline = []
    if Path(args.imagenette).is_dir():
        print("\n| alpha/res | precision | synthetic img/s | JPEG pipeline img/s | ratio |")
        print("|---|---|---|---|---|")
        for alpha, res, precision in PIPELINE[: args.pipeline]:
            kw = {"impl": "ours", "alpha": alpha, "resolution": res, "precision": precision, **common}
            kw["channels_last"] = True
            kw["warmup"] = args.warmup + args.workers * PREFETCH_FACTOR
            loader = {"workers": args.workers, "worker_nice": args.worker_nice, "worker_idle": args.worker_idle}
            syn = best([run_child(**kw) for _ in range(args.repeats)], "img_per_s_total")
            jpg = best(
                [run_child(**kw, source="jpeg", imagenette=args.imagenette, **loader) for _ in range(args.repeats)],
                "img_per_s_total",
            )
            ratio = jpg["img_per_s_total"] / syn["img_per_s_total"]
            pipeline.append(
                {"alpha": alpha, "resolution": res, "precision": precision, "synthetic": syn}
                | {"jpeg": jpg, "ratio": ratio, **loader}
            )
            syn_total, jpg_total = syn["img_per_s_total"], jpg["img_per_s_total"]
            print(f"| {alpha:g}/{res} | {precision} | {syn_total:.1f} | {jpg_total:.1f} | {ratio:.2f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"torch": torch.__version__, "batch": BATCH, "rows": rows, "pipeline": pipeline}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
