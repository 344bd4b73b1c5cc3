"""``mobilenet-v1 eval DIR``: top-1/top-5 on an image folder (one sub-folder per class)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..classify import Classifier
from ..files import check_not_input, check_writable
from ..measure.evaluate import EvalResult, evaluate_folder
from ..untrusted import printable
from ..weights import MobileNetV1Weights, read_wnids
from . import args as types
from .predict import INT8_HELP, MODEL_HELP, TRUST_HELP, WEIGHTS_HELP, from_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/top-5 on DIR/<class>/*.jpg, classes named by ImageNet WordNet id or the checkpoint's own names",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--weights", default=MobileNetV1Weights.DEFAULT.value.name, help=WEIGHTS_HELP)
    p.add_argument(
        "--model",
        type=Path,
        help=MODEL_HELP,
    )
    p.add_argument("--batch-size", type=types.positive_int, default=64)
    p.add_argument("--workers", type=int, default=2, help="data loading processes (0: in this process)")
    p.add_argument("--wnids", type=Path, help="ImageNet WordNet ids, one per line (default: the data directory's)")
    p.add_argument("--confusion", metavar="PNG", help="save the confusion matrix")
    p.add_argument("--json", action="store_true", help="print one JSON object with top1, top5, ...")
    p.add_argument("--int8-exact", action="store_true", help=INT8_HELP)
    p.add_argument("--trust-native-code", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.confusion:  # a figure inside DIR would be counted as an image by the next eval
        check_writable(args.confusion)
        check_not_input(args.confusion, [args.dir, args.weights, args.model, args.wnids])
    if args.model:
        classifier = from_model(args.model, args.int8_exact, args.trust_native_code)
        args.weights = str(args.model)  # reported in place of the weights
    else:
        classifier = Classifier.from_weights(args.weights, int8_exact=args.int8_exact)
    wnids = read_wnids(args.wnids)
    result = evaluate_folder(
        classifier, args.dir, wnids=wnids, batch_size=args.batch_size, workers=args.workers, progress=True
    )
    if args.confusion:
        from ..measure.plots import plot_confusion

        path = plot_confusion(result.confusion, result.classes, args.confusion)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"weights": str(args.weights), "dir": str(args.dir), **result.to_dict()}))
    else:
        print(format_result(result, args.weights))
    return 0


def format_result(result: EvalResult, weights: str) -> str:
    lines = [f"{printable(weights)}: top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  ({result.count} images)"]
    lines.append(f"{'class':<30} {'top-1':>7}")
    lines += [f"{printable(name):<30} {acc:>6.2f}%" for name, acc in result.per_class.items()]
    return "\n".join(lines)
