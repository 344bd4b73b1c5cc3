"""``mobilenet-v1 tradeoff``: accuracy, cost and measured latency of the 16 paper configurations."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..deploy.onnx import SPIN_ENV
from . import args as types
from .bench import ORT_SPIN_HELP


def register(sub: argparse._SubParsersAction) -> None:
    from ..measure.tradeoff import RUNTIMES

    p = sub.add_parser("tradeoff", help="accuracy vs mult-adds vs latency here, alpha x rho (Figures 4-5)")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnx-int8", help="what the latency is measured with")
    p.add_argument("--threads", type=types.positive_int, default=2, help="intra-op threads")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-ms", type=types.positive_float, help="print the best model within this latency")
    budget.add_argument(
        "--budget-mult-adds",
        type=types.positive_float,
        help="print the best model within this many mult-adds (e.g. 150e6)",
    )
    p.add_argument("--data", type=Path, help="image folder named by ImageNet WordNet ids (e.g. imagenette/val)")
    p.add_argument("--calibration", type=Path, help="images for int8 calibration (default: random, latency only)")
    p.add_argument("--limit-per-class", type=types.positive_int, help="evaluate at most this many images per class")
    p.add_argument("--runs", type=types.positive_int, default=100, help="timed batch-1 runs per configuration")
    p.add_argument("--download", action="store_true", help="download Google's weights that are not found locally")
    p.add_argument("--output", type=Path, default=Path("tradeoff"), help="directory for plots, tables and the cache")
    p.add_argument("--force", action="store_true", help="measure every configuration again (ignore the cache)")
    p.add_argument("--ort-spin", action="store_true", help=ORT_SPIN_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files import check_not_input
    from ..measure.report import markdown_table, write_report
    from ..measure.tradeoff import best_under_budget, measure_grid

    for name in ("data", "calibration"):
        folder = getattr(args, name)
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"--{name} folder not found: {folder}")
    check_not_input(args.output, [args.data, args.calibration])
    if args.ort_spin:
        os.environ[SPIN_ENV] = "1"
    args.output.mkdir(parents=True, exist_ok=True)
    if not os.access(args.output, os.W_OK | os.X_OK):  # before the first configuration is measured
        raise PermissionError(f"output folder is not writable: {args.output}")
    points = measure_grid(
        runtime=args.runtime,
        threads=args.threads,
        data=args.data,
        calibration=args.calibration,
        limit_per_class=args.limit_per_class,
        runs=args.runs,
        cache_file=args.output / "cache.json",
        download=args.download,
        force=args.force,
    )
    print(markdown_table(points, args.runtime))
    for path in write_report(points, args.runtime, args.threads, args.output):
        print(f"wrote {path}")
    if args.budget_ms is not None or args.budget_mult_adds is not None:
        best, left_out = best_under_budget(
            points,
            lambda p: p.google_top1(args.runtime),
            budget_ms=args.budget_ms,
            budget_mult_adds=args.budget_mult_adds,
        )
        print(
            f"best within budget: alpha {best.alpha:g}, resolution {best.resolution} "
            f"(ImageNet top-1 {best.google_top1(args.runtime):.1f}%, {best.latency_ms:.2f} ms, "
            f"{best.mult_adds / 1e6:.1f} M mult-adds)"
        )
        if left_out:
            noisy = ", ".join(f"{p.label} ({'; '.join(p.flags)})" for p in left_out)
            print(f"not chosen from, their latency unreliable: {noisy}; --force measures them again")
    return 0
