"""Fidelity of our import of Google's four shared models against LiteRT on Imagenette val.

Per model: Google's reported ImageNet top-1, then for each evaluator (``litert``: Google's
interpreter, the reference; ``float``: our model with dequantized weights and float
activations; more can be registered in ``EVALUATORS``) its Imagenette val top-1 (1000-way)
and its top-1 agreement with LiteRT. Prints a table, writes JSON.

    nice python benchmarks/weights/fidelity.py [--every 1] [--output benchmarks/results/fidelity.json]

To add a column, register an evaluator (paths -> uint8 NCHW batch -> scores), e.g.
``EVALUATORS["int8-exact"] = lambda paths: my_int8_model(paths)``, before ``main()``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS, ROOT

from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.measure.fidelity import EVALUATORS, compare
from mobilenet_v1.model import ConvBNAct
from mobilenet_v1.weights import WNIDS_FILE, MobileNetV1Weights
from mobilenet_v1.weights.google_tflite.convert import load_tflite
from mobilenet_v1.weights.google_tflite.reader import read_tflite_files


def shared_models(pretrained: Path) -> dict[str, list[Path]]:
    """The verifiable (shared) quantized checkpoints -> their local files."""
    return {
        w.value.name: [pretrained / s.filename for s in w.value.sources]
        for w in MobileNetV1Weights
        if w.value.verifiable
    }


def val_samples(data: Path) -> tuple[list[tuple[Path, int]], dict[str, int]]:
    """Imagenette val as (path, ImageNet class) samples and its folders, from the shared data."""
    pretrained = data / "pretrained"
    labels = (pretrained / "imagenet_labels.txt").read_text().splitlines()
    wnids = (pretrained / WNIDS_FILE).read_text().split()
    return find_samples(data / "imagenette" / "val", labels, wnids)


def fake_quant_evaluator(paths: list[Path]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Diagnostic, not a fidelity level: the float model with every activation rounded to
    the file's uint8 grid, as LiteRT stores it, and LiteRT's exact input ``(q - 128) / 128``.
    It shows how much of the float level's disagreement is activation rounding."""
    model, _ = load_tflite(paths)
    convs = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    for module, op in zip(convs, read_tflite_files(paths), strict=False):
        scale, zero = float(op.outputs[0].scale[0]), int(op.outputs[0].zero_point[0])
        module.register_forward_hook(
            lambda _m, _i, out, s=scale, z=zero: (torch.clamp(torch.round(out / s) + z, 0, 255) - z) * s
        )
    return lambda batch: model((batch.float() - 128) / 128)


DIAGNOSTICS = {"float-fq": fake_quant_evaluator}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--every", type=int, default=1, help="use every n-th val image (1: all 3,925)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS / "fidelity.json")
    parser.add_argument("--models", nargs="+", help="Google model names (default: the four shared ones)")
    choices = [*EVALUATORS, *DIAGNOSTICS]
    parser.add_argument("--evaluators", nargs="+", choices=choices, default=list(EVALUATORS), help="litert first")
    args = parser.parse_args()
    evaluators = {name: {**EVALUATORS, **DIAGNOSTICS}[name] for name in args.evaluators}
    pretrained = args.data / "pretrained"
    samples, folders = val_samples(args.data)
    samples = samples[:: args.every]
    google = {w.value.name: w.value.google_top1 for w in MobileNetV1Weights}
    rows = []
    models = shared_models(pretrained)
    for name in args.models or list(models):
        start = time.perf_counter()
        scores = compare(models[name], samples, folders, evaluators=evaluators, workers=args.workers, progress=True)
        rows.append({"model": name, "google_imagenet_top1": google[name], "images": len(samples), **scores})
        rows[-1]["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine = {"machine": f"{os.cpu_count()}-core {cpu_name()}", "python": platform.python_version()}
    command = f"nice python benchmarks/weights/fidelity.py --every {args.every}"
    if args.models:
        command += f" --models {' '.join(args.models)}"
    if args.evaluators != list(EVALUATORS):
        command += f" --evaluators {' '.join(args.evaluators)}"
    if args.output != parser.get_default("output"):
        command += f" --output {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}"
    args.output.write_text(json.dumps({"command": command, **machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


def format_table(rows: list[dict]) -> str:
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    head = "| model | Google ImageNet top-1 | " + " | ".join(f"{n} Imagenette top-1" for n in names)
    head += " | " + " | ".join(f"{n} agreement (ties)" for n in names if n != "litert") + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        cells = [row["model"], f"{row['google_imagenet_top1']:.1f}"]
        cells += [f"{row[n]['top1']:.2f}" for n in names]
        cells += [f"{row[n]['agreement']:.2f} ({row[n]['agreement_ties']:.2f})" for n in names if n != "litert"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
