"""CPU latency and throughput of every deployment path, measured side by side.

Each runtime is a callable on a ready input; :func:`measure` warms every runtime up,
then times them in interleaved rounds (A B C, A B C, ...) so that a load spike on a
shared machine hits all runtimes alike rather than one of them. Batch-1 latency is the
median and 90th percentile over all timed runs; throughput, at batches of 8, 32 and 128,
is images per second at the median batch time, beside the fraction of this machine's
compute limit it reaches (:func:`~.conditions.peak_macs`). Every timing carries the load
it began under and the reasons it is unreliable, if any (:func:`~.conditions.noise`).
:func:`layer_profile` splits ONNX Runtime's own per-node profile into Table 2's layer
kinds (stem conv, depthwise, pointwise, FC).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import layer_plan
from ..cost import model_cost
from ..deploy.litert import LiteRTModel
from ..deploy.onnx import OnnxModel, onnx_session
from .conditions import load_average, machine, noise, peak_macs
from .subjects import SUBJECTS, BenchSetup

__all__ = [
    "BATCHES",
    "Timing",
    "layer_profile",
    "make_runners",
    "measure",
    "onnx_runner",
    "run_config",
]

Runner = Callable[[], Any]
BATCHES = (8, 32, 128)  # the throughput batches
CONV_OPS = ("Conv", "QLinearConv", "FusedConv", "NchwcConv", "ConvInteger")
FC_OPS = ("Gemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul")


@dataclass(frozen=True)
class Timing:
    """Times of one runtime at one batch size, in milliseconds per call.

    ``steady_ms`` is the best of the per-round medians: the runtime's speed once the OS
    has placed its threads on separate cores and no other runtime's idle threads are
    spinning. On a 2-core VM both happen by chance (LiteRT's two threads sharing one
    core run at its 1-thread speed for whole rounds), and they hit every runtime alike.
    """

    runs: int
    batch: int
    median_ms: float
    p90_ms: float
    min_ms: float
    steady_ms: float
    load_before: float | None = None  # the 1-minute load average when the measurement began
    flags: tuple[str, ...] = ()  # why it is unreliable (conditions.noise), empty when it is not

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "flags": list(self.flags), "images_per_s": self.images_per_s}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(
    runners: dict[str, Runner], *, runs: int = 200, warmup: int = 20, rounds: int = 10, batch: int = 1
) -> dict[str, Timing]:
    """Time each runner ``runs`` times after ``warmup`` calls, interleaved over ``rounds``;
    each timing says the load it began under and is flagged where unreliable."""
    if runs < rounds:
        raise ValueError(f"runs ({runs}) must be at least rounds ({rounds})")
    load_before = load_average()
    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    steady: dict[str, float] = dict.fromkeys(runners, float("inf"))
    per_round = -(-runs // rounds)
    for _ in range(rounds):
        for name, run in runners.items():
            block = []
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                block.append((time.perf_counter() - start) * 1e3)
            samples[name] += block
            steady[name] = min(steady[name], statistics.median(block))
    timings = {}
    for name, t in samples.items():
        median, p90 = statistics.median(t), percentile(t, 90)
        flags = tuple(noise(median, p90, load_before))
        timings[name] = Timing(len(t), batch, median, p90, min(t), steady[name], load_before, flags)
    return timings


def onnx_runner(path: str | Path, batch: np.ndarray, threads: int, spin: bool | None = None) -> Runner:
    model = OnnxModel(path, threads, spin=spin, metadata=False)
    return lambda: model.run(batch)


def _node_medians(profile: Path) -> list[tuple[str, str, float]]:
    """(node, op type, median kernel time in µs) in execution order."""
    events = json.loads(profile.read_text())
    times: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"]].append(e["dur"])
            ops[e["name"]] = e["args"]["op_name"]
    return [(name, ops[name], statistics.median(t)) for name, t in times.items()]


def layer_profile(
    path: str | Path, config: Any, resolution: int, *, threads: int = 2, runs: int = 100
) -> dict[str, Any]:
    """Where the time goes: ORT's per-node kernel times (median over ``runs``), summed by
    layer kind. Convolutions appear in Table 1's order in the graph, so the i-th conv
    node is the i-th layer of :func:`~mobilenet_v1.config.layer_plan`."""
    plan = layer_plan(config)
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(path, threads, profile=str(Path(tmp) / "ort"))
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs):
            session.run(None, feed)
        nodes = _node_medians(Path(session.end_profiling()))
    kinds: dict[str, float] = defaultdict(float)
    conv_index, layers = 0, []
    for name, op, us in nodes:
        if op in CONV_OPS and conv_index < len(plan):
            kind, label = plan[conv_index].kind, plan[conv_index].name
            conv_index += 1
        else:
            kind = label = "fc" if op in FC_OPS else "other"
        kinds[kind] += us
        layers.append({"node": name, "op": op, "layer": label, "kind": kind, "us": us})
    total = sum(kinds.values())
    shares = {k: {"us": v, "percent": 100.0 * v / total} for k, v in kinds.items()}
    return {"total_us": total, "by_kind": shares, "layers": layers, "convs_matched": conv_index == len(plan)}


def _torch_runners(setup: BenchSetup, x: Any) -> dict[str, Runner]:
    import torch

    from ..deploy.compiled import compile_for_inference

    def timed(predict: Callable[[Any], Any]) -> Runner:
        def run() -> Any:
            with torch.inference_mode():
                return predict(x)

        return run

    # Every call compiles the same forward() again; past dynamo's recompile limit (8 per
    # function) it would silently run eager. The previous runners are no longer used.
    torch._dynamo.reset()
    model, res, backend = setup.model, setup.resolution, setup.torch_backend
    return {
        "torch": timed(model),
        "torch-compiled": timed(compile_for_inference(model, res, backend=backend)),
        "torch-compiled-bf16": timed(compile_for_inference(model, res, backend=backend, dtype=torch.bfloat16)),
    }


def _exported_runner(path: Path, x: Any, threads: int, spin: bool | None) -> Runner:
    """An exported file under its runtime (:func:`~mobilenet_v1.deploy.formats.load_exported`);
    a uint8 ``.tflite`` is given uint8 pixels (NHWC) as on a phone."""
    from ..deploy.formats import load_exported

    if path.suffix == ".onnx":
        return onnx_runner(path, x.numpy(), threads, spin)
    model, _ = load_exported(path, threads, trust_native_code=True)  # exported by prepare, here
    return _litert_runner(model, len(x)) if getattr(model, "uint8", False) else lambda: model(x)


def _litert_runner(model: LiteRTModel, batch: int) -> Runner:
    """uint8 pixels (NHWC), as a phone gives them, one image at a time (the file's batch is 1)."""
    _, height, width, _ = model.input_shape
    pixels = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    return lambda: model.run(pixels)


def make_runners(setup: BenchSetup, threads: int, batch: int) -> dict[str, Runner]:
    """All subjects for one thread count and batch size, in :data:`SUBJECTS` order."""
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, setup.resolution, setup.resolution)).astype(np.float32))
    runners = _torch_runners(setup, x)
    for fmt, path in setup.exported.items():
        runners[fmt] = _exported_runner(path, x, threads, setup.ort_spin)
    if setup.google_tflite:
        runners["google-tflite-int8"] = _litert_runner(LiteRTModel(setup.google_tflite, threads), batch)
    if setup.timm_onnx is not None:
        runners["timm-onnx"] = onnx_runner(setup.timm_onnx, x.numpy(), threads, setup.ort_spin)
    return {name: runners[name] for name in SUBJECTS if name in runners}


