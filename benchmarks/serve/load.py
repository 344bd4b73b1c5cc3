"""`mobilenet-v1 serve` under load, on loopback: throughput, latency percentiles, batch
sizes and errors at several concurrencies, beside the runtime's own speed.

For each configuration (Google's 0.25/128 and 1.0/224 by default) the script measures
first, in this process, the raw runtime (the same ONNX file under ONNX Runtime, batch 1
latency and throughput at the server's batch) and the cost of decoding and preprocessing
the JPEGs; then it starts ``mobilenet-v1 serve`` in a subprocess and sends, from
``--concurrency`` closed-loop clients each, JPEG uploads to ``/v1/classify`` and
preprocessed tensors to ``/v2/models/NAME/infer`` (binary tensor extension, as
``tritonclient`` sends them). Every phase is bounded by a count and a time limit. The
average batch is the server's own ``inference_count / execution_count``. ``--soak S``
adds an open-loop run at 80% of the measured capacity (the best tensor-path throughput)
for S seconds (failed requests, the server's RSS growth), ``--overload S`` one at 4x
capacity (only 200 and 503 expected, and the server ready afterwards), both on
``--fault-config``. The client shares the machine with the server.

    python benchmarks/serve/load.py [--configs 0.25/128 1.0/224] [--concurrency 1 4 16 64]
        [--requests 2000] [--seconds 15] [--soak 600] [--overload 30]

Prints a table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2] / "tests")]
from common import DATA, RESULTS  # benchmarks/common.py
from serving import Server  # tests/serving.py: serve in a subprocess, its output drained

from mobilenet_v1.classify import Classifier
from mobilenet_v1.data.images import decode_image
from mobilenet_v1.deploy.onnx import OnnxModel, export_onnx
from mobilenet_v1.measure.bench import measure
from mobilenet_v1.measure.conditions import load_average, machine
from mobilenet_v1.weights import load_weights

CONFIGS = {"0.25/128": "mobilenet_v1_0.25_128_quant", "1.0/224": "mobilenet_v1_1.0_224_quant"}
MAX_BATCH = 8


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def server_counts(client, url: str) -> tuple[float, float]:
    text = client.get(f"{url}/metrics").text
    found = {}
    for name in ("mobilenet_v1_inference_count_total", "mobilenet_v1_execution_count_total"):
        match = re.search(rf"^{name} ([\d.e+]+)$", text, re.M)
        found[name] = float(match[1]) if match else 0.0
    return found["mobilenet_v1_inference_count_total"], found["mobilenet_v1_execution_count_total"]


def v2_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + x.tobytes(), headers


async def post(session, path: str, body: bytes, headers: dict, latencies: list, statuses: dict) -> None:
    import aiohttp

    start = time.perf_counter()
    try:
        async with session.post(path, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        status = type(exc).__name__
    latencies.append(time.perf_counter() - start)
    statuses[status] = statuses.get(status, 0) + 1


async def closed_loop(url: str, requests: list[tuple[str, bytes, dict]], concurrency: int, count: int, seconds: float):
    """``concurrency`` clients, each sending its next request when the last is answered
    (aiohttp: a client light enough to leave the cores to the server)."""
    import aiohttp

    latencies, statuses = [], {}
    sent = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker(offset: int) -> None:
            nonlocal sent
            i = offset
            while sent < count and time.perf_counter() < deadline:
                sent += 1
                path, body, headers = requests[i % len(requests)]
                i += concurrency
                await post(session, path, body, headers, latencies, statuses)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


async def open_loop(
    url: str, requests: list[tuple[str, bytes, dict]], rate: float, seconds: float, cap: int = 512, pid: int = 0
):
    """Requests sent at ``rate`` per second whatever the answers (at most ``cap`` in flight);
    with ``pid``, also each minute's answers and the server's RSS at its end."""
    import aiohttp

    latencies, statuses = [], {}
    minutes: list[dict[str, object]] = []
    in_flight = asyncio.Semaphore(cap)
    connector = aiohttp.TCPConnector(limit=cap)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(i: int) -> None:
            async with in_flight:
                path, body, headers = requests[i % len(requests)]
                await post(session, path, body, headers, latencies, statuses)

        tasks, start, i = set(), time.perf_counter(), 0
        last: dict = {}

        def close_minute() -> None:
            counts = {str(k): v - last.get(k, 0) for k, v in statuses.items() if v - last.get(k, 0)}
            minutes.append({"minute": len(minutes) + 1, "statuses": counts, "rss_bytes": rss_bytes(pid)})
            last.update(statuses)

        while (now := time.perf_counter()) - start < seconds:
            while i < int((now - start) * rate):
                task = asyncio.create_task(one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if pid and now - start >= 60 * (len(minutes) + 1):
                close_minute()
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        if pid:
            close_minute()  # the last (partial) minute and the answers still in flight at the end
    return latencies, statuses, time.perf_counter() - start, minutes


def summary(latencies: list[float], statuses: dict, elapsed: float, minutes: list | None = None) -> dict[str, object]:
    ms = np.array(latencies) * 1000
    ok = statuses.get(200, 0)
    return {
        **({"minutes": minutes} if minutes else {}),
        "requests": len(latencies),
        "ok_per_s": ok / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p90_ms": float(np.percentile(ms, 90)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": sum(v for k, v in statuses.items() if k != 200),
    }


def raw_runtime(path: Path, resolution: int, threads: int, runs: int) -> dict[str, float]:
    """The runtime alone, as the server runs it (its threads sleeping: serve's default)."""
    model = OnnxModel(path, threads, spin=False, metadata=False)
    one = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    batch = np.repeat(one, MAX_BATCH, axis=0)
    single = measure({"b1": lambda: model.run(one)}, runs=runs, warmup=20, rounds=5)["b1"]
    batched = measure({"b8": lambda: model.run(batch)}, runs=max(10, runs // 4), warmup=5, rounds=5, batch=MAX_BATCH)[
        "b8"
    ]
    return {
        "batch1_median_ms": single.median_ms,
        "batch1_p90_ms": single.p90_ms,
        f"batch{MAX_BATCH}_images_per_s": batched.images_per_s,
        "spin": model.spin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=2000, help="at most this many requests per phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="at most this long per phase")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=Path, default=DATA / "imagenette" / "val")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds at 80%% of capacity (--fault-config)")
    parser.add_argument("--overload", type=float, default=0.0, help="seconds at 4x capacity (--fault-config)")
    parser.add_argument("--fault-config", choices=CONFIGS, default="1.0/224", help="the soak's and overload's")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args()
    import httpx

    photos = sorted(args.photos.rglob("*.JPEG"))
    photos = photos[:: max(1, len(photos) // 64)][:64]  # 64 photos spread over the classes
    jpegs = [p.read_bytes() for p in photos]
    report = {"machine": machine(args.threads), "command": " ".join(["python", *sys.argv]), "max_batch": MAX_BATCH}
    report["load_before"], report["configs"] = load_average(), {}
    for label in args.configs:
        model, loaded = load_weights(CONFIGS[label])
        classifier = Classifier(model, loaded.preprocessing, loaded.classes, loaded.ignore)
        with tempfile.TemporaryDirectory() as tmp:
            onnx = Path(tmp) / "model.onnx"
            export_onnx(model, onnx, loaded.preprocessing, labels=loaded.classes)
            resolution = loaded.preprocessing.resolution
            entry: dict[str, object] = {"raw": raw_runtime(onnx, resolution, args.threads, 400)}
            start = time.perf_counter()
            tensors = [classifier.transform(decode_image(data)).unsqueeze(0).numpy() for data in jpegs]
            entry["jpeg_decode_ms"] = 1000 * (time.perf_counter() - start) / len(jpegs)
            name = label.replace("/", "_")
            kinds = {
                "jpeg": [("/v1/classify", data, {"Content-Type": "image/jpeg"}) for data in jpegs],
                "tensor": [(f"/v2/models/{name}/infer", *v2_body(x)) for x in tensors],
            }
            server = Server(
                "--model", str(onnx), "--name", name, "--threads", str(args.threads),
                "--max-batch", str(MAX_BATCH), "--max-queue", "128",
            )  # fmt: skip
            url, pid = server.url, server.proc.pid
            sync = httpx.Client(timeout=30)
            rows = {}
            try:
                for kind, requests in kinds.items():
                    asyncio.run(closed_loop(url, requests, 4, 50, 10))  # warm-up
                    for c in args.concurrency:
                        before = server_counts(sync, url)
                        load = load_average()
                        result = summary(*asyncio.run(closed_loop(url, requests, c, args.requests, args.seconds)))
                        after = server_counts(sync, url)
                        executions = after[1] - before[1]
                        result["average_batch"] = (after[0] - before[0]) / executions if executions else None
                        result["load_before"] = load
                        rows[f"{kind} c{c}"] = result
                        print(f"{label} {kind} c{c}: {json.dumps(result)}", file=sys.stderr, flush=True)
                entry["rows"] = rows
                capacity = max(r["ok_per_s"] for k, r in rows.items() if k.startswith("tensor"))
                entry["capacity_per_s"] = capacity
                if label == args.fault_config and args.soak:
                    rss0 = rss_bytes(pid)
                    soaked = open_loop(url, kinds["tensor"], 0.8 * capacity, args.soak, pid=pid)
                    soak = summary(*asyncio.run(soaked))
                    soak["rss_start_bytes"], soak["rss_end_bytes"] = rss0, rss_bytes(pid)
                    soak["rss_growth"] = soak["rss_end_bytes"] / rss0 - 1
                    soak["rate_per_s"] = 0.8 * capacity
                    entry["soak"] = soak
                    print(f"{label} soak: {json.dumps(soak)}", file=sys.stderr, flush=True)
                if label == args.fault_config and args.overload:
                    over = summary(*asyncio.run(open_loop(url, kinds["tensor"], 4 * capacity, args.overload)))
                    over["rate_per_s"] = 4 * capacity
                    over["ready_after"] = sync.get(f"{url}/v2/health/ready").status_code == 200
                    entry["overload"] = over
                    print(f"{label} overload: {json.dumps(over)}", file=sys.stderr, flush=True)
            finally:
                sync.close()
                entry["exit_code"] = server.stop()[0]
        report["configs"][label] = entry
    report["load_after"] = load_average()
    print("| config | path | concurrency | ok/s | p50 ms | p90 ms | p99 ms | avg batch | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, entry in report["configs"].items():
        for key, r in entry["rows"].items():
            kind, c = key.split(" c")
            print(
                f"| {label} | {kind} | {c} | {r['ok_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['average_batch'] or 0:.2f} | {r['errors']} |"
            )
        raw = entry["raw"]
        print(
            f"{label}: raw ONNX Runtime batch 1 {raw['batch1_median_ms']:.2f} ms, batch {MAX_BATCH} "
            f"{raw[f'batch{MAX_BATCH}_images_per_s']:.0f} img/s; "
            f"JPEG decode+preprocess {entry['jpeg_decode_ms']:.2f} ms"
        )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
