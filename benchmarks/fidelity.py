"""Fidelity of our import of Google's four shared models against LiteRT on Imagenette val.

Per model: Google's reported ImageNet top-1, then for each evaluator (``litert``: Google's
interpreter, the reference; ``float``: our model with dequantized weights and float
activations; more can be registered in ``EVALUATORS``) its Imagenette val top-1 (1000-way)
and its top-1 agreement with LiteRT. Prints a table, writes JSON.

    nice python benchmarks/fidelity.py [--every 1] [--output benchmarks/results/fidelity.json]

To add a column, register an evaluator (paths -> uint8 NCHW batch -> scores), e.g.
``EVALUATORS["int8-exact"] = lambda paths: my_int8_model(paths)``, before ``main()``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from mobilenet_v1.evaluate import find_samples
from mobilenet_v1.fidelity import EVALUATORS, compare
from mobilenet_v1.weights import WNIDS_FILE, MobileNetV1Weights

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def shared_models(pretrained: Path) -> dict[str, list[Path]]:
    """The verifiable (shared) quantized checkpoints -> their local files."""
    return {
        w.value.name: [pretrained / s.filename for s in w.value.sources]
        for w in MobileNetV1Weights
        if w.value.verifiable
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--every", type=int, default=1, help="use every n-th val image (1: all 3,925)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    args = parser.parse_args()
    pretrained = args.data / "pretrained"
    labels = (pretrained / "imagenet_labels.txt").read_text().splitlines()
    wnids = (pretrained / WNIDS_FILE).read_text().split()
    samples, folders = find_samples(args.data / "imagenette" / "val", labels, wnids)
    samples = samples[:: args.every]
    google = {w.value.name: w.value.google_top1 for w in MobileNetV1Weights}
    rows = []
    for name, paths in shared_models(pretrained).items():
        start = time.perf_counter()
        scores = compare(paths, samples, folders, evaluators=EVALUATORS, workers=args.workers, progress=True)
        rows.append({"model": name, "google_imagenet_top1": google[name], "images": len(samples), **scores})
        rows[-1]["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine = {"machine": "2-core AMD EPYC Zen 4 CPU", "python": platform.python_version()}
    command = f"nice python benchmarks/fidelity.py --every {args.every}"
    args.output.write_text(json.dumps({"command": command, **machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


def format_table(rows: list[dict]) -> str:
    names = [k for k in EVALUATORS if k in rows[0]]
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
