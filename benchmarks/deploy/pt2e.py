"""PyTorch's PT2E int8 flow against our ONNX Runtime int8 export: speed and accuracy.

The int8 tool was chosen between ONNX Runtime's quantization and PyTorch's PT2E flow
by measurement. PT2E here: ``torch.export`` of the BN-folded model, torchao's
``X86InductorQuantizer`` (per-channel weights, uint8 activations), calibration on
``--calibration-images`` Imagenette train images, ``convert_pt2e``, then
``torch.compile`` with Inductor freezing (oneDNN int8 kernels). ORT: our default
export (Google's quantization carried over, see docs/deployment.md). Batch-1 latency
at 2 threads (interleaved, as ``benchmarks/deploy/latency.py``) and Imagenette val top-1 on
every ``--every``-th image (batch 1: the exported PT2E graph has a fixed batch).

    pip install torchao==0.18.0
    python benchmarks/deploy/pt2e.py [--models mobilenet_v1_0.25_128_quant ...] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.data.folders import ImageFolder, find_samples
from mobilenet_v1.data.transforms import eval_transform
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx, fuse_bn
from mobilenet_v1.deploy.quantize import calibration_files, load_batch, quantize_onnx, tflite_overrides
from mobilenet_v1.measure.bench import measure, onnx_runner
from mobilenet_v1.measure.evaluate import evaluate, make_loader
from mobilenet_v1.weights import load_weights, read_wnids
from mobilenet_v1.weights.grids import Int8Grids


def pt2e_int8(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        sys.exit("this benchmark needs torchao: pip install torchao==0.18.0")
    import torch._inductor.config as inductor_config

    exported = torch.export.export(model, (calibration[:1],)).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for image in calibration.split(1):
            prepared(image)
    inductor_config.freezing = True
    return torch.compile(convert_pt2e(prepared))


def run_pt2e_batch(pt2e: torch.nn.Module):
    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return pt2e(batch)

    return predict


def one_model(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(name)
    pre = info.preprocessing
    calibration = load_batch(calibration_files(args.calibration, args.calibration_images), pre)
    start = time.perf_counter()
    pt2e = pt2e_int8(fuse_bn(model).eval(), calibration)
    x = calibration[:1]
    with torch.no_grad():
        pt2e(x)
    prepare_s = time.perf_counter() - start
    fp32, int8 = tmp / f"{name}.onnx", tmp / f"{name}_int8.onnx"
    export_onnx(model, fp32, pre)
    quantize_onnx(fp32, int8, calibration[:16], overrides=tflite_overrides(fp32, Int8Grids.read(info.record.files())))

    def run_pt2e() -> torch.Tensor:
        with torch.no_grad():
            return pt2e(x)

    torch.set_num_threads(2)
    timing = measure({"pt2e": run_pt2e, "ort": onnx_runner(int8, x.numpy(), 2)}, runs=args.runs, rounds=10)
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    loader = make_loader(ImageFolder(samples[:: args.every], eval_transform(pre)), 1, 0)
    accuracy = {}
    for label, predict in (("float", model), ("pt2e", run_pt2e_batch(pt2e)), ("ort", OnnxModel(int8))):
        accuracy[label] = evaluate(predict, loader, folders, ignore=info.ignore).top1
    row = {"model": name, "pt2e_prepare_compile_s": prepare_s, "images": len(samples[:: args.every])}
    row |= {f"{k}_median_ms": t.median_ms for k, t in timing.items()}
    row |= {f"{k}_steady_ms": t.steady_ms for k, t in timing.items()}
    row |= {f"{k}_top1": v for k, v in accuracy.items()}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v1_0.25_128_quant", "mobilenet_v1_1.0_224_quant"])
    parser.add_argument("--val", type=Path, default=DATA / "imagenette" / "val")
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "pt2e.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_model(name, args, Path(tmp)) for name in args.models]
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print("| model | PT2E ms | ORT int8 ms | float top-1 | PT2E top-1 | ORT int8 top-1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['pt2e_median_ms']:.3f} | {r['ort_median_ms']:.3f} | {r['float_top1']:.2f} | "
            f"{r['pt2e_top1']:.2f} | {r['ort_top1']:.2f} |"
        )


if __name__ == "__main__":
    main()
