"""Why ``export --format pt2`` compiles the GEMM form: AOTInductor packages of one
configuration, in one process, beside ONNX Runtime fp32 and ExecuTorch (runtimes
interleaved, as benchmarks/deploy/latency.py): the GEMM form called directly and through
``aoti_load_package``'s wrapper, the plain model (convolution form) with and without
freezing, ExecuTorch fp32 and int8. Batch 1, 2 threads.

    python benchmarks/deploy/pt2_forms.py [--weights mobilenet_v1_0.25_128_quant] [--runs 300]

Prints a markdown table; writes benchmarks/results/pt2_forms_<weights>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.deploy.executorch import ExecuTorchModel, export_executorch
from mobilenet_v1.deploy.onnx import dynamic_shapes, export_onnx
from mobilenet_v1.deploy.pt2 import Pt2Model, export_pt2
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.fold import fuse_bn
from mobilenet_v1.measure.bench import measure, onnx_runner
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.weights import load_weights


def conv_form(model: torch.nn.Module, path: Path, resolution: int, freezing: bool):
    """The plain folded model compiled by AOTInductor (each conv one oneDNN call)."""
    with torch.no_grad():
        program = torch.export.export(
            fuse_bn(model).eval(), (torch.randn(2, 3, resolution, resolution),), dynamic_shapes=dynamic_shapes(False)
        )
        options = {"freezing": True} if freezing else {}
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)
    return torch._inductor.aoti_load_package(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="mobilenet_v1_0.25_128_quant")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, info = load_weights(args.weights)
    pre = info.preprocessing
    res = pre.resolution
    tmp = Path(tempfile.mkdtemp())
    x = torch.rand(1, 3, res, res) * 2 - 1
    export_onnx(model, tmp / "m.onnx", pre)
    export_pt2(model, tmp / "gemm.pt2", pre)
    gemm = Pt2Model(tmp / "gemm.pt2", trust_native_code=True)  # compiled above
    plain, frozen = (conv_form(model, tmp / f"conv{i}.pt2", res, freeze) for i, freeze in enumerate((False, True)))
    export_executorch(model, tmp / "m.pte", pre)
    calibration = load_batch(calibration_files(DATA / "imagenette" / "train", 64), pre)
    export_executorch(model, tmp / "q.pte", pre, int8=True, calibration=calibration)
    et32, et8 = ExecuTorchModel(tmp / "m.pte", metadata=False), ExecuTorchModel(tmp / "q.pte", metadata=False)
    runners = {
        "onnx": onnx_runner(tmp / "m.onnx", x.numpy(), 2),
        "pt2 GEMM form (boxed_run)": lambda: gemm(x),
        "pt2 GEMM form (aoti __call__)": lambda: gemm.package(x),
        "pt2 conv form": lambda: plain.loader.boxed_run([x]),
        "pt2 conv form + freezing": lambda: frozen.loader.boxed_run([x]),
        "executorch": lambda: et32(x),
        "executorch-int8": lambda: et8(x),
    }
    with torch.inference_mode():
        timings = measure(runners, runs=args.runs, warmup=30, rounds=10)
    base = timings["onnx"].median_ms
    print("| subject | median ms | steady ms | vs ORT fp32 |\n|---|---|---|---|")
    for name, t in timings.items():
        print(f"| {name} | {t.median_ms:.3f} | {t.steady_ms:.3f} | {t.median_ms / base:.2f} |")
    out = RESULTS / f"pt2_forms_{args.weights}.json"
    report = {"cpu": cpu_name(), "weights": args.weights, "timings": {k: v.to_dict() for k, v in timings.items()}}
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
