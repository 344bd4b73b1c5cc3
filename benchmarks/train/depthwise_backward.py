"""The CPU kernels behind ``mobilenet_v1.train.accel.layers``: per-layer timings of MobileNet V1's shapes.

For every depthwise layer (batch 32, channels_last) it times PyTorch's backward (oneDNN,
input and weight gradients) against ``layers.depthwise_conv2d``'s backward; for the
thin layers PyTorch's channels_last batch norm (forward + backward) against
``layers.BatchNorm2d``; and for every batch-norm shape in float32, PyTorch's
``nn.BatchNorm2d`` + ``nn.ReLU(inplace=True)`` against ``layers.batch_norm_act`` (forward +
input gradient). Median of ``--runs``; prints a table, writes JSON.

    nice python benchmarks/train/depthwise_backward.py [--alpha 1.0 0.25] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.measure.conditions import cpu_name
from mobilenet_v1.train.accel.layers import BatchNorm2d, batch_norm_act, depthwise_conv2d

BATCH = 32
RESOLUTION = {1.0: 224, 0.75: 192, 0.5: 160, 0.25: 128}


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def depthwise_layers(alpha: float) -> list[tuple[int, int, int]]:
    """(channels, input size, stride) of each depthwise layer, in network order."""
    size, layers = RESOLUTION[alpha], []
    for spec in mobilenet_v1(alpha=alpha).plan:
        if spec.kind == "depthwise":
            layers.append((spec.in_channels, size, spec.stride))
        size = -(-size // spec.stride)
    return layers


def time_depthwise(channels: int, size: int, stride: int, dtype: torch.dtype, runs: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, channels, size, size, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, 3, 3, generator=gen).to(dtype)
    x.requires_grad_()
    w.requires_grad_()
    grad = torch.ones_like(F.conv2d(x, w, stride=stride, padding=1, groups=channels))

    def pytorch() -> None:
        torch.autograd.grad(F.conv2d(x, w, stride=stride, padding=1, groups=channels), (x, w), grad)

    def ours() -> None:
        torch.autograd.grad(depthwise_conv2d(x, w, None, stride, 1), (x, w), grad)

    return {"pytorch_ms": median_ms(pytorch, runs), "ours_ms": median_ms(ours, runs)}


def time_batchnorm(channels: int, size: int, runs: int) -> dict:
    x = torch.randn(BATCH, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn_like(x)
    result = {}
    for name, bn in (("pytorch_ms", nn.BatchNorm2d(channels)), ("ours_ms", BatchNorm2d(channels))):
        result[name] = median_ms(lambda bn=bn: torch.autograd.grad(bn(x), x, grad), runs)
    return result


def bn_shapes(alpha: float) -> list[tuple[int, int]]:
    """(channels, size) of each batch norm's input, in network order, without repeats."""
    size, shapes = RESOLUTION[alpha], []
    for spec in mobilenet_v1(alpha=alpha).plan:
        size = -(-size // spec.stride)
        if (spec.out_channels, size) not in shapes:
            shapes.append((spec.out_channels, size))
    return shapes


def time_bn_act(channels: int, size: int, runs: int) -> dict:
    x = torch.randn(BATCH, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn_like(x)
    bn, act = nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    ours = BatchNorm2d(channels)
    pytorch_ms = median_ms(lambda: torch.autograd.grad(act(bn(x)), x, grad), runs)
    return {
        "pytorch_ms": pytorch_ms,
        "ours_ms": median_ms(lambda: torch.autograd.grad(batch_norm_act(ours, act, x), x, grad), runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.25], choices=sorted(RESOLUTION))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS / "depthwise_backward.json")
    args = parser.parse_args()
    rows = []
    print("| alpha | layer | C x H x W, stride | dtype | PyTorch ms | ours ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for alpha in args.alpha:
        for i, (channels, size, stride) in enumerate(depthwise_layers(alpha)):
            for dtype in (torch.float32, torch.bfloat16):
                row = {"alpha": alpha, "layer": f"dw{i + 1}", "channels": channels, "size": size, "stride": stride}
                row["dtype"] = str(dtype).removeprefix("torch.")
                row |= time_depthwise(channels, size, stride, dtype, args.runs)
                rows.append(row)
                print(_line(row, f"{channels}x{size}x{size}, s{stride}"), flush=True)
        thin = {(c, s) for c, s, _ in depthwise_layers(alpha) if c < 16}
        for channels, size in sorted(thin):
            row = {"alpha": alpha, "layer": "bn", "channels": channels, "size": size, "dtype": "float32"}
            rows.append(row | time_batchnorm(channels, size, args.runs))
            print(_line(rows[-1], f"{channels}x{size}x{size} (BN fwd+bwd)"), flush=True)
        for channels, size in bn_shapes(alpha):
            row = {"alpha": alpha, "layer": "bn+relu", "channels": channels, "size": size, "dtype": "float32"}
            rows.append(row | time_bn_act(channels, size, args.runs))
            print(_line(rows[-1], f"{channels}x{size}x{size} (BN+ReLU fwd+bwd)"), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{os.cpu_count()}-core {cpu_name()}", "torch": torch.__version__}
    meta["threads"] = torch.get_num_threads()
    command = "nice python benchmarks/train/depthwise_backward.py --alpha " + " ".join(f"{a:g}" for a in args.alpha)
    args.output.write_text(json.dumps({"command": command, **meta, "batch": BATCH, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


def _line(row: dict, shape: str) -> str:
    ratio = row["pytorch_ms"] / row["ours_ms"]
    cells = [f"{row['alpha']:g}", row["layer"], shape, row["dtype"]]
    cells += [f"{row['pytorch_ms']:.2f}", f"{row['ours_ms']:.2f}"]
    return "| " + " | ".join([*cells, f"{ratio:.2f}x"]) + " |"


if __name__ == "__main__":
    main()
