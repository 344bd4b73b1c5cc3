"""``mobilenet-v1 bench``: latency and throughput of every deployment path, side by side
(:data:`~mobilenet_v1.measure.subjects.SUBJECTS`, named by export format), in one process."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..deploy.onnx import SPIN_ENV
from ..measure.conditions import NOISE_RATIO
from . import args as types

ORT_SPIN_HELP = (
    "let ONNX Runtime's idle threads spin (default: they spin only if the cores are idle when a session "
    "is made; spinning helps on a quiet machine and hurts on a busy one, see docs/deployment.md)"
)
WEIGHTS = ("mobilenet_v1_0.25_128_quant",)  # the smallest: its exports take the least time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="CPU latency/throughput: PyTorch, pt2, ONNX Runtime, ExecuTorch, LiteRT (ours, Google's)"
    )
    p.add_argument("--weights", nargs="+", default=list(WEIGHTS), help="one or more weights specs")
    p.add_argument("--calibration", type=Path, required=True, help="image folder for the int8 export")
    p.add_argument("--calibration-images", type=types.positive_int, default=100)
    p.add_argument("--threads", type=types.positive_int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=types.positive_int, default=200, help="timed batch-1 runs per subject (>= 10)")
    p.add_argument(
        "--batches", type=types.positive_int, nargs="+", default=[8, 32, 128], help="batch sizes of the throughput runs"
    )
    p.add_argument("--ort-spin", action="store_true", help=ORT_SPIN_HELP)
    p.add_argument("--no-timm", action="store_true", help="skip timm's MobileNet V1 under ONNX Runtime")
    p.add_argument(
        "--no-exports",
        action="store_true",
        help="skip the pt2, ExecuTorch and our LiteRT subjects (their exports take minutes)",
    )
    p.add_argument("--torch-backend", choices=("inductor", "jit"), default="inductor")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.quantize import calibration_files
    from ..files import check_not_input, check_writable, write_text
    from ..measure.bench import run_config
    from ..measure.subjects import prepare

    if args.runs < 10:
        raise ValueError(f"--runs must be at least 10 (10 interleaved rounds), got {args.runs}")
    if args.ort_spin:
        os.environ[SPIN_ENV] = "1"
    if args.json:
        check_writable(args.json)
        check_not_input(args.json, [args.calibration, *args.weights])
    files = calibration_files(args.calibration, args.calibration_images)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for weights in args.weights:
            setup = prepare(weights, Path(tmp), files, timm=not args.no_timm, exports=not args.no_exports)
            setup.torch_backend = args.torch_backend
            result = run_config(setup, threads=tuple(args.threads), runs=args.runs, batches=tuple(args.batches))
            print(format_table([result]), flush=True)
            results.append(result)
    if args.json:
        write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


def format_table(results: list[dict[str, Any]]) -> str:
    """One markdown row per configuration, subject and thread count: batch-1 latency (its
    flags when unreliable), and images/s at each throughput batch with the fraction of this
    machine's compute limit for the subject's precision; then the machine it ran on."""
    batches = sorted(
        {int(b) for r in results for s in r["threads"].values() for t in s.values() for b in t["throughput"]}
    )
    head = "| config | runtime | threads | batch-1 median ms | p90 ms | steady ms | flags |"
    head += "".join(f" b{b} img/s (of limit) |" for b in batches)
    lines = [head, "|" + "---|" * (7 + len(batches))]
    for result in results:
        for threads, subjects in result["threads"].items():
            for name, t in subjects.items():
                lat = t["latency"]
                flags = ", ".join(lat["flags"]) or "-"
                row = f"| {result['config']} | {name} | {threads} | {lat['median_ms']:.3f} | {lat['p90_ms']:.3f} "
                row += f"| {lat['steady_ms']:.3f} | {flags} |"
                for b in batches:
                    tp = t["throughput"].get(str(b))
                    row += f" {tp['images_per_s']:.0f} ({100 * tp['of_limit']:.0f}%) |" if tp else " - |"
                lines.append(row)
    if results:
        m = results[0]["machine"]
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        flags = f"p90/median above {NOISE_RATIO}, or a load above the cores"
        lines.append(f"\n{m['cpu']}, {m['cores']} cores; {versions}. Flags: {flags}.")
    return "\n".join(lines)
