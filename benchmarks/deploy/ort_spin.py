"""ONNX Runtime with its idle threads spinning or sleeping, on a quiet and on a busy machine.

One process, three sessions of the same file (1.0/224 float32 and int8 by default; batch
1, 2 threads): spinning (ONNX Runtime's own default), sleeping, and the project's
default (``deploy.onnx.ort_spin``: spinning only if the cores are idle when the session
is made), timed interleaved (``measure.bench.measure``): first on the machine as it is,
then beside ``--hogs`` processes that keep a core busy each (``yes > /dev/null`` in their
own process group, killed by the script and bounded by ``timeout`` in any case). The
ratio spinning / default is what the default gains (> 1) or costs (< 1) in each condition.

    python benchmarks/deploy/ort_spin.py [--weights mobilenet_v1_1.0_224_quant] [--hogs 1] [--runs 300]

Prints a table and writes benchmarks/results/ort_spin.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.deploy.quantize import calibration_files, export_int8, load_batch
from mobilenet_v1.measure.bench import measure
from mobilenet_v1.measure.conditions import load_average, machine
from mobilenet_v1.weights import load_weights
from mobilenet_v1.weights.grids import int8_grids


@contextmanager
def hogs(count: int, seconds: int):
    """``count`` processes each keeping one core busy, for at most ``seconds``."""
    procs = [
        subprocess.Popen(
            ["timeout", str(seconds), "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # one group with its child: killing timeout alone would orphan yes
        )
        for _ in range(count)
    ]
    try:
        time.sleep(2)  # let the scheduler see them
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def compare(files: dict[str, Path], threads: int, runs: int) -> dict[str, dict]:
    resolution = None
    runners = {}
    for name, path in files.items():
        chosen = {}
        for session, spin in (("spin", True), ("sleep", False), ("default", None)):
            model = OnnxModel(path, threads, spin=spin, metadata=False)
            chosen[session] = model.spin
            shape = model.session.get_inputs()[0].shape
            resolution = resolution or int(shape[-1])
            x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
            runners[f"{name} {session}"] = lambda model=model, x=x: model.run(x)
    timings = measure(runners, runs=runs, warmup=20, rounds=10)
    out = {}
    for name in files:
        t = {session: timings[f"{name} {session}"] for session in ("spin", "sleep", "default")}
        out[name] = {
            **{session: timing.to_dict() for session, timing in t.items()},
            "default_spins": chosen["default"],
            "spin_over_sleep_median": t["spin"].median_ms / t["sleep"].median_ms,
            "spin_over_default_median": t["spin"].median_ms / t["default"].median_ms,
            "spin_over_default_steady": t["spin"].steady_ms / t["default"].steady_ms,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="mobilenet_v1_1.0_224_quant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=1, help="busy processes beside the second measurement")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--calibration", type=Path, default=DATA / "imagenette" / "train")
    parser.add_argument("--out", type=Path, default=RESULTS / "ort_spin.json")
    args = parser.parse_args()
    model, loaded = load_weights(args.weights)
    pre = loaded.preprocessing
    report = {"machine": machine(args.threads), "command": " ".join(["python", *sys.argv]), "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": Path(tmp) / "fp32.onnx", "int8": Path(tmp) / "int8.onnx"}
        export_onnx(model, files["fp32"], pre, labels=loaded.classes)
        images = load_batch(calibration_files(args.calibration, 64), pre)
        export_int8(model, files["int8"], pre, images, labels=loaded.classes, grids=int8_grids(loaded))
        report["quiet"] = {"load_before": load_average(), **compare(files, args.threads, args.runs)}
        with hogs(args.hogs, seconds=600):
            report["busy"] = {
                "hogs": args.hogs,
                "load_before": load_average(),
                **compare(files, args.threads, args.runs),
            }
    print(
        "| condition | model | spin ms | sleep ms | default ms (it spins?) | spin / sleep | spin / default (median) "
        "| (steady) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for condition in ("quiet", "busy"):
        for name in ("fp32", "int8"):
            r = report[condition][name]
            print(
                f"| {condition} | {args.weights} {name} | {r['spin']['median_ms']:.2f} | {r['sleep']['median_ms']:.2f} "
                f"| {r['default']['median_ms']:.2f} ({'yes' if r['default_spins'] else 'no'}) "
                f"| {r['spin_over_sleep_median']:.2f} | {r['spin_over_default_median']:.2f} "
                f"| {r['spin_over_default_steady']:.2f} |"
            )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
