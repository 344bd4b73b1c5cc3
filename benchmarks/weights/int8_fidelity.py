"""int8-exact level on Imagenette val: our integer emulation vs LiteRT.

For each of Google's four shared uint8 models, every val image's uint8 centre crop goes
through LiteRT and through :class:`mobilenet_v1.weights.google_tflite.int8.Int8MobileNetV1`, and the 1001 output
bytes are compared: Imagenette top-1 of each (1000-way), same top-1, bytes within ±1,
exact bytes. Against LiteRT's default kernels (XNNPACK; ours ``kernels="xnnpack"``) on
every ``--every``-th image, and against its reference kernels (BUILTIN_REF; ours
``kernels="reference"``) on every ``--reference-every``-th, since they are slow.
Prints a table, writes JSON (updated after each model).

    nice python benchmarks/weights/int8_fidelity.py [--every 1] [--reference-every 10] \
        [--models NAME...] [--kernels K...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import DATA, RESULTS

from mobilenet_v1.data.folders import ImageFolder, find_samples
from mobilenet_v1.data.transforms import Preprocessing, eval_transform
from mobilenet_v1.deploy.litert import LiteRTModel
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.measure.evaluate import make_loader
from mobilenet_v1.weights.google_tflite.int8 import Int8MobileNetV1, compare_outputs

MODELS = {  # Google's model name: (files, resolution)
    "mobilenet_v1_0.25_128_quant": (["mobilenet_v1_0.25_128_quant.tflite"], 128),
    "mobilenet_v1_0.5_160_quant": (["mobilenet_v1_0.5_160_quant.tflite"], 160),
    "mobilenet_v1_0.75_192_quant": (["mobilenet_v1_0.75_192_quant.tflite"], 192),
    "mobilenet_v1_1.0_224_quant": (
        ["mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v1_1.0_224_quant_head_layers.tflite"],
        224,
    ),
}
PAIRS = {"default": "xnnpack", "reference": "reference"}  # LiteRT kernels -> our kernels


def litert_bytes(model: LiteRTModel, batch: torch.Tensor) -> torch.Tensor:
    nhwc = batch.permute(0, 2, 3, 1).contiguous().numpy()
    return torch.from_numpy(model.run(nhwc))


def run_model(paths: list[Path], resolution: int, samples: list, every: dict[str, int], batch_size: int) -> dict:
    """Output bytes of LiteRT and ours for each kernel pair, then their agreement."""
    wanted = [i for i in range(len(samples)) if any(i % n == 0 for n in every.values())]
    dataset = ImageFolder([samples[i] for i in wanted], eval_transform(Preprocessing(resolution), to_float=False))
    loader = make_loader(dataset, batch_size=batch_size, workers=1)
    runners = {k: (LiteRTModel(paths, kernels=k), Int8MobileNetV1.from_tflite(paths, kernels=PAIRS[k])) for k in every}
    outputs: dict[str, dict[str, list]] = {k: {"litert": [], "ours": [], "targets": []} for k in every}
    seconds = dict.fromkeys(every, 0.0)
    seen = 0
    for batch, targets in loader:
        index = torch.tensor(wanted[seen : seen + len(batch)])
        seen += len(batch)
        for kernels, (litert, ours) in runners.items():
            keep = index % every[kernels] == 0
            if keep.any():
                start = time.perf_counter()
                outputs[kernels]["litert"].append(litert_bytes(litert, batch[keep]))
                outputs[kernels]["ours"].append(ours(batch[keep]))
                outputs[kernels]["targets"].append(targets[keep])
                seconds[kernels] += time.perf_counter() - start
        print(f"  {seen}/{len(wanted)} images", flush=True)
    return {k: summarise(outputs[k], seconds[k]) for k in every}


def summarise(out: dict[str, list], seconds: float) -> dict:
    litert, ours, targets = (torch.cat(out[key]) for key in ("litert", "ours", "targets"))
    return {
        "images": len(targets),
        "litert_top1": top1(litert, targets),
        "ours_top1": top1(ours, targets),
        **compare_outputs(ours, litert),
        "seconds": round(seconds, 1),
    }


def top1(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """1000-way top-1 in percent: output 0 (background) excluded, targets are output indices."""
    return 100.0 * ((outputs[:, 1:].argmax(1) + 1) == targets).double().mean().item()


def format_table(rows: list[dict]) -> str:
    head = (
        "| model | LiteRT kernels | images | LiteRT top-1 | ours top-1 | same top-1 | bytes within ±1 "
        "| exact bytes | max byte diff |"
    )
    lines = [head, "|" + "---|" * 9]
    for row in rows:
        for kernels in [k for k in PAIRS if k in row]:
            r = row[kernels]
            cells = [row["model"], kernels, str(r["images"]), f"{r['litert_top1']:.2f}", f"{r['ours_top1']:.2f}"]
            cells += [f"{r['top1_agreement']:.2f}%", f"{r['bytes_within_1']:.3f}%", f"{r['bytes_exact']:.3f}%"]
            lines.append("| " + " | ".join([*cells, str(r["max_byte_diff"])]) + " |")
    return "\n".join(lines)


def save(path: Path, meta: dict, row: dict) -> None:
    """Add or replace one model's results per kernel set (runs may be separate processes)."""
    rows = {r["model"]: r for r in (json.loads(path.read_text())["rows"] if path.is_file() else [])}
    rows[row["model"]] = rows.get(row["model"], {}) | row
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, "rows": [rows[m] for m in MODELS if m in rows]}, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--every", type=int, default=1, help="default kernels: every n-th val image (1: all 3,925)")
    parser.add_argument("--reference-every", type=int, default=10, help="reference kernels: every n-th val image")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--kernels", nargs="+", choices=list(PAIRS), default=list(PAIRS), help="LiteRT kernel sets")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS / "int8_fidelity.json")
    args = parser.parse_args()
    pretrained = args.data / "pretrained"
    labels = (pretrained / "imagenet_labels.txt").read_text().splitlines()
    wnids = (pretrained / "imagenet_wnids.txt").read_text().split()
    samples, _ = find_samples(args.data / "imagenette" / "val", labels, wnids)
    every = {k: n for k, n in (("default", args.every), ("reference", args.reference_every)) if k in args.kernels}
    options = " ".join(f"--{k}-every {n}" for k, n in every.items())
    command = f"nice python benchmarks/weights/int8_fidelity.py {options}"
    command = command.replace("--default-every", "--every")
    meta = {"machine": f"{os.cpu_count()}-core {cpu_name()}", "python": platform.python_version()}
    meta["versions"] = {m: version(m) for m in ("torch", "ai-edge-litert")}
    rows = []
    for name in args.models:
        files, resolution = MODELS[name]
        print(name)
        paths = [pretrained / f for f in files]
        results = run_model(paths, resolution, samples, every, args.batch_size)
        for kernels, result in results.items():
            result["command"] = f"{command} --kernels {kernels} --models {name}"
        rows.append({"model": name, **results})
        save(args.output, meta, rows[-1])
    print(format_table(rows))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
