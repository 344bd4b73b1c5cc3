"""``mobilenet-v1 export``: a checkpoint to ONNX, LiteRT, ExecuTorch, an AOTInductor package
or a Triton model repository."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from ..classify import Classifier
from ..data.folders import find_samples
from ..deploy.formats import FORMATS
from ..measure.evaluate import ExportDrop, compare_folder
from ..untrusted import printable
from ..weights import read_wnids
from . import args as types
from .predict import from_model

INT8 = ("onnx-int8", "tflite-int8", "executorch-int8")
FORMAT_HELP = (
    "onnx (float32), onnx-int8 (static PTQ), tflite / tflite-int8 (LiteRT), executorch / executorch-int8 "
    "(.pte lowered to XNNPACK), pt2 / pt2-bf16 (torch.export + AOTInductor package), "
    "triton (a Triton model repository of the float32 ONNX, batching as `serve`)"
)
TRITON = "triton"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export weights to ONNX, LiteRT, ExecuTorch or pt2 (fp32/int8), numerics checked")
    p.add_argument("--weights", required=True, help="Google model name, enum name, or .tflite/.safetensors file")
    p.add_argument("--format", choices=(*FORMATS, TRITON), default="onnx", help=FORMAT_HELP)
    p.add_argument("--calibration", type=Path, help="image folder for int8 calibration (e.g. imagenette/train)")
    p.add_argument("--calibration-images", type=types.positive_int, default=200, help="images drawn from it")
    p.add_argument(
        "--float-layers",
        type=int,
        default=None,
        help="leading convolutions kept in float in onnx-int8 exports (default 2: stem and first depthwise; "
        "0 for the weights of a --qat-epochs run)",
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
        help="onnx-int8/tflite-int8, calibrated: quantization-aware fine-tuning steps on the calibration images first",
    )
    p.add_argument(
        "--dynamic-size",
        action="store_true",
        help="onnx: any input height/width >= 32, not only the weights' resolution (SAME pads computed in the graph)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the file to write (.onnx, .tflite, .pte, .pt2), or triton's folder",
    )
    p.add_argument("--name", help="triton: the model's name in the repository (default: the weights' name)")
    p.add_argument(
        "--val",
        type=Path,
        help="image folder (one sub-folder per class): evaluate the weights and the export on it, print the top-1 drop",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        help="with --val: warn when the export's top-1 differs from the weights' by more points than this, "
        "either way (default 1)",
    )
    p.add_argument("--wnids", type=Path, help="with --val: ImageNet WordNet ids (default: the data directory's)")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=run)


def check_options(args: argparse.Namespace) -> None:
    """Each option only where its format takes it; the output named for its format."""
    fmt = args.format
    if args.name is not None and fmt != TRITON:
        raise ValueError(f"--name only applies to --format triton, got --format {fmt}")
    if fmt == TRITON:
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"--format triton writes a model repository (a folder), not the file {args.output}")
        if args.calibration is not None or args.float_layers is not None or args.qat_steps or args.dynamic_size:
            raise ValueError("--format triton takes the float32 ONNX export: no int8 or --dynamic-size options")
        if args.val is not None:
            raise ValueError("--val applies to the file formats; evaluate a Triton model's ONNX file with eval --model")
        return
    suffix = FORMATS[fmt]
    if args.output.suffix.lower() != suffix:
        raise ValueError(f"--format {fmt} writes a {suffix} file, got --output {args.output}")
    if args.dynamic_size and fmt != "onnx":
        raise ValueError(
            f"--dynamic-size only applies to --format onnx (others have a static size), got --format {fmt}"
        )
    if fmt in ("onnx-int8", "executorch-int8") and args.calibration is None:
        raise ValueError(f"--format {fmt} needs --calibration DIR (a folder of images)")
    if fmt not in INT8 and args.calibration is not None:
        raise ValueError(f"--calibration only applies to the int8 formats ({', '.join(INT8)}), got --format {fmt}")
    if args.float_layers is not None and fmt != "onnx-int8":
        raise ValueError(f"--float-layers only applies to --format onnx-int8, got --format {fmt}")
    if args.float_layers is not None and args.float_layers < 0:
        raise ValueError(f"--float-layers must be >= 0, got {args.float_layers}")
    if args.qat_steps and fmt not in ("onnx-int8", "tflite-int8"):
        raise ValueError(f"--qat-steps only applies to --format onnx-int8 or tflite-int8, got --format {fmt}")
    if args.val is None and args.wnids is not None:
        raise ValueError("--wnids only applies with --val DIR")
    if not args.max_drop >= 0:
        raise ValueError(f"--max-drop must be >= 0 points, got {args.max_drop}")


def run(args: argparse.Namespace) -> int:
    from ..deploy.formats import export_as
    from ..deploy.quantize import calibration_files, load_batch
    from ..files import check_not_input, check_writable
    from ..weights import load_weights
    from ..weights.grids import int8_grids

    if args.format == TRITON:
        return run_triton(args)
    check_writable(args.output)  # first: a directory or a device is named as such
    check_options(args)
    check_not_input(args.output, [args.weights, args.calibration, args.val])
    files = calibration_files(args.calibration, args.calibration_images) if args.calibration else []
    model, loaded = load_weights(args.weights)
    wnids = None
    if args.val is not None:  # a folder that cannot be evaluated is said before the export, not after
        wnids = read_wnids(args.wnids)
        find_samples(args.val, loaded.classes, wnids)
    int8 = args.format in INT8
    # the weights as given: the export may fold batch norm or fine-tune (--qat-steps) in place
    reference = Classifier(copy.deepcopy(model), loaded.preprocessing, loaded.classes, loaded.ignore)
    report = export_as(
        args.format,
        model,
        args.output,
        loaded.preprocessing,
        labels=loaded.classes,
        calibration=load_batch(files, loaded.preprocessing) if files else None,
        grids=int8_grids(loaded, args.quantization) if int8 else None,
        float_layers=args.float_layers,
        qat_steps=args.qat_steps,
        dynamic_size=args.dynamic_size,
    )
    result = report.to_dict()
    if not args.json:
        print(
            f"wrote {report.path} ({report.format}): "
            f"max |{report.compared} diff| vs PyTorch {report.max_abs_diff:.3g}, "
            f"top-1 agreement {100 * report.top1_agreement:.1f}% on {report.checked_on}"
        )
    if args.val is not None:
        exported = from_model(args.output, False, trust_native_code=True)  # the file this run wrote
        cost = compare_folder(reference, exported, args.val, wnids=wnids, progress=True)
        result["val"] = {"dir": str(args.val), **cost.to_dict()}
        if not args.json:
            print(describe_drop(cost, report.format, args.val))
        if abs(cost.drop) > args.max_drop:
            print(f"warning: {drop_advice(cost.drop, args.max_drop, report.format)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def describe_drop(cost: ExportDrop, fmt: str, val: Path) -> str:
    """One line: both top-1s (tie-rule-free), the drop and the agreement on ``val``."""
    return (
        f"{printable(str(val))}: top-1 {cost.reference.top1_ties_split:.2f}% (weights) -> "
        f"{cost.exported.top1_ties_split:.2f}% ({fmt}), drop {cost.drop:+.2f} pt, "
        f"top-1 agreement {100 * cost.agreement:.2f}% on {cost.reference.count} images"
    )


def drop_advice(drop: float, max_drop: float, fmt: str) -> str:
    """What to try when an export's top-1 moves by more than ``max_drop`` points: a gain
    that large is a different model too (the int8 ranges undo part of the training)."""
    hint = "more --calibration-images, drawn from the training folder"
    if fmt in ("onnx-int8", "tflite-int8"):
        hint += ", --qat-steps N (quantization-aware fine-tuning on the calibration images)"
    if fmt == "onnx-int8":
        hint += ", more --float-layers"
    moves = f"loses {drop:.2f}" if drop > 0 else f"gains {-drop:.2f}"
    return (
        f"the {fmt} export {moves} top-1 points against the weights, more than --max-drop {max_drop:g}: "
        f"it is not the same model; try {hint}"
    )


def run_triton(args: argparse.Namespace) -> int:
    """A Triton model repository whose batching and queue policy are ``serve``'s defaults."""
    from ..deploy.triton import export_triton
    from ..files import check_not_input
    from ..serve.app import ServeConfig
    from ..weights import load_weights

    check_options(args)
    check_not_input(args.output, [args.weights])
    model, loaded = load_weights(args.weights)
    name = args.name or Path(str(args.weights)).name.removesuffix(".safetensors").removesuffix(".tflite")
    serve = ServeConfig()
    report = export_triton(
        model, args.output, loaded.preprocessing, labels=loaded.classes, name=name, max_batch=serve.max_batch,
        max_delay_ms=serve.max_delay_ms, max_queue=serve.max_queue, timeout_ms=serve.timeout_ms,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"wrote {args.output / name} (Triton, ONNX Runtime backend): max |logit diff| {report.max_abs_diff:.3g}")
    return 0
