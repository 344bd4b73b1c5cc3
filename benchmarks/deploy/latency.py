"""CPU latency of every deployment path against Google's own int8 model under LiteRT.

For each of the four configurations 0.25/128, 0.5/160, 0.75/192 and 1.0/224 (Google's
quantized checkpoints), in one run: PyTorch eager, PyTorch compiled
(``compile_for_inference``, float32 and bfloat16), our AOTInductor packages (``pt2``,
float32 and bfloat16), ONNX Runtime fp32 and int8, ExecuTorch fp32 and int8 (XNNPACK),
Google's int8 ``.tflite`` and ours under LiteRT (XNNPACK, its default CPU path) and
timm's MobileNet V1 of the same width exported to ONNX fp32 (subjects named as in
``measure.subjects.SUBJECTS``: onnx, onnx-int8, google-tflite-int8, tflite-int8, ...) (``--no-exports`` leaves
out the pt2, ExecuTorch and our LiteRT files, whose exports take minutes). Batch-1
latency (median, p90 over ``--runs`` timed runs after warm-up, runtimes interleaved in
10 rounds) and batch-32 throughput at 1 and 2 threads, then ORT's per-layer profile
(depthwise vs pointwise) at 2 threads.

    python benchmarks/deploy/latency.py [--runs 200] [--threads 1 2] [--configs 0.25/128 ...]

Writes benchmarks/results/latency.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Idle worker threads spin briefly, then sleep (PyTorch's default); ONNX Runtime's spin if
# the cores are idle when a session is made (deploy.onnx.ort_spin), always with --ort-spin.
# OMP_WAIT_POLICY=ACTIVE would keep PyTorch's idle OpenMP threads spinning for good and
# starve the other runtimes of this process (1.0/224 int8 at 2 threads: 5.7 ms instead of
# 1.8). On a shared 2-core machine a descheduled spinner stalls every barrier (0.25/128
# eager at 2 threads: 3.5 s instead of 9 ms): --passive makes PyTorch's sleep at once.
if "--passive" in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "--ort-spin" in sys.argv:
    os.environ["MOBILENET_V1_ORT_SPIN"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.cli.bench import format_table
from mobilenet_v1.deploy.onnx import ort_spin, ort_spin_setting
from mobilenet_v1.deploy.quantize import calibration_files
from mobilenet_v1.measure import conditions
from mobilenet_v1.measure.bench import layer_profile, run_config
from mobilenet_v1.measure.subjects import prepare

CONFIGS = {
    "0.25/128": "mobilenet_v1_0.25_128_quant",
    "0.5/160": "mobilenet_v1_0.5_160_quant",
    "0.75/192": "mobilenet_v1_0.75_192_quant",
    "1.0/224": "mobilenet_v1_1.0_224_quant",
}


def machine(threads: int) -> dict[str, object]:
    return {
        **conditions.machine(threads),
        "python": sys.version.split()[0],
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "default"),
        "ort_spin": {"setting": ort_spin_setting(), "at_start": ort_spin(threads)},
        "loadavg_start": os.getloadavg(),
    }


def targets(result: dict, statistic: str) -> dict[str, float]:
    """The issue's ratios at 2 threads, batch 1, of ``statistic`` (median_ms or steady_ms)."""
    t = result["threads"].get("2", {})

    def ratio(a: str, b: str) -> float | None:
        return t[a]["latency"][statistic] / t[b]["latency"][statistic] if a in t and b in t else None

    return {
        "int8_vs_litert": ratio("onnx-int8", "google-tflite-int8"),  # target <= 0.5 at 0.25/128
        "fp32_vs_timm": ratio("onnx", "timm-onnx"),  # target <= 1.0
        "compiled_vs_ort_fp32": ratio("torch-compiled", "onnx"),
        "compiled_bf16_vs_ort_fp32": ratio("torch-compiled-bf16", "onnx"),
        "pt2_vs_ort_fp32": ratio("pt2", "onnx"),  # target <= 1.3
        "pt2_bf16_vs_ort_fp32": ratio("pt2-bf16", "onnx"),
        "ours_tflite_int8_vs_litert": ratio("tflite-int8", "google-tflite-int8"),  # target <= 1.05
        "executorch_int8_vs_litert": ratio("executorch-int8", "google-tflite-int8"),
        "executorch_fp32_vs_ort_fp32": ratio("executorch", "onnx"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--batch-runs", type=int, default=10)
    parser.add_argument("--torch-backend", default="inductor", choices=("inductor", "jit"))
    parser.add_argument("--passive", action="store_true", help="PyTorch's idle OpenMP threads sleep at once")
    parser.add_argument(
        "--ort-spin", action="store_true", help="ONNX Runtime's idle threads spin (default: only if the cores are idle)"
    )
    parser.add_argument("--no-exports", action="store_true", help="leave out the pt2, ExecuTorch and our LiteRT files")
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = parser.parse_args()
    files = calibration_files(args.calibration, 100)
    report = {"machine": machine(max(args.threads)), "command": " ".join(sys.argv), "results": [], "profiles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.configs:
            start = time.time()
            setup = prepare(CONFIGS[label], Path(tmp), files, exports=not args.no_exports)
            setup.torch_backend = args.torch_backend
            result = run_config(setup, threads=tuple(args.threads), runs=args.runs, batch_runs=args.batch_runs)
            result["targets"] = {"median": targets(result, "median_ms"), "steady": targets(result, "steady_ms")}
            result["loadavg_end"] = os.getloadavg()
            report["results"].append(result)
            report["profiles"][label] = {
                name: layer_profile(path, setup.model.config, setup.resolution)
                for name, path in setup.exported.items()
                if name in ("onnx", "onnx-int8")
            }
            print(format_table([result]), json.dumps(result["targets"]), f"({time.time() - start:.0f} s)", flush=True)
            report["machine"]["loadavg_end"] = os.getloadavg()
            args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each config: a long run keeps its part
    print(format_table(report["results"]))
    for label, profiles in report["profiles"].items():
        for name, p in profiles.items():
            shares = ", ".join(f"{k} {v['percent']:.0f}%" for k, v in sorted(p["by_kind"].items()))
            print(f"{label} {name}: {p['total_us']:.0f} µs of kernels: {shares}")


if __name__ == "__main__":
    main()
