"""Our int8 ONNX against Google's int8 ``.tflite`` under LiteRT, before and after the
per-tensor classifier, in one process.

For each configuration (Google's quantized checkpoints; 0.25/128 by default, the one
where ORT's fixed costs matter most): Google's grids carried over by the one int8 export
(``export_int8``, "after": the classifier's weights per tensor), the same file with the
classifier per output channel ("before": ORT's symmetric per-channel weights, the kernels
the export used before), and Google's own file under LiteRT (XNNPACK). Batch 1, 2
threads, the runtimes interleaved in 20 rounds (``measure``), ``--repeats`` times to show
the spread; ours at 1 thread beside them (when the second core is busy, ORT's
parallel-for on layers of a few µs costs more than it gains). Then ORT's per-layer
profile of both files, summed by Table 2's layer kinds.

    python benchmarks/deploy/onnx_int8_small.py [--configs 0.25/128 0.5/160 ...] [--runs 400] [--repeats 3]

Prints a table and writes benchmarks/results/onnx_int8_small.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.deploy.litert import LiteRTModel
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.deploy.quantize import calibration_files, export_int8, load_batch, quantize_onnx, tflite_overrides
from mobilenet_v1.files import write_text
from mobilenet_v1.measure.bench import layer_profile, measure
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.weights import load_weights
from mobilenet_v1.weights.grids import google_tflite, int8_grids

CONFIGS = {
    "0.25/128": "mobilenet_v1_0.25_128_quant",
    "0.5/160": "mobilenet_v1_0.5_160_quant",
    "0.75/192": "mobilenet_v1_0.75_192_quant",
    "1.0/224": "mobilenet_v1_1.0_224_quant",
}


def export_pair(name: str, folder: Path, images_folder: Path) -> tuple:
    """(model, resolution, Google's files, before, after): the int8 file with the classifier per
    channel (``before``) and as ``export_int8`` writes it (``after``)."""
    import onnx

    model, info = load_weights(name)
    pre, grids = info.preprocessing, int8_grids(info)
    images = load_batch(calibration_files(images_folder, 16), pre)
    fp32, before, after = folder / "fp32.onnx", folder / "before.onnx", folder / "after.onnx"
    export_onnx(model, fp32, pre, labels=info.classes)
    overrides = tflite_overrides(fp32, grids)
    gemm = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Gemm")
    del overrides[gemm.input[1]]  # quantize_static's default: symmetric int8 per output channel
    quantize_onnx(fp32, before, images, overrides=overrides)
    export_int8(model, after, pre, images, labels=info.classes, grids=grids)
    return model, pre.resolution, google_tflite(info), before, after


def runners(resolution: int, google: list[Path], before: Path, after: Path) -> dict:
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, resolution, resolution)).astype(np.float32)
    pixels = np.random.default_rng(0).integers(0, 256, (1, resolution, resolution, 3), dtype=np.uint8)
    files = {"ours-before": (before, 2), "ours-after": (after, 2), "ours-after-1thread": (after, 1)}
    out = {name: OnnxModel(path, threads, metadata=False).run for name, (path, threads) in files.items()}
    litert = LiteRTModel(google, threads=2)
    return {**{name: partial(run, x) for name, run in out.items()}, "litert": partial(litert.run, pixels)}


def run_config(label: str, runs: int, repeats: int, images_folder: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model, res, google, before, after = export_pair(CONFIGS[label], Path(tmp), images_folder)
        subjects = runners(res, google, before, after)
        rounds = []
        for _ in range(repeats):
            timing = measure(subjects, runs=runs, warmup=50, rounds=20)
            rounds.append({name: t.to_dict() for name, t in timing.items()})
        profiles = {
            name: layer_profile(path, model.config, res, threads=2)["by_kind"]
            for name, path in (("ours-before", before), ("ours-after", after))
        }
    ratios = {
        f"{name}/litert": [r[name]["median_ms"] / r["litert"]["median_ms"] for r in rounds]
        for name in subjects
        if name != "litert"
    }
    return {"config": label, "repeats": rounds, "median_ratios": ratios, "profiles": profiles}


def table(result: dict) -> str:
    names = list(result["repeats"][0])
    lines = [f"### {result['config']} (batch 1, 2 threads; median / steady µs per repeat)", ""]
    lines += ["| repeat | " + " | ".join(names) + " | " + " | ".join(result["median_ratios"]) + " |"]
    lines += ["|---" * (1 + len(names) + len(result["median_ratios"])) + "|"]
    for i, r in enumerate(result["repeats"]):
        times = [f"{r[n]['median_ms'] * 1e3:.0f} / {r[n]['steady_ms'] * 1e3:.0f}" for n in names]
        ratios = [f"{v[i]:.3f}" for v in result["median_ratios"].values()]
        lines.append(f"| {i + 1} | " + " | ".join(times + ratios) + " |")
    spread = ", ".join(
        f"{k} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})" for k, v in result["median_ratios"].items()
    )
    lines += ["", f"median ratio over repeats (range): {spread}", ""]
    for name, kinds in result["profiles"].items():
        shares = ", ".join(f"{k} {v['us']:.0f}" for k, v in sorted(kinds.items()))
        lines.append(f"{name} kernel µs by kind: {shares}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["0.25/128"], choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_int8_small.json")
    args = parser.parse_args()
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "command": " ".join(sys.argv),
        "results": [],
    }
    for label in args.configs:
        result = run_config(label, args.runs, args.repeats, args.calibration)
        report["results"].append(result)
        print(table(result), flush=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
