"""The paper's Tables 4-7 trained on Imagenette: every run of a plan, resumable, one JSON.

Each run is ``mobilenet-v1 train`` from scratch (one recipe for all, ``RECIPE_ARGS``), then
the tie-rule-free top-1 of its final model on ``imagenette/val`` (``evaluate_folder``),
appended to ``benchmarks/results/paper_tables.json`` with its exact mult-adds and
parameters (``model_cost``, 10 classes), seed, epochs, wall time, machine and command. Runs
already in the JSON are skipped and an interrupted run resumes from its last checkpoint,
so a plan can be split over several sessions. ``--report`` writes docs/paper.md's tables,
verdicts and figures (``paper_report.py``). The plans and their measured costs: docs/paper.md.

python benchmarks/model/paper_tables.py --table 4 [--seeds 0 1 2] [--epochs 30] [--plan cpu|full] [-- TRAIN OPTIONS]
python benchmarks/model/paper_tables.py --report
python benchmarks/model/paper_tables.py --table all --smoke --results /tmp/smoke.json   # 1 image per class, 1 step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS, ROOT

from mobilenet_v1 import Classifier, model_cost
from mobilenet_v1.cli import main as cli
from mobilenet_v1.config import MobileNetV1Config
from mobilenet_v1.data.images import list_images
from mobilenet_v1.files import write_text
from mobilenet_v1.measure.evaluate import evaluate_folder
from mobilenet_v1.train.checkpoint import LAST
from mobilenet_v1.untrusted import parse_json

RESULTS = RESULTS / "paper_tables.json"
DOC = ROOT / "docs" / "paper.md"
WORK = Path(os.environ.get("MOBILENET_V1_CACHE") or Path.home() / ".cache" / "mobilenet-v1") / "paper-runs"
# One recipe for every model, from scratch (docs/paper.md says why "modern" and lr 0.1).
RECIPE_ARGS = ["--scratch", "--recipe", "modern", "--lr", "0.1", "--batch-size", "64", "--bf16", "--channels-last"]
MODEL_KEY = ("plan", "variant", "alpha", "resolution", "seed", "epochs")
KEY = ("table", *MODEL_KEY)
IMAGENETTE_CLASSES = 10


@dataclass(frozen=True)
class Model:
    variant: str
    alpha: float
    resolution: int


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: its models in the order of its rows (``cost.PAPER_ROWS``)."""

    models: tuple[Model, ...]
    seeds: tuple[int, ...]
    epochs: int


def _sweep(alphas: tuple[float, ...], resolutions: tuple[int, ...]) -> tuple[Model, ...]:
    return tuple(Model("standard", a, r) for a in alphas for r in resolutions)


PLANS: dict[str, dict[str, Table]] = {
    # Scaled to 2 CPU cores (each table <= 100 min, docs/paper.md): Table 4 at alpha 0.25,
    # Table 5 as 0.75x of alpha 0.5 against the shallow alpha 0.5 (27-28 M mult-adds each,
    # as 325 vs 307 M in the paper), the sweeps at 128 px and at alpha 0.25.
    "cpu": {
        "4": Table((Model("full-conv", 0.25, 128), Model("standard", 0.25, 128)), (0, 1), 15),
        "5": Table((Model("standard", 0.375, 128), Model("shallow", 0.5, 128)), (0, 1), 15),
        "6": Table(_sweep((1.0, 0.75, 0.5, 0.25), (128,)), (0,), 15),
        "7": Table(_sweep((0.25,), (224, 192, 160, 128)), (0,), 15),
    },
    # The paper's own configurations (1.0 MobileNet-224 and its variants), for a GPU.
    "full": {
        "4": Table((Model("full-conv", 1.0, 224), Model("standard", 1.0, 224)), (0, 1), 40),
        "5": Table((Model("standard", 0.75, 224), Model("shallow", 1.0, 224)), (0, 1), 40),
        "6": Table(_sweep((1.0, 0.75, 0.5, 0.25), (224,)), (0,), 40),
        "7": Table(_sweep((1.0,), (224, 192, 160, 128)), (0,), 40),
    },
}


