"""The conditions a latency was measured under, and whether it can be trusted.

A latency measured while other processes compete for the cores is that machine's
latency at that moment, not the runtime's: every table records the machine (CPU, cores,
threads, the runtimes' versions) and the load around the measurement, and flags a timing
(:func:`noise`) whose 90th percentile exceeds :data:`NOISE_RATIO` times its median or
that started while the 1-minute load average already exceeded the cores. The compute
limit of a configuration (:func:`peak_macs`) is the multiply-accumulate rate of one
large matrix product on the same threads, measured here with the fastest library at
hand: an estimate of the speed no network of the same mult-adds beats on this machine.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = ["NOISE_RATIO", "RUNTIME_PACKAGES", "cpu_name", "load_average", "machine", "noise", "peak_macs"]

NOISE_RATIO = 1.5  # p90 / median above which a latency is flagged as unreliable
RUNTIME_PACKAGES = ("torch", "onnxruntime", "ai-edge-litert", "executorch", "timm")


def cpu_name() -> str:
    """The CPU as the kernel reports it (``model name`` in /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(threads: int) -> dict[str, Any]:
    """What a latency depends on besides the model: CPU, cores, threads and the runtimes'
    versions (``None`` for one not installed)."""
    versions = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "versions": versions}


def noise(median_ms: float, p90_ms: float, load_before: float | None, cores: int | None = None) -> list[str]:
    """Why a timing is unreliable ([] when it is not): a spread of p90/median above
    :data:`NOISE_RATIO`, or a load above the cores when the measurement began."""
    reasons = []
    if median_ms > 0 and p90_ms / median_ms > NOISE_RATIO:
        reasons.append(f"p90/median {p90_ms / median_ms:.1f}")
    cores = cores or os.cpu_count() or 1
    if load_before is not None and load_before > cores:
        reasons.append(f"load {load_before:.1f} > {cores} cores")
    return reasons


@functools.cache
def peak_macs(dtype: str, threads: int) -> float:
    """Multiply-accumulates per second of a 1024 x 1024 matrix product in ``dtype``
    (``fp32``, ``bf16`` or ``int8``) on ``threads`` threads, measured here: the best of 5
    runs of each library's product (PyTorch's, and ONNX Runtime's MLAS for fp32 and int8
    when it is installed: MKL's sgemm is far from peak on AMD CPUs, MLAS is not)."""
    rates = [_torch_macs(dtype, threads)]
    if dtype != "bf16" and find_spec("onnxruntime") is not None:
        rates.append(_ort_macs(dtype, threads))
    return max(rates)


N = 1024  # the side of the matrices of peak_macs


def _best_rate(product: Any) -> float:
    product()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return N**3 / best


def _torch_macs(dtype: str, threads: int) -> float:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a, b = (torch.randint(-128, 128, (N, N), dtype=torch.int8, generator=generator) for _ in range(2))
        product = torch._int_mm
    else:
        kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a, b = (torch.randn(N, N, generator=generator).to(kind) for _ in range(2))
        product = torch.mm
    try:
        return _best_rate(lambda: product(a, b))
    finally:
        torch.set_num_threads(previous)


def _ort_macs(dtype: str, threads: int) -> float:
    """The same product as one ONNX ``MatMul`` (fp32) or ``MatMulInteger`` (uint8 x int8)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if dtype == "int8":
        a = rng.integers(0, 256, (N, N), dtype=np.uint8)
        b = rng.integers(-128, 128, (N, N), dtype=np.int8)
        node, kind, out = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    else:
        a, b = (rng.standard_normal((N, N), dtype=np.float32) for _ in range(2))
        node, kind, out = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(node, ["a", "b"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("a", kind, [N, N])],
        [helper.make_tensor_value_info("y", out, [N, N])],
        [numpy_helper.from_array(b, "b")],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _best_rate(lambda: session.run(None, {"a": a}))
