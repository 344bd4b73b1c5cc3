"""ExecuTorch int8 (``export --format executorch-int8``) against its float model.

For each model (Google's names or a fine-tuned ``.safetensors``): tie-rule-free Imagenette
val top-1 of the float model (PyTorch) and of the int8 ``.pte`` under ExecuTorch's
runtime, and how often the two agree on the top class. With ``--baseline``, also the
``.pte`` that XNNPACK's quantizer alone writes (each ReLU6 left on its convolution's
grid: the export before ``_annotate_activations``), and batch-1 latency of the two int8
programs interleaved in one process (2 threads). Calibration uses imagenette/train,
never val.

    python benchmarks/deploy/executorch_int8.py [--models mobilenet_v1_0.25_128_quant ...] [--baseline]

Prints a markdown table; writes benchmarks/results/executorch_int8.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.deploy import executorch
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.measure.bench import measure
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.measure.evaluate import evaluate_samples
from mobilenet_v1.weights import load_weights, read_wnids

MODELS = ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_1.0_224_quant")


def export(model, path: Path, info, calibration: torch.Tensor, baseline: bool) -> float:
    """Seconds to write the int8 program; ``baseline``: without our activation annotation."""
    start = time.perf_counter()
    plain = mock.patch.object(executorch, "_annotate_activations", lambda graph, config: None)
    with plain if baseline else contextlib.nullcontext():
        executorch.export_executorch(
            model, path, info.preprocessing, labels=info.classes, int8=True, calibration=calibration
        )
    return time.perf_counter() - start


def paired_standard_error(a, b) -> float:
    """Standard error (pt) of top-1(b) - top-1(a) over the same images: only the images
    that one gets right and the other wrong move it, so it is what separates a real
    difference from the luck of which predictions rounding flips."""
    right_a = a.predictions[:, 0] == a.targets
    right_b = b.predictions[:, 0] == b.targets
    moves = right_b.astype(float) - right_a.astype(float)
    return 100.0 * float(moves.std(ddof=1)) / len(moves) ** 0.5


def model_row(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    model, info = load_weights(name)
    pre = info.preprocessing
    samples, folders = find_samples(args.val, info.classes, read_wnids())
    calibration = load_batch(calibration_files(args.calibration, args.calibration_images), pre)
    row: dict = {"model": str(name), "images": len(samples), "calibration_images": len(calibration)}
    reference = evaluate_samples(model.eval(), samples, folders, pre, ignore=info.ignore)
    row["top1_float"] = reference.top1_ties_split
    runners = {}
    for kind in ("int8", "baseline_int8") if args.baseline else ("int8",):
        path = tmp / f"{kind}.pte"
        row[f"{kind}_export_s"] = export(model, path, info, calibration, baseline=kind != "int8")
        program = executorch.ExecuTorchModel(path, args.threads, metadata=False)
        result = evaluate_samples(program, samples, folders, pre, ignore=info.ignore)
        row[f"top1_{kind}"] = result.top1_ties_split
        row[f"{kind}_minus_float_pt"] = result.top1_ties_split - reference.top1_ties_split
        same = result.predictions[:, 0] == reference.predictions[:, 0]
        row[f"{kind}_agreement_percent"] = 100.0 * float(same.mean())
        row[f"{kind}_paired_se_pt"] = paired_standard_error(reference, result)
        x = torch.randn(1, 3, pre.resolution, pre.resolution)
        runners[kind] = lambda program=program, x=x: program(x)
    timings = measure(runners, runs=args.runs, warmup=20, rounds=10)
    row |= {f"{kind}_median_ms": t.median_ms for kind, t in timings.items()}
    row |= {f"{kind}_steady_ms": t.steady_ms for kind, t in timings.items()}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="Google names or .safetensors files")
    parser.add_argument("--val", type=Path, default=DATA / "imagenette" / "val")
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--baseline", action="store_true", help="also XNNPACK's quantizer alone, and the A/B latency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "executorch_int8.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [model_row(name, args, Path(tmp)) for name in args.models]
    result = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    kinds = ("int8", "baseline_int8") if args.baseline else ("int8",)
    print("| model | float | " + " | ".join(f"{k} (pt vs float ± s.e., agreement, median ms)" for k in kinds) + " |")
    print("|---" * (2 + len(kinds)) + "|")
    for r in rows:
        cells = [
            f"{r[f'top1_{k}']:.2f} ({r[f'{k}_minus_float_pt']:+.2f} ± {r[f'{k}_paired_se_pt']:.2f}, "
            f"{r[f'{k}_agreement_percent']:.1f}%, "
            f"{r[f'{k}_median_ms']:.3f})"
            for k in kinds
        ]
        print(f"| {r['model']} | {r['top1_float']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