def planned_runs(plan: str, tables: list[str], seeds: list[int] | None, epochs: int | None) -> list[dict[str, Any]]:
    """The runs of ``tables`` in ``plan``, each with its exact cost (for Imagenette's head)."""
    runs = []
    for name in tables:
        table = PLANS[plan][name]
        for seed in table.seeds if seeds is None else seeds:
            for m in table.models:
                config = MobileNetV1Config(alpha=m.alpha, variant=m.variant, num_classes=IMAGENETTE_CLASSES)
                cost = model_cost(config, m.resolution)
                runs.append(
                    {"plan": plan, "table": name, "variant": m.variant, "alpha": m.alpha}
                    | {"resolution": m.resolution, "mult_adds": cost.mult_adds, "params": cost.params}
                    | {"seed": seed, "epochs": epochs or table.epochs}
                )
    return runs


def run_key(run: dict[str, Any], fields: tuple[str, ...] = KEY) -> tuple:
    return tuple(run[k] for k in fields)


def run_name(run: dict[str, Any]) -> str:
    return "{plan}-{variant}-a{alpha:g}-r{resolution}-s{seed}-e{epochs}".format(**run)


def machine() -> str:
    """The CPU (or GPU), its core count, torch and its threads: what a time was measured on."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    where = f"{os.cpu_count()}-core {names[0] if names else platform.processor() or platform.machine()}"
    if torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name()}"
    return f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def train_command(run: dict[str, Any], data: Path, run_dir: Path, extra: list[str]) -> list[str]:
    """The ``mobilenet-v1 train`` arguments that make ``run`` from scratch."""
    model = ["--alpha", f"{run['alpha']:g}", "--variant", run["variant"], "--resolution", str(run["resolution"])]
    seed = ["--epochs", str(run["epochs"]), "--seed", str(run["seed"])]
    return ["train", "--data", str(data), "--output", str(run_dir), *model, *RECIPE_ARGS, *seed, *extra]


def train(argv: list[str], run_dir: Path, extra: list[str]) -> bool:
    """Run ``argv``, or resume it from its last checkpoint; True if it resumed."""
    resume = (run_dir / LAST).is_file()
    if not resume and run_dir.exists():  # started, but killed before its first checkpoint
        print(f"{run_dir} holds no checkpoint: starting it again", file=sys.stderr)
        shutil.rmtree(run_dir)
    code = cli(["train", "--resume", str(run_dir), *extra] if resume else argv)
    if code != 0:
        raise SystemExit(f"mobilenet-v1 {' '.join(argv)} exited with {code}")
    return resume


def train_and_evaluate(run: dict[str, Any], data: Path, work: Path, extra: list[str], workers: int) -> dict[str, Any]:
    """Train ``run`` (unless its final model exists) and measure its final model's val top-1."""
    run_dir = work / run_name(run)
    final = run_dir / "model-final.safetensors"
    start = time.perf_counter()
    argv = train_command(run, data, run_dir, extra)
    resumed = final.is_file() or train(argv, run_dir, extra)
    result = evaluate_folder(Classifier.from_weights(final), data / "val", workers=workers)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    evaluation = f"mobilenet-v1 eval {data / 'val'} --weights {final} --json"
    return run | {
        "trained_for_table": run["table"],
        "top1": round(result.top1_ties_split, 4),
        "final_val_acc": summary["final_val_acc"],
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "resumed": resumed,  # then wall_seconds counts this session only; train_seconds all of it
        "machine": machine(),
        "command": f"mobilenet-v1 {' '.join(argv)} && {evaluation}",
    }


# the fields of a run in the results file and what each must be (the report reads them all)
RUN_FIELDS: dict[str, tuple[type, ...]] = {
    "plan": (str,),
    "table": (str,),
    "trained_for_table": (str,),
    "variant": (str,),
    "alpha": (int, float),
    "resolution": (int,),
    "seed": (int,),
    "epochs": (int,),
    "top1": (int, float),
    "wall_seconds": (int, float),
}


def load_results(path: Path) -> list[dict[str, Any]]:
    """The runs recorded in ``path`` ([] when there is no file yet). The file is read as
    untrusted input: bounded JSON, and every run's fields of the types the report needs;
    anything else is one ``ValueError`` naming the file and the first bad entry."""
    if not path.is_file():
        return []
    data = parse_json(path.read_bytes(), what=str(path), max_bytes=16 << 20, max_depth=6)
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise ValueError(f"{path}: expected a JSON object with a list of 'runs'")
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ValueError(f"{path}: run {index} is not a JSON object")
        for key, types in RUN_FIELDS.items():
            value = run.get(key)
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"{path}: run {index}: {key!r} must be a {types[0].__name__}, got {value!r:.40}")
        if run["variant"] not in ("standard", "full-conv", "shallow") or not 0 <= run["top1"] <= 100:
            raise ValueError(
                f"{path}: run {index}: variant {run['variant']!r:.40} or top1 {run['top1']!r} out of range"
            )
        if run["epochs"] < 1 or run["wall_seconds"] < 0 or not 0 < run["alpha"] <= 4 or not 32 <= run["resolution"]:
            raise ValueError(f"{path}: run {index}: epochs, wall_seconds, alpha or resolution out of range")
    return runs