def run_config(
    setup: BenchSetup,
    *,
    threads: tuple[int, ...] = (1, 2),
    runs: int = 200,
    batches: tuple[int, ...] = BATCHES,
    batch_runs: int = 20,
) -> dict[str, Any]:
    """Batch-1 latency and the throughput at each of ``batches`` of every subject at each
    thread count, with the machine and the compute limit (images/s) of each precision.
    Larger batches get proportionally fewer timed runs (at least 3)."""
    mult_adds = model_cost(setup.model.config, setup.resolution).mult_adds
    out: dict[str, Any] = {"config": setup.label, "resolution": setup.resolution, "mult_adds": mult_adds}
    out["machine"], out["threads"], out["limit_images_per_s"] = machine(max(threads)), {}, {}
    for n in threads:
        latency = measure(make_runners(setup, n, 1), runs=runs, warmup=20, rounds=10)
        print(f"{setup.label}: {n} thread(s), batch 1 done", file=sys.stderr, flush=True)
        throughput = {}
        for batch in batches:
            count = max(3, round(batch_runs * 8 / batch))
            runners = make_runners(setup, n, batch)
            throughput[batch] = measure(runners, runs=count, warmup=2, rounds=min(3, count), batch=batch)
        limits = {dtype: peak_macs(dtype, n) / mult_adds for dtype in PRECISIONS}
        out["limit_images_per_s"][str(n)] = limits
        out["threads"][str(n)] = {
            name: {
                "latency": latency[name].to_dict(),
                "throughput": {
                    str(b): {**t[name].to_dict(), "of_limit": t[name].images_per_s / limits[precision(name)]}
                    for b, t in throughput.items()
                },
            }
            for name in latency
        }
    return out


PRECISIONS = ("fp32", "bf16", "int8")


def precision(subject: str) -> str:
    """The arithmetic a subject computes in, for its compute limit."""
    return "int8" if subject.endswith("int8") else "bf16" if subject.endswith("bf16") else "fp32"
