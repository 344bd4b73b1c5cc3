"""Fuzz the readers with thousands of mutated inputs; print a table, write results/fuzz.json.

Each target runs in worker processes so that a crash (a signal such as SIGSEGV) is
counted, with the case that caused it, instead of ending the run; a case that takes
longer than the time limit counts as a hang (SIGALRM in the worker; a worker stuck in C
code past twice the limit is killed by the parent and the case counted as a hang). Each
worker's address space is limited (``--memory-limit-gb``), and the peak resident memory of
the workers (after the imports and seeds, ~0.4 GB) is recorded with the case that reached
it. Outcomes: ``ok`` (read), ``clear error`` (ValueError/FileNotFoundError, one line naming
the file), ``other exception``, ``hang``, ``crash``. The mutations and seeds are those of
tests/robustness/test_fuzz.py.

    .venv/bin/python benchmarks/robustness/fuzz.py            # ~52,500 cases
    .venv/bin/python benchmarks/robustness/fuzz.py --scale 0.1
    .venv/bin/python benchmarks/robustness/fuzz.py --targets image.exif --merge   # keep the other targets' results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS, ROOT

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "robustness")]  # conftest, test_fuzz

from test_fuzz import (
    CLEAR_ERRORS,
    IMAGE_FORMATS,
    TFLITE,
    animation_case,
    exif_case,
    fix_png_crcs,
    header_case,
    image_seeds,
    metadata_case,
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
    "safetensors": (2000, "weights.load_safetensors: JSON header or anywhere"),
    "random_bytes": (1000, "load_weights/load_image on random bytes (.tflite/.safetensors/images)"),
    **{f"image{ext}": (1000, f"transforms.load_image: mutated {fmt}") for ext, fmt in IMAGE_FORMATS.items()},
    "image.png-crc": (1000, "transforms.load_image: mutated PNG, chunk CRCs recomputed"),
    "torchvision_png": (40, "torchvision decode_image on mutated PNGs (why PNGs go to PIL)"),
    "image.exif": (10_000, "data.images.load_image: JPEG/PNG/WebP/TIFF, any orientation, EXIF block edited or cut"),
    "image.animation": (10_000, "data.images.load_image: GIF/WebP/APNG/TIFF of 1-64 frames, later frames broken"),
    "image.header": (10_000, "data.images.load_image: JPEG/PNG/GIF/BMP/WebP/TIFF claiming other sizes"),
    "metadata_json": (10_000, "untrusted.parse_json: a checkpoint's JSON header, edits, deep/long/escaped splices"),
    **{
        f"model{ext}": (count, f"deploy.formats.load_exported: our tiny {ext} export, bytes mutated anywhere")
        for ext, count in ((".onnx", 1000), (".tflite", 1000), (".pte", 1000), (".pt2", 2000))
    },
}
# The exports the model targets mutate: one tiny model (alpha 0.25, 32 px, 3 classes) per format.
MODEL_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pte": "executorch", ".pt2": "pt2"}
SEEDS_ENV = "MOBILENET_V1_FUZZ_SEEDS"
TIME_LIMIT_S = 20.0


def make_case(target: str, index: int, seeds: dict[str, Any]) -> tuple[str, bytes, Any]:
    """(file suffix, bytes, reader) of case ``index``: the same every run."""
    from mobilenet_v1.data.images import load_image
    from mobilenet_v1.weights import load_weights

    rng = random.Random(f"{target}-{index}")
    generated = {"image.exif": exif_case, "image.animation": animation_case, "image.header": header_case}
    if target in generated:
        ext, data = generated[target](rng)
        return ext, data, load_image
    if target == "metadata_json":
        from mobilenet_v1.untrusted import parse_json

        return ".json", metadata_case(rng, seeds["safetensors"]), lambda p: parse_json(p.read_bytes(), what=p.name)
    if target == "tflite_reader":
        from mobilenet_v1.weights.google_tflite.reader import read_tflite

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
    if target.startswith("model"):
        ext = target.removeprefix("model")
        return ext, mutate(seeds["models"][ext], random_edits(rng)), load_model
    ext = target.removeprefix("image")
    return ext, mutate(seeds["images"][ext], random_edits(rng)), load_image


def load_model(path: Path) -> None:
    """An exported file under its runtime, a package's native code trusted: what is fuzzed
    is the file, and a ``.pt2`` whose bytes changed must be refused before it is loaded."""
    from mobilenet_v1.deploy.formats import load_exported

    load_exported(path, threads=1, trust_native_code=True)


def model_seeds(folder: Path) -> Path:
    """Export the tiny model to every format into ``folder`` (once, before the workers)."""
    import torch

    from mobilenet_v1 import mobilenet_v1
    from mobilenet_v1.data.transforms import Preprocessing
    from mobilenet_v1.deploy.formats import export_as

    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, num_classes=3, padding="same").eval()
    for ext, fmt in MODEL_FORMATS.items():
        export_as(fmt, model, folder / f"seed{ext}", Preprocessing(32), labels=["a", "b", "c"])
    return folder


def decode_with_torchvision(path: Path) -> None:
    from torchvision.io import ImageReadMode, decode_image

    try:
        decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: {str(exc).splitlines()[0]}") from None


def run_worker(target: str, start: int, stop: int, progress: Path, memory_limit_gb: float) -> None:
    """Run cases [start, stop); ``progress`` holds the current case, the counts so far and
    the peak resident memory with the case that reached it (JSON)."""
    import warnings

    warnings.simplefilter("ignore")  # "... has N frames; using the first", PIL's warnings
    folder = Path(tempfile.mkdtemp())
    seeds = {"images": image_seeds(), "safetensors": safetensors_seed(folder)}
    if TFLITE.is_file():
        data = TFLITE.read_bytes()
        seeds["tflite"] = (data, tflite_structure(data))
    if SEEDS_ENV in os.environ:
        seeds["models"] = {ext: (Path(os.environ[SEEDS_ENV]) / f"seed{ext}").read_bytes() for ext in MODEL_FORMATS}
    private_tmp = folder / "tmp"  # where a package is extracted: nothing may stay there
    private_tmp.mkdir()
    os.environ["TMPDIR"] = str(private_tmp)
    tempfile.tempdir = None
    if target.startswith("model"):  # the runtimes' own caches are made once, by the seed itself
        ext = target.removeprefix("model")
        (folder / f"seed{ext}").write_bytes(seeds["models"][ext])
        load_model(folder / f"seed{ext}")
    baseline = set(private_tmp.iterdir())
    if memory_limit_gb > 0:  # a case that allocates more fails (MemoryError: an "other exception")
        limit = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    counts: Counter[str] = Counter()
    peak_kb, peak_case = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
    for index in range(start, stop):
        state = {"index": index, "counts": counts, "peak_rss_kb": peak_kb, "peak_case": peak_case}
        progress.write_text(json.dumps(state))
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
        left = set(private_tmp.iterdir()) - baseline
        if left:
            counts["left files in the temporary folder"] += 1
            for entry in left:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if rss > peak_kb:
            peak_kb, peak_case = rss, index
    progress.write_text(json.dumps({"index": stop, "counts": counts, "peak_rss_kb": peak_kb, "peak_case": peak_case}))


def run_target(target: str, count: int, memory_limit_gb: float) -> dict[str, Any]:
    """All cases of ``target`` in workers; a worker killed by a signal is a crash, one that
    makes no progress for twice the time limit is killed (a hang); then go on after the case."""
    counts: Counter[str] = Counter()
    crashes: list[int] = []
    hangs: list[int] = []
    peak_kb, peak_case = 0, None
    start, began = 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        progress = Path(tmp) / "progress"
        while start < count:
            progress.unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--worker", target, str(start), str(count), str(progress)]
            proc = subprocess.Popen([*cmd, "--memory-limit-gb", str(memory_limit_gb)], stdout=subprocess.DEVNULL)
            hung, last = False, (None, time.monotonic())
            while proc.poll() is None:
                time.sleep(0.5)
                index = read_progress(progress)["index"]
                if index != last[0]:
                    last = (index, time.monotonic())
                elif index is not None and time.monotonic() - last[1] > 2 * TIME_LIMIT_S:
                    proc.kill()
                    proc.wait()
                    hung = True
            state = read_progress(progress)
            if state["index"] is None:
                raise RuntimeError(f"the {target} worker stopped before its first case (exit code {proc.returncode})")
            counts.update(state["counts"])
            if state["peak_rss_kb"] > peak_kb:
                peak_kb, peak_case = state["peak_rss_kb"], state["peak_case"]
            if proc.returncode == 0:
                break
            if hung:
                hangs.append(state["index"])
                counts["hang (killed)"] += 1
            else:
                crashes.append(state["index"])
                counts[f"crash (signal {-proc.returncode})" if proc.returncode < 0 else "worker error"] += 1
            start = state["index"] + 1
    return {
        "cases": count,
        "seconds": round(time.perf_counter() - began, 1),
        "outcomes": dict(counts),
        "crash_cases": crashes[:20],
        "hang_cases": hangs[:20],
        "peak_rss_mb": round(peak_kb / 1024),
        "peak_rss_case": peak_case,
    }


def read_progress(progress: Path) -> dict[str, Any]:
    """The worker's last progress; ``index`` None before its first case (or mid-write)."""
    try:
        return json.loads(progress.read_text())
    except (OSError, ValueError):
        return {"index": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every target's case count")
    parser.add_argument("--targets", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    parser.add_argument("--output", type=Path, default=RESULTS / "fuzz.json")
    parser.add_argument("--merge", action="store_true", help="keep the results of other targets in --output")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0, help="address space of a worker (0: none)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        target, start, stop, progress = args.worker
        run_worker(target, int(start), int(stop), Path(progress), args.memory_limit_gb)
        return
    results = {}
    if args.merge and args.output.is_file():
        results = json.loads(args.output.read_text())["results"]
    print("| target | cases | ok | clear error | other | hang | crash | peak MB | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    seeds = tempfile.TemporaryDirectory()
    if any(t.startswith("model") for t in args.targets):
        os.environ[SEEDS_ENV] = str(model_seeds(Path(seeds.name)))  # inherited by the workers
    for target in args.targets:
        if target.startswith("tflite") and not TFLITE.is_file():
            print(f"| {target} | skipped: {TFLITE} not found |")
            continue
        result = run_target(target, max(1, round(TARGETS[target][0] * args.scale)), args.memory_limit_gb)
        result["what"] = TARGETS[target][1]
        results[target] = result
        print(table_row(target, result), flush=True)
    command = f"benchmarks/robustness/fuzz.py --scale {args.scale}"
    if args.merge:
        command += f" (--merge: {' '.join(args.targets)} rerun)"
    report = {
        "command": command,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    seeds.cleanup()


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def table_row(target: str, result: dict[str, Any]) -> str:
    out = result["outcomes"]
    other = sum(v for k, v in out.items() if k.startswith(("other", "unclear", "worker", "left")))
    crash = sum(v for k, v in out.items() if k.startswith("crash"))
    hang = sum(v for k, v in out.items() if k.startswith("hang"))
    return (
        f"| {target} | {result['cases']} | {out.get('ok', 0)} | {out.get('clear error', 0)} | {other} "
        f"| {hang} | {crash} | {result.get('peak_rss_mb', '')} | {result['seconds']} |"
    )


if __name__ == "__main__":
    main()
