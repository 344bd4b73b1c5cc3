"""Data-parallel scaling: training img/s with 1 and 2 processes under torchrun (synthetic data).

Each configuration runs ``torchrun --standalone --nproc-per-node N`` on this script's
worker, which takes full training steps (forward, cross-entropy, backward with DDP's
gradient all-reduce, SGD) on random images and reports the global img/s after a warm-up.
Scaling efficiency = img/s with N processes / (N x img/s with 1 process), each process
given the same number of threads. Prints a table and writes JSON.

    python benchmarks/train/ddp_scaling.py                      # CPU: 1x1, 2x1, 1x2 (processes x threads)
    python benchmarks/train/ddp_scaling.py --device cuda --runs 1x8 --alpha 1.0 \\
        --resolution 224 --batch-size 256 --amp --channels-last --compile --out benchmarks/results/ddp_scaling_cuda.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.train.distributed import barrier, cleanup, init_distributed, local_device, wrap_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", nargs="+", default=["1x1", "2x1", "1x2"], help="PROCESSESxTHREADS per process")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)  # set per run for the worker
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", type=Path, default=RESULTS / "ddp_scaling.json")
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)  # set when run under torchrun
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> None:
    """One torchrun process: time ``args.steps`` training steps after ``args.warmup``."""
    torch.set_num_threads(args.threads)
    env = init_distributed(args.device)
    device = local_device(args.device, env)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = mobilenet_v1(alpha=args.alpha, num_classes=1000).to(device, memory_format=memory_format)
    model = wrap_model(model, env, device)
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(env.rank)
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution, generator=gen)
    x = x.to(device, memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch_size,), generator=gen).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    sync(device)
    barrier(env)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    barrier(env)
    seconds = time.perf_counter() - start
    if env.is_main:
        images = args.steps * args.batch_size * env.world_size
        args.worker_out.write_text(json.dumps({"img_s": images / seconds, "seconds": seconds}))
    cleanup(env)


def launch(nprocs: int, threads: int) -> dict:
    """Run the worker under torchrun with ``nprocs`` processes; return rank 0's measurement."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}"]
        cmd += [str(Path(__file__).resolve()), *sys.argv[1:], "--threads", str(threads), "--worker-out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, check=True, env=env, timeout=1200)
        return json.loads(out.read_text())


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    name = platform.machine()
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        name = models[0] if models else name
    return f"{os.cpu_count()}-core {name} CPU"


def main() -> None:
    args = parse_args()
    if args.worker_out is not None:
        worker(args)
        return
    load_before = os.getloadavg()[0]  # other work on the machine skews CPU numbers: record it
    rows = []
    for run in args.runs:
        procs, threads = (int(v) for v in run.split("x"))
        rows.append({"processes": procs, "threads_per_process": threads, **launch(procs, threads)})
    # Efficiency against one process with the same threads per process (weak scaling per core).
    single = {r["threads_per_process"]: r["img_s"] for r in rows if r["processes"] == 1}
    for row in rows:
        base = single.get(row["threads_per_process"])
        row["efficiency"] = row["img_s"] / (row["processes"] * base) if base else None
    print(f"{'processes':>9} {'threads/proc':>12} {'img/s':>9} {'efficiency':>10}")
    for row in rows:
        eff = "-" if row["efficiency"] is None else f"{row['efficiency']:.2f}"
        print(f"{row['processes']:>9} {row['threads_per_process']:>12} {row['img_s']:>9.1f} {eff:>10}")
    config = {k: v for k, v in vars(args).items() if k not in ("out", "worker_out", "threads")}
    load = {"before": load_before, "after": os.getloadavg()[0]}
    report = {"machine": machine(args.device), "torch": torch.__version__, "load_avg_1min": load, "config": config}
    report["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"1-min load average before/after: {load_before:.1f}/{load['after']:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
