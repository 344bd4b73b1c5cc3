"""Our LiteRT export (``tflite-int8``, ``tflite``) against Google's own ``.tflite`` and the float model.

For each of Google's four quantized models: our ``tflite-int8`` export (Google's grids
carried over) and Google's file under LiteRT (2 threads, batch 1, interleaved in one
process): median latency, tie-rule-free Imagenette top-1, and the share of output bytes
equal between the two files and between our file and the int8-exact emulation. For a
fine-tuned checkpoint (``--finetuned``): its float top-1 against our calibrated
``tflite-int8`` and float ``tflite`` exports, and, for the weights of a ``--qat-epochs``
run, the ``tflite-int8`` file of its own grids (TFLite's int8 scheme, per-channel
weights); their latency interleaved. Calibration uses imagenette/train, never val.

    python benchmarks/deploy/tflite_export.py [--models ...] [--finetuned RUN/model-best.safetensors] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.deploy.litert import LiteRTModel, export_tflite
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.measure.bench import measure
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.measure.evaluate import evaluate_samples
from mobilenet_v1.weights import load_weights, read_wnids
from mobilenet_v1.weights.google_tflite.int8 import load_int8
from mobilenet_v1.weights.grids import google_tflite, int8_grids

MODELS = (
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant",
)
EMULATION_IMAGES = 64  # images the (slower) int8-exact emulation is compared on


def accuracy(predict, samples, folders, pre, ignore, uint8: bool) -> float:
    """Tie-rule-free top-1 (a tie among k classes including the right one counts 1/k)."""
    return evaluate_samples(predict, samples, folders, pre, ignore=ignore, uint8=uint8).top1_ties_split


def uint8_crops(samples, pre, count: int) -> torch.Tensor:
    from mobilenet_v1.data.images import load_image
    from mobilenet_v1.data.transforms import eval_transform

    transform = eval_transform(pre, to_float=False)
    return torch.stack([transform(load_image(path)) for path, _ in samples[:count]])


def byte_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs()
    return {"bytes_equal_percent": 100.0 * float((diff == 0).double().mean()), "max_byte_diff": int(diff.max())}


def latency(runners: dict, args: argparse.Namespace) -> dict[str, float]:
    timings = measure(runners, runs=args.runs, warmup=20, rounds=10)
    return {f"{name}_median_ms": t.median_ms for name, t in timings.items()}


def google_row(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(name)
    pre, grids = info.preprocessing, int8_grids(info)
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    samples = random.Random(0).sample(samples, min(args.limit, len(samples))) if args.limit else samples
    calibration = load_batch(calibration_files(args.calibration, 16), pre)
    ours_path = tmp / f"{name}.tflite"
    start = time.perf_counter()
    report = export_tflite(model, ours_path, pre, labels=info.classes, int8=True, calibration=calibration, grids=grids)
    row = {"model": name, "images": len(samples), "export_s": time.perf_counter() - start, "report": report.checked_on}
    ours, google = LiteRTModel(ours_path, args.threads), LiteRTModel(google_tflite(info), threads=args.threads)
    crops = uint8_crops(samples, pre, EMULATION_IMAGES)
    ours_bytes = ours(crops)
    row["vs_google"] = byte_agreement(ours_bytes, google(crops))
    row["vs_emulation"] = byte_agreement(ours_bytes, load_int8(ours_path)[0](crops))
    row["top1_ours"] = accuracy(ours, samples, folders, pre, info.ignore, uint8=True)
    row["top1_google"] = accuracy(google, samples, folders, pre, info.ignore, uint8=True)
    image = crops[:1].permute(0, 2, 3, 1).contiguous().numpy()
    row |= latency({"ours": lambda: ours.run(image), "google": lambda: google.run(image)}, args)
    row["latency_ratio"] = row["ours_median_ms"] / row["google_median_ms"]
    print(json.dumps(row), flush=True)
    return row


def finetuned_row(path: Path, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(path)
    pre = info.preprocessing
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    samples = random.Random(0).sample(samples, min(args.limit, len(samples))) if args.limit else samples
    calibration = load_batch(calibration_files(args.calibration, args.calibration_images), pre)
    files = {"tflite": tmp / "ft.tflite", "tflite-int8": tmp / "ft_int8.tflite"}
    export_tflite(model, files["tflite"], pre, labels=info.classes)
    report = export_tflite(model, files["tflite-int8"], pre, labels=info.classes, int8=True, calibration=calibration)
    row = {"model": str(path), "images": len(samples), "report": report.checked_on}
    grids = int8_grids(info)
    if grids is not None and grids.qat_run:  # the QAT run's own grids (int8 per channel)
        files["tflite-int8-qat"] = tmp / "ft_int8_qat.tflite"
        export_tflite(model, files["tflite-int8-qat"], pre, labels=info.classes, int8=True, grids=grids)
    row["top1_float_torch"] = accuracy(model.eval(), samples, folders, pre, info.ignore, uint8=False)
    runners = {}
    for fmt, file in files.items():
        exported = LiteRTModel(file, args.threads)
        uint8 = exported.uint8
        row[f"top1_{fmt}"] = accuracy(exported, samples, folders, pre, info.ignore, uint8=uint8)
        x = uint8_crops(samples, pre, 1) if uint8 else torch.randn(1, 3, pre.resolution, pre.resolution)
        image = x.permute(0, 2, 3, 1).contiguous().numpy()
        runners[fmt] = lambda exported=exported, image=image: exported.run(image)
    row |= latency(runners, args)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=Path, default=DATA / "imagenette" / "val")
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--finetuned", type=Path, action="append", default=[], help="a fine-tuned .safetensors")
    parser.add_argument("--limit", type=int, default=0, help="evaluate on this many val images (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULTS / "tflite_export.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        google = [google_row(name, args, Path(tmp)) for name in args.models]
        tuned = [finetuned_row(path, args, Path(tmp)) for path in args.finetuned]
    result = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "google": google,
        "finetuned": tuned,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| model | top-1 ours | top-1 Google | bytes = Google | bytes = emulation | ms ours | ms Google | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in google:
        same, exact = r["vs_google"]["bytes_equal_percent"], r["vs_emulation"]["bytes_equal_percent"]
        print(
            f"| {r['model']} | {r['top1_ours']:.2f} | {r['top1_google']:.2f} | {same:.2f}% | {exact:.2f}% "
            f"| {r['ours_median_ms']:.3f} | {r['google_median_ms']:.3f} | {r['latency_ratio']:.3f} |"
        )
    for r in tuned:
        forms = [key[len("top1_") :] for key in r if key.startswith("top1_") and key != "top1_float_torch"]
        print(
            f"{r['model']}: top-1 float {r['top1_float_torch']:.2f}, "
            + ", ".join(f"{form} {r['top1_' + form]:.2f} ({r[form + '_median_ms']:.3f} ms)" for form in forms)
        )


if __name__ == "__main__":
    main()
