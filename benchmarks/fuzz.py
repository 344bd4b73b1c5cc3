"""Fuzz the readers with thousands of mutated inputs; print a table, write results/fuzz.json.

Each target runs in worker processes so that a crash (a signal such as SIGSEGV) is
counted, with the case that caused it, instead of ending the run; a case that takes
longer than the time limit counts as a hang. Outcomes: ``ok`` (read), ``clear error``
(ValueError/FileNotFoundError, one line naming the file), ``other exception``, ``hang``,
``crash``. The mutations and seeds are those of tests/test_fuzz.py.

    .venv/bin/python benchmarks/fuzz.py            # ~12,500 cases
    .venv/bin/python benchmarks/fuzz.py --scale 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import ROOT

sys.path.insert(0, str(ROOT / "tests"))

from test_fuzz import (
    CLEAR_ERRORS,
    IMAGE_FORMATS,
    TFLITE,
    fix_png_crcs,
    image_seeds,
    mutate,
    random_edits,
    safetensors_seed,
    tflite_structure,
    time_limit,
)

# target: (cases at scale 1, what it reads)
TARGETS: dict[str, tuple[int, str]] = {
    "tflite_reader": (3000, "tflite_reader.read_tflite: shared 0.25/128 model, tables or anywhere"),
    "tflite_import": (400, "weights.load_weights(.tflite): reader + converter, tables mutated"),
    "safetensors": (2000, "weights_io.load_safetensors: JSON header or anywhere"),
    "random_bytes": (1000, "load_weights/load_image on random bytes (.tflite/.safetensors/images)"),
    **{f"image{ext}": (1000, f"transforms.load_image: mutated {fmt}") for ext, fmt in IMAGE_FORMATS.items()},
    "image.png-crc": (1000, "transforms.load_image: mutated PNG, chunk CRCs recomputed"),
    "torchvision_png": (40, "torchvision decode_image on mutated PNGs (why PNGs go to PIL)"),
}
TIME_LIMIT_S = 20.0


def make_case(target: str, index: int, seeds: dict[str, Any]) -> tuple[str, bytes, Any]:
    """(file suffix, bytes, reader) of case ``index``: the same every run."""
    from mobilenet_v1.data.images import load_image
    from mobilenet_v1.weights import load_weights

    rng = random.Random(f"{target}-{index}")
    if target == "tflite_reader":
        from mobilenet_v1.weights.tflite.reader import read_tflite

        data, structure = seeds["tflite"]
        return ".tflite", mutate(data, random_edits(rng), structure if rng.random() < 0.8 else None), read_tflite
    if target == "tflite_import":
        data, structure = seeds["tflite"]
        return ".tflite", mutate(data, random_edits(rng), structure), load_weights
    if target == "safetensors":
        data = seeds["safetensors"]
        header = range(8 + int.from_bytes(data[:8], "little"))
        return ".safetensors", mutate(data, random_edits(rng), header if rng.random() < 0.7 else None), load_weights
    if target == "random_bytes":
        ext = rng.choice([".tflite", ".safetensors", *IMAGE_FORMATS])
        data = rng.randbytes(rng.randrange(4096))
        return ext, data, load_image if ext in IMAGE_FORMATS else load_weights
    if target == "torchvision_png":
        return ".png", mutate(seeds["images"][".png"], random_edits(rng)), decode_with_torchvision
    if target == "image.png-crc":
        return ".png", fix_png_crcs(mutate(seeds["images"][".png"], random_edits(rng))), load_image
    ext = target.removeprefix("image")
    return ext, mutate(seeds["images"][ext], random_edits(rng)), load_image


def decode_with_torchvision(path: Path) -> None:
    from torchvision.io import ImageReadMode, decode_image

    try:
        decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: {str(exc).splitlines()[0]}") from None


def run_worker(target: str, start: int, stop: int, progress: Path) -> None:
    """Run cases [start, stop); ``progress`` holds the current case and the counts so far (JSON)."""
    folder = Path(tempfile.mkdtemp())
    seeds = {"images": image_seeds(), "safetensors": safetensors_seed(folder)}
    if TFLITE.is_file():
        data = TFLITE.read_bytes()
        seeds["tflite"] = (data, tflite_structure(data))
    counts: Counter[str] = Counter()
    for index in range(start, stop):
        progress.write_text(json.dumps({"index": index, "counts": counts}))
        ext, data, read = make_case(target, index, seeds)
        path = folder / f"case{ext}"
        path.write_bytes(data)
        try:
            with time_limit(TIME_LIMIT_S):
                read(path)
            counts["ok"] += 1
        except CLEAR_ERRORS as exc:
            clear = path.name in str(exc) and len(str(exc).splitlines()) == 1
            counts["clear error" if clear else f"unclear message: {str(exc)[:80]}"] += 1
        except TimeoutError:
            counts["hang"] += 1
        except Exception as exc:  # the bug this benchmark looks for
            counts[f"other exception: {type(exc).__name__}: {str(exc)[:80]}"] += 1
    progress.write_text(json.dumps({"index": stop, "counts": counts}))


def run_target(target: str, count: int) -> dict[str, Any]:
    """All cases of ``target`` in workers; a worker killed by a signal is a crash, then go on."""
    counts: Counter[str] = Counter()
    crashes: list[int] = []
    start, began = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        while start < count:
            cmd = [sys.executable, __file__, "--worker", target, str(start), str(count), str(progress)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            state = json.loads(progress.read_text())
            counts.update(state["counts"])
            if proc.returncode == 0:
                break
            crashes.append(state["index"])
            counts[f"crash (signal {-proc.returncode})" if proc.returncode < 0 else "worker error"] += 1
            start = state["index"] + 1
    return {
        "cases": count,
        "seconds": round(time.perf_counter() - began, 1),
        "outcomes": dict(counts),
        "crash_cases": crashes[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every target's case count")
    parser.add_argument("--targets", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/fuzz.json")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        target, start, stop, progress = args.worker
        run_worker(target, int(start), int(stop), Path(progress))
        return
    results = {}
    print("| target | cases | ok | clear error | other | hang | crash | s |\n|---|---|---|---|---|---|---|---|")
    for target in args.targets:
        if target.startswith("tflite") and not TFLITE.is_file():
            print(f"| {target} | skipped: {TFLITE} not found |")
            continue
        result = run_target(target, max(1, round(TARGETS[target][0] * args.scale)))
        result["what"] = TARGETS[target][1]
        results[target] = result
        print(table_row(target, result), flush=True)
    report = {
        "command": f"benchmarks/fuzz.py --scale {args.scale}",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def table_row(target: str, result: dict[str, Any]) -> str:
    out = result["outcomes"]
    other = sum(v for k, v in out.items() if k.startswith(("other", "unclear", "worker")))
    crash = sum(v for k, v in out.items() if k.startswith("crash"))
    return (
        f"| {target} | {result['cases']} | {out.get('ok', 0)} | {out.get('clear error', 0)} | {other} "
        f"| {out.get('hang', 0)} | {crash} | {result['seconds']} |"
    )


if __name__ == "__main__":
    main()
