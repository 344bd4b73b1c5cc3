"""Imagenette top-1 of our int8 ONNX export vs float and vs Google's int8 model under LiteRT.

For each of Google's four quantized MobileNet V1 models: the float import (PyTorch), our
float32 ONNX, our int8 ONNX (Google's QAT quantization carried over, and per-channel
calibrated PTQ for comparison, with 0 or 2 leading layers kept in float) and LiteRT.
Prediction is 1000-way over outputs 1..1000 (ImageNet wnid folders); calibration uses
imagenette/train, never val.

    python benchmarks/deploy/int8_accuracy.py [--val DIR] [--calibration DIR] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.deploy.compiled import compile_for_inference
from mobilenet_v1.deploy.litert import LiteRTModel
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.deploy.quantize import calibration_files, load_batch, quantize_onnx, tflite_overrides
from mobilenet_v1.measure.evaluate import evaluate_samples
from mobilenet_v1.weights import load_weights, read_wnids
from mobilenet_v1.weights.grids import Int8Grids

MODELS = (
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant",
)
VARIANTS = (("tflite", 2), ("tflite", 0), ("calibrated", 2), ("calibrated", 0))


def top1(predict, samples, folders, pre, ignore, uint8=False) -> tuple[float, float]:
    """Top-1 (ties broken by ``top_classes``'s fixed order) and top-1 with ties split."""
    result = evaluate_samples(predict, samples, folders, pre, ignore=ignore, uint8=uint8)
    return result.top1, result.top1_ties_split


def data_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """What both int8 benchmarks (this and qat.py) take: val and calibration folders, output."""
    parser.add_argument("--val", type=Path, default=DATA / "imagenette" / "val")
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / out)


def run_models(one_model: Callable[[str, argparse.Namespace, Path], dict], args: argparse.Namespace) -> list[dict]:
    """``one_model`` for each of ``args.models`` in one scratch folder; the rows also go to ``args.out``."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_model(name, args, Path(tmp)) for name in args.models]
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def one_model(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(name)
    pre = info.preprocessing
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    fp32 = tmp / f"{name}.onnx"
    export_onnx(model, fp32, pre, labels=info.classes)
    calibration = load_batch(calibration_files(args.calibration, args.calibration_images), pre)
    tflite = info.record.files(download=False)
    row = {"model": name, "images": len(samples)}

    def record(key: str, predict, uint8: bool = False) -> None:
        row[key], row[f"{key}_ties_split"] = top1(predict, samples, folders, pre, info.ignore, uint8)

    record("float_torch", model)
    if not args.quick:
        record("fp32_onnx", OnnxModel(fp32))
    for mode, float_layers in (v for v in VARIANTS if f"{v[0]}_f{v[1]}" in args.variants):
        out = tmp / f"{name}_{mode}_{float_layers}.onnx"
        overrides = tflite_overrides(fp32, Int8Grids.read(tflite)) if mode == "tflite" else None
        quantize_onnx(fp32, out, calibration, float_layers=float_layers, overrides=overrides)
        record(f"int8_{mode}_f{float_layers}", OnnxModel(out))
    if args.bf16:
        record("torch_compiled_bf16", compile_for_inference(model, pre.resolution, dtype=torch.bfloat16))
    if not args.quick:
        record("litert_int8", LiteRTModel(tflite), uint8=True)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(parser, "int8_accuracy.json")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=[f"{m}_f{f}" for m, f in VARIANTS], help="e.g. tflite_f2")
    parser.add_argument("--bf16", action="store_true", help="add the bfloat16 compiled PyTorch path")
    parser.add_argument("--quick", action="store_true", help="skip fp32 ONNX and LiteRT (the slow references)")
    rows = run_models(one_model, parser.parse_args())
    keys = [k for k in rows[0] if k not in ("model", "images")]
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
