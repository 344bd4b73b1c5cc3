"""``mobilenet-v1 cost``: mult-adds and parameters, Table 1/2 style, or the paper's tables."""

from __future__ import annotations

import argparse
import json

from ..config import VARIANTS, MobileNetV1Config
from ..cost import CONVENTIONS, KIND_LABELS, PAPER_ROWS, ModelCost, model_cost, paper_row_cost
from . import args as types


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="mult-adds and parameters of a configuration (paper Tables 1-2)")
    p.add_argument("--alpha", type=types.alpha, default=1.0, help="width multiplier (Section 3.3)")
    p.add_argument("--resolution", type=types.resolution, default=224, help="input size (Section 3.4)")
    p.add_argument("--classes", type=types.positive_int, default=1000, help="classifier outputs")
    p.add_argument("--variant", choices=VARIANTS, default="standard")
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="exact",
        help="exact per-layer count, or the paper's rho^2 scaling of the 224 model",
    )
    p.add_argument("--per-layer", action="store_true", help="one row per layer (Table 1 style)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--paper", action="store_true", help="the paper's Tables 4-9 beside our figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.paper:
        print(json.dumps(paper_comparison(), indent=2) if args.json else format_paper_tables())
        return 0
    config = MobileNetV1Config(alpha=args.alpha, num_classes=args.classes, variant=args.variant)
    cost = model_cost(config, args.resolution, args.convention)
    if args.json:
        print(json.dumps(cost.to_dict(per_layer=args.per_layer), indent=2))
    else:
        print(format_cost(cost, per_layer=args.per_layer))
    return 0


def format_cost(cost: ModelCost, per_layer: bool = False) -> str:
    c = cost.config
    h, w = cost.input_size
    lines = [
        f"MobileNet V1  alpha={c.alpha:g}  input {h}x{w}  classes {c.num_classes}  "
        f"variant {c.variant}  ({cost.convention} count)"
    ]
    if per_layer:
        lines.append(
            f"{'layer':<10} {'type':<15} {'stride':>6} {'filter shape':>16} {'input':>13} "
            f"{'mult-adds':>14} {'params':>11}"
        )
        for layer in cost.layers:
            ih, iw = layer.input_size
            shape = (
                f"{layer.in_channels}x{layer.out_channels}"
                if layer.kind == "fc"
                else f"{layer.kernel}x{layer.kernel}x"
                + (
                    f"{layer.in_channels} dw"
                    if layer.kind == "depthwise"
                    else f"{layer.in_channels}x{layer.out_channels}"
                )
            )
            lines.append(
                f"{layer.name:<10} {KIND_LABELS[layer.kind]:<15} {'s' + str(layer.stride):>6} "
                f"{shape:>16} {f'{ih}x{iw}x{layer.in_channels}':>13} "
                f"{layer.mult_adds:>14,} {layer.params:>11,}"
            )
    lines.append(
        f"total: {cost.mult_adds:,} mult-adds ({cost.mult_adds / 1e6:.2f} M), "
        f"{cost.params:,} parameters ({cost.params / 1e6:.2f} M)"
    )
    lines.append(f"{'type (Table 2)':<18} {'mult-adds':>10} {'params':>10}")
    for kind, share in cost.shares().items():
        lines.append(f"{KIND_LABELS[kind]:<18} {share['mult_adds']:>9.2f}% {share['params']:>9.2f}%")
    return "\n".join(lines)


def paper_comparison() -> list[dict[str, object]]:
    rows = []
    for row in PAPER_ROWS:
        ours = paper_row_cost(row)
        rows.append(
            {
                "table": row.table,
                "model": row.label,
                "top1": row.top1,
                "paper_mult_adds_m": row.mult_adds_m,
                "ours_mult_adds_m": round(ours.mult_adds / 1e6, 2),
                "paper_params_m": row.params_m,
                "ours_params_m": round(ours.params / 1e6, 3),
                "convention": row.convention,
                "note": row.note,
            }
        )
    return rows


def format_paper_tables() -> str:
    lines = [
        f"{'table':<6} {'model':<20} {'top-1':>6} {'paper MA (M)':>13} {'ours MA (M)':>12} "
        f"{'paper P (M)':>12} {'ours P (M)':>11}  convention"
    ]
    for r in paper_comparison():
        paper_p = "-" if r["paper_params_m"] is None else f"{r['paper_params_m']:g}"
        lines.append(
            f"{r['table']:<6} {r['model']:<20} {r['top1']:>6.1f} {r['paper_mult_adds_m']:>13g} "
            f"{r['ours_mult_adds_m']:>12.2f} {paper_p:>12} {r['ours_params_m']:>11.3f}  "
            f"{r['convention']}{'  (' + r['note'] + ')' if r['note'] else ''}"
        )
    return "\n".join(lines)
