"""What distillation from stored soft labels costs against the plain fine-tune of the same epochs.

Runs ``mobilenet-v1 train`` in-process on Imagenette, alternating the plain fine-tune of
the student and the same with ``--teacher`` (stored soft labels, the default) for
``--rounds`` rounds, so that both see the same machine load. Both take the ``finetune``
recipe (``--teacher`` alone would take ``distill``, whose longer schedule and batch norm
are measured in docs/training.md, "Distillation's recipe"), so the teacher's cost is all
that differs. The first distilled run
labels the photos unless the cache already holds the store (its wall time then includes
that one-off pass, reported apart as what the labelling line says); the training steps'
time (``train_seconds`` of ``summary.json``) never does. Prints a table and writes
``benchmarks/results/distill_walltime.json``:

python benchmarks/train/distill_walltime.py --teacher RUN/model-final.safetensors
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS
from train_imagenette import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher's weights (knowing the data's classes)")
    parser.add_argument("--weights", default="mobilenet_v1_0.25_128_quant", help="the student's starting weights")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA / "imagenette")
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_walltime.json")
    args = parser.parse_args()
    common = ["--weights", args.weights, "--epochs", str(args.epochs), "--recipe", "finetune"]
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for kind, extra in (("plain", []), ("distilled", ["--teacher", args.teacher])):
                result = run(f"{kind}{round_}", args.data, [*common, *extra], Path(work))
                summary = json.loads((Path(result["run_dir"]) / "summary.json").read_text())
                runs.append(
                    {
                        "kind": kind,
                        "round": round_,
                        "command": result["command"],
                        "wall_seconds": result["wall_seconds"],
                        "train_seconds": summary["train_seconds"],
                        "top1_ties_split": result["final_eval"]["top1_ties_split"],
                    }
                )
    seconds = {kind: [r["train_seconds"] for r in runs if r["kind"] == kind] for kind in ("plain", "distilled")}
    ratio = statistics.median(seconds["distilled"]) / statistics.median(seconds["plain"])
    print("| run | training steps (s) | wall (s) | final top-1 (ties split) |")
    print("|---|---|---|---|")
    for r in runs:
        row = [f"{r['kind']} {r['round']}", f"{r['train_seconds']:.1f}", f"{r['wall_seconds']:.1f}"]
        print("| " + " | ".join([*row, f"{r['top1_ties_split']:.2f}%"]) + " |")
    print(f"training steps, distilled / plain (medians): {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "train_seconds_ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
