"""``mobilenet-v1 export``: a checkpoint to ONNX (float32) or static int8 ONNX."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import args as types

FORMATS = ("onnx", "onnx-int8")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX (fp32) or int8 ONNX, numerics checked")
    p.add_argument("--weights", required=True, help="Google model name, enum name, or .tflite/.safetensors file")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (float32) or onnx-int8 (static PTQ)")
    p.add_argument("--calibration", type=Path, help="image folder for int8 calibration (e.g. imagenette/train)")
    p.add_argument("--calibration-images", type=types.positive_int, default=200, help="images drawn from it")
    p.add_argument(
        "--float-layers",
        type=int,
        default=None,
        help="leading convolutions kept in float in int8 exports (default 2: stem and first depthwise)",
    )
    p.add_argument(
        "--quantization",
        choices=("auto", "calibrated", "tflite"),
        default="auto",
        help="int8 parameters: calibrated per-channel PTQ, or Google's own from its .tflite (auto: tflite if any)",
    )
    p.add_argument(
        "--qat-steps",
        type=types.non_negative_int,
        default=0,
        help="onnx-int8, calibrated: quantization-aware fine-tuning steps on the calibration images first (default 0)",
    )
    p.add_argument(
        "--dynamic-size",
        action="store_true",
        help="onnx: any input height/width >= 32, not only the weights' resolution (SAME pads computed in the graph)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.onnx import export_onnx
    from ..deploy.quantize import DEFAULT_FLOAT_LAYERS, calibration_files, export_int8, int8_grids, load_batch
    from ..files import check_writable
    from ..weights import load_weights

    if args.dynamic_size and args.format != "onnx":
        raise ValueError(
            f"--dynamic-size only applies to --format onnx (int8 files have a static size), got --format {args.format}"
        )
    if args.format == "onnx-int8" and args.calibration is None:
        raise ValueError("--format onnx-int8 needs --calibration DIR (a folder of images)")
    if args.format == "onnx" and (args.calibration is not None or args.float_layers is not None):
        raise ValueError("--calibration and --float-layers only apply to --format onnx-int8")
    float_layers = DEFAULT_FLOAT_LAYERS if args.float_layers is None else args.float_layers
    if float_layers < 0:
        raise ValueError(f"--float-layers must be >= 0, got {float_layers}")
    if args.qat_steps and args.format != "onnx-int8":
        raise ValueError(f"--qat-steps only applies to --format onnx-int8, got --format {args.format}")
    check_writable(args.output)
    files = calibration_files(args.calibration, args.calibration_images) if args.calibration else []
    model, loaded = load_weights(args.weights)
    pre, labels = loaded.preprocessing, loaded.classes
    if args.format == "onnx":
        report = export_onnx(model, args.output, pre, labels=labels, dynamic_size=args.dynamic_size)
    else:
        report = export_int8(
            model,
            args.output,
            pre,
            load_batch(files, pre),
            labels=labels,
            grids=int8_grids(loaded, args.quantization),
            float_layers=float_layers,
            qat_steps=args.qat_steps,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"wrote {report.path} ({report.format}): max |logit diff| vs PyTorch {report.max_abs_diff:.3g}, "
            f"top-1 agreement {100 * report.top1_agreement:.1f}% on {report.checked_on}"
        )
    return 0
