"""Imagenette top-1 of calibrated int8 PTQ vs int8 after quantization-aware fine-tuning.

Google's quantized MobileNet V1 weights treated as ordinary checkpoints (calibrated
mode, Google's own quantization ignored): float PyTorch, int8 PTQ (``quantize_onnx``),
and int8 after ``qat_finetune`` (self-distillation on the calibration images), with the
time QAT took. Prediction is 1000-way over outputs 1..1000 (ImageNet wnid folders);
calibration and fine-tuning images come from imagenette/train, never val.

    python benchmarks/deploy/qat.py [--every 5] [--steps 200] [--lr 1e-5] [--models ...]

PyTorch and ONNX Runtime run on ``--threads`` threads (default 1: on a machine shared
with other jobs, two spinning threads were up to 100x slower than one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from int8_accuracy import data_arguments, run_models

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.deploy.qat import qat_finetune
from mobilenet_v1.deploy.quantize import calibration_files, load_batch, quantize_onnx
from mobilenet_v1.measure.evaluate import EvalResult, evaluate_samples
from mobilenet_v1.weights import load_weights, read_wnids

MODELS = ("mobilenet_v1_0.5_160_quant", "mobilenet_v1_1.0_224_quant")


def agreement(result: EvalResult, reference: EvalResult) -> float:
    """Percent of images whose top-1 class equals the float model's (fidelity, no labels)."""
    return 100 * float((result.predictions[:, 0] == reference.predictions[:, 0]).mean())


def one_model(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(name)
    pre = info.preprocessing
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    samples = samples[:: args.every]
    calibration = load_batch(calibration_files(args.calibration, args.calibration_images), pre)
    fp32, ptq = tmp / f"{name}.onnx", tmp / f"{name}_ptq.onnx"
    export_onnx(model, fp32, pre, labels=info.classes)
    quantize_onnx(fp32, ptq, calibration)
    start = time.perf_counter()
    tuned = qat_finetune(model, calibration, steps=args.steps, lr=args.lr, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    fp32_qat, qat = tmp / f"{name}_qat_fp32.onnx", tmp / f"{name}_qat.onnx"
    export_onnx(tuned, fp32_qat, pre, labels=info.classes)
    quantize_onnx(fp32_qat, qat, calibration)
    evals = {
        "float": evaluate_samples(model, samples, folders, pre, ignore=info.ignore),
        "int8_ptq": evaluate_samples(OnnxModel(ptq, args.threads), samples, folders, pre, ignore=info.ignore),
        "int8_qat": evaluate_samples(OnnxModel(qat, args.threads), samples, folders, pre, ignore=info.ignore),
    }
    row = {
        "model": name,
        "val_images": len(samples),
        "calibration_images": len(calibration),
        "qat_steps": args.steps,
        "qat_lr": args.lr,
        "qat_batch": args.batch_size,
        **{key: result.top1 for key, result in evals.items()},
        "agree_ptq": agreement(evals["int8_ptq"], evals["float"]),
        "agree_qat": agreement(evals["int8_qat"], evals["float"]),
        "qat_seconds": round(seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(parser, "qat.json")
    parser.add_argument("--every", type=int, default=1, help="evaluate every k-th val image")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run_models(one_model, args)
    print(
        "| model | val images | float | int8 PTQ | int8 QAT | top-1 = float's: PTQ | QAT | QAT steps, lr | QAT time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['val_images']} | {r['float']:.2f} | {r['int8_ptq']:.2f} | {r['int8_qat']:.2f} "
            f"| {r['agree_ptq']:.1f}% | {r['agree_qat']:.1f}% | {r['qat_steps']}, {r['qat_lr']:g} "
            f"| {r['qat_seconds']:.0f} s |"
        )


if __name__ == "__main__":
    main()
