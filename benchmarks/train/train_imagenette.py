"""Fine-tune Google's weights or train from scratch on Imagenette with ``mobilenet-v1 train``.

Runs the real CLI in-process, then prints val top-1 per epoch with wall time, evaluates the
final model on the val folder as ``mobilenet-v1 eval --json`` does (``top1_ties_split``:
tie-rule-free) and writes ``benchmarks/results/train_<name>.json``. Everything after ``--``
goes to ``train``:

nice python benchmarks/train/train_imagenette.py --name finetune_1.0_224_head -- \\
    --weights mobilenet_v1_1.0_224_quant --freeze-backbone --epochs 1 --bf16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.classify import Classifier
from mobilenet_v1.cli import main as cli
from mobilenet_v1.measure.evaluate import evaluate_folder
from mobilenet_v1.weights import read_wnids


def run(name: str, data: Path, train_args: list[str], work: Path) -> dict:
    run_dir = work / name
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists; remove it or pick another --name")
    start = time.perf_counter()
    code = cli(["train", "--data", str(data), "--output", str(run_dir), *train_args])
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"train exited with {code}")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    final = Classifier.from_weights(str(run_dir / "model-final.safetensors"))
    evaluated = evaluate_folder(final, data / "val", wnids=read_wnids(), batch_size=64, workers=2)
    return {
        "name": name,
        "command": "mobilenet-v1 train --data " + str(data) + " " + " ".join(train_args),
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": wall,
        "epochs": [
            {k: row[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_seconds")}
            for row in history
        ],
        "best_val_acc": summary["best_val_acc"],
        "final_eval": {"dir": str(data / "val"), **evaluated.to_dict()},
        "skipped_images": summary["skipped_images"],
        "run_dir": str(run_dir),
    }


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--data", type=Path, default=DATA / "imagenette")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mobilenet_v1_runs"))
    args = parser.parse_args(argv[:split])
    result = run(args.name, args.data, argv[split + 1 :], args.work)
    print(f"{result['command']}\n{torch.get_num_threads()} thread(s), wall {result['wall_seconds']:.0f} s")
    print(f"final model on {args.data / 'val'}: top-1 (ties split) {result['final_eval']['top1_ties_split']:.2f}%")
    print("| epoch | train loss | train acc | val loss | val top-1 | train s |")
    print("|---|---|---|---|---|---|")
    for row in result["epochs"]:
        print(
            f"| {row['epoch']} | {row['train_loss']:.4f} | {100 * row['train_acc']:.2f}% | {row['val_loss']:.4f} | "
            f"{100 * row['val_acc']:.2f}% | {row['train_seconds']:.0f} |"
        )
    out = RESULTS / f"train_{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