def save_result(path: Path, record: dict[str, Any]) -> None:
    runs = [r for r in load_results(path) if run_key(r) != run_key(record)] + [record]
    write_text(path, json.dumps({"runs": runs}, indent=2) + "\n", make_parents=True)


def tiny_imagenette(source: Path, target: Path, per_class: int) -> Path:
    """``per_class`` training and validation images of each class of ``source``, copied."""
    for split in ("train", "val"):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            (target / split / folder.name).mkdir(parents=True)
            for image in list_images(folder)[:per_class]:
                shutil.copy(image, target / split / folder.name / image.name)
    return target


def run_plan(args: argparse.Namespace, data: Path, work: Path, extra: list[str]) -> None:
    """Train the runs that are not in the results yet; a model another table already trained
    with the same seed and epochs (the same weights: runs are deterministic) is reused."""
    tables = sorted(PLANS[args.plan]) if args.table == "all" else [args.table]
    runs = planned_runs(args.plan, tables, args.seeds, 1 if args.smoke else args.epochs)
    for i, run in enumerate(runs, 1):
        done = load_results(args.results)
        if run_key(run) in {run_key(r) for r in done}:
            print(f"[{i}/{len(runs)}] table {run['table']} {run_name(run)}: done, skipped", file=sys.stderr)
            continue
        same = [r for r in done if run_key(r, MODEL_KEY) == run_key(run, MODEL_KEY)]
        print(f"[{i}/{len(runs)}] table {run['table']} {run_name(run)}", file=sys.stderr)
        if same:
            record = same[0] | {"table": run["table"]}
        else:
            record = train_and_evaluate(run, data, work, extra, args.workers) | {"runner": args.runner}
        save_result(args.results, record)
        print(f"{run_name(run)}: top-1 {record['top1']:.2f}%, {record['wall_seconds']:.0f} s", file=sys.stderr)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=("4", "5", "6", "7", "all"), help="train this table's runs")
    parser.add_argument("--plan", choices=tuple(PLANS), default="cpu", help="cpu: scaled; full: the paper's sizes")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the plan's seeds for the table")
    parser.add_argument("--epochs", type=int, help="default: the plan's")
    parser.add_argument("--device", default="auto", help="as `train --device`")
    parser.add_argument("--workers", type=int, default=2, help="as `train --workers`")
    parser.add_argument("--data", type=Path, default=DATA / "imagenette")
    parser.add_argument("--work", type=Path, default=WORK, help=f"run folders (default {WORK})")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="1 image per class, one step per model")
    parser.add_argument("--report", action="store_true", help="write the tables and figures of --doc")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if args.table is None and not args.report:
        parser.error("nothing to do: give --table and/or --report")
    if args.smoke and args.results.resolve() == RESULTS.resolve():
        parser.error(f"--smoke would overwrite {RESULTS}: give --results")
    if args.smoke and args.report and args.doc.resolve() == DOC.resolve():
        parser.error(f"--smoke --report would overwrite {DOC}: give --doc")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parse_args(argv[:split])
    args.runner = " ".join(["python", "benchmarks/model/paper_tables.py", *argv])
    extra = ["--device", args.device, "--workers", str(args.workers), *argv[split + 1 :]]
    if args.table and args.smoke:
        with tempfile.TemporaryDirectory(prefix="paper-smoke-") as tmp:
            data = tiny_imagenette(args.data, Path(tmp) / "data", per_class=1)
            run_plan(args, data, Path(tmp) / "runs", [*extra, "--batch-size", str(IMAGENETTE_CLASSES)])
    elif args.table:
        run_plan(args, args.data, args.work, extra)
    if args.report:
        from paper_report import write_report

        write_report(load_results(args.results), args.doc)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as exc:  # a bad --results/--doc: one line, as the CLI does
        print(f"paper_tables.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
