"""``mobilenet-v1 predict IMAGE...``: top-k classes of each image, optionally plotted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..classify import Classifier
from ..data.images import load_image
from ..data.transforms import eval_transform
from ..files import check_not_input, check_writable
from ..untrusted import printable
from ..weights import MobileNetV1Weights
from . import args as types

WEIGHTS_HELP = "Google's model name, an enum name, or a .tflite/.safetensors file (default: %(default)s)"
MODEL_HELP = "an exported .onnx, .tflite, .pte or .pt2 file, run by its runtime with its preprocessing"
BATCH = 16  # images decoded and classified at a time
TRUST_HELP = (
    "load a .pt2 package: it is native code that loading runs with your rights, "
    "so only from a source you trust (.onnx, .tflite and .pte files are data)"
)
INT8_HELP = "run Google's uint8 model with TFLite's integer arithmetic (byte-identical to LiteRT's default CPU path)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with Google's or your weights (top-k with probabilities)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", default=MobileNetV1Weights.DEFAULT.value.name, help=WEIGHTS_HELP)
    p.add_argument("--model", type=Path, help=MODEL_HELP)
    p.add_argument("--topk", type=types.positive_int, default=5)
    p.add_argument("--plot", metavar="PNG", help="save each image beside a bar chart of its top-k")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--int8-exact", action="store_true", help=INT8_HELP)
    p.add_argument("--trust-native-code", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_writable(args.plot)
        check_not_input(args.plot, [*args.images, args.weights, args.model])
    classifier = from_model(args.model, args.int8_exact, args.trust_native_code) if args.model else None
    classifier = classifier or Classifier.from_weights(args.weights, int8_exact=args.int8_exact)
    used = f"model {args.model}" if args.model else f"weights {args.weights}" + (" (int8-exact)" * args.int8_exact)
    if not args.json:
        print(printable(used), flush=True)
    top, crops = [], []
    # a batch at a time: memory stays that of one batch of photos, however many are given
    for start in range(0, len(args.images), BATCH):
        paths = args.images[start : start + BATCH]
        images = [load_image(path) for path in paths]
        found = classifier.top(torch.stack([classifier.transform(img) for img in images]), args.topk)
        top += found
        if args.plot:
            crops += [eval_transform(classifier.preprocessing, to_float=False)(img) for img in images]
        if not args.json:
            for path, preds in zip(paths, found, strict=True):
                print(printable(path))
                for rank, (label, p) in enumerate(preds, 1):
                    print(f"  {rank}. {p:6.2%}  {printable(label)}")
    if args.json:
        by_path = {
            path: [{"label": c, "probability": p} for c, p in t] for path, t in zip(args.images, top, strict=True)
        }
        source = {"model": str(args.model)} if args.model else {"weights": args.weights, "int8_exact": args.int8_exact}
        print(json.dumps({**source, "predictions": by_path}))
    if args.plot:
        from ..measure.plots import plot_predictions

        print(f"wrote {plot_predictions(crops, args.images, top, args.plot)}")
    return 0


def from_model(path: Path, int8_exact: bool, trust_native_code: bool = False, *, threads: int = 2) -> Classifier:
    """The classifier of an exported file, run by its runtime (``--model``, in place of ``--weights``)."""
    from ..deploy.formats import load_exported

    if int8_exact:
        raise ValueError("--int8-exact runs Google's interpreter arithmetic; it does not apply to --model")
    model, info = load_exported(path, threads, trust_native_code=trust_native_code)
    uint8 = getattr(model, "uint8", False)  # a uint8 .tflite takes the uint8 crops
    return Classifier(model, info.preprocessing, info.classes, info.ignore, uint8=uint8, source=str(path))
