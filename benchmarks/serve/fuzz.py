"""Fuzz a running `mobilenet-v1 serve` with mutated uploads, headers, multipart forms and
tensors (the cases of tests/serve/test_fuzz_uploads.py), on loopback.

A tiny random model (alpha 0.25, 64 px, ten classes) is served in a subprocess with a
1 MiB body limit; each case must be answered below 500 (503/504 only under load) with a
one-line JSON error, and the server must be ready after every 100 cases and exit 0 on
SIGTERM at the end. A second part sends raw requests over a socket (bogus request lines,
header values and Content-Length, bodies cut short) that an HTTP client would not send.

    python benchmarks/serve/fuzz.py [--cases 2000] [--raw 500]

Prints a table and writes benchmarks/results/serve_fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import RESULTS, ROOT

sys.path[:0] = [str(ROOT / "tests" / d) for d in ("", "robustness", "serve")] + [str(Path(__file__).parent)]
from serving import Server
from test_fuzz import image_seeds
from test_fuzz_uploads import check_answer, upload_case

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.onnx import export_onnx
from mobilenet_v1.measure.conditions import machine

RAW_LINES = [
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: \xff\xfe\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 5\r\n"
    b"Content-Length: 2\r\n\r\nab",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
    b"POST /v1/classify HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
]


def raw_request(host: str, port: int, data: bytes, timeout: float = 5.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(200)
        except (TimeoutError, OSError) as exc:
            return type(exc).__name__
    return reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--raw", type=int, default=500, help="raw socket cases")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_fuzz.json")
    args = parser.parse_args()
    import httpx
    import torch

    seeds = image_seeds()
    torch.manual_seed(0)
    report = {"machine": machine(2), "command": " ".join(["python", *sys.argv])}
    statuses, failures, raw_replies = Counter(), [], Counter()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "tiny.onnx"
        export_onnx(mobilenet_v1(alpha=0.25, num_classes=10).eval(), onnx, Preprocessing(64),
                    labels=[f"class {i}" for i in range(10)])  # fmt: skip
        server = Server("--model", str(onnx), "--name", "tiny", "--threads", "2", "--max-body-mb", "1")
        url, host, port = server.url, server.host, server.port
        start = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                for i in range(args.cases):
                    path, kwargs = upload_case(random.Random(f"upload-{i}"), seeds)
                    response = client.post(path, **kwargs)
                    statuses[response.status_code] += 1
                    try:
                        check_answer(response)
                    except AssertionError as exc:
                        failures.append({"case": i, "status": response.status_code, "detail": str(exc)[:300]})
                    if i % 100 == 99 and client.get("/v2/health/ready").status_code != 200:
                        failures.append({"case": i, "status": "not ready"})
                rng = random.Random(0)
                for i in range(args.raw):
                    data = RAW_LINES[i % len(RAW_LINES)]
                    if i >= len(RAW_LINES):
                        data = bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.02 else b for b in data)
                    raw_replies[raw_request(host, port, data)[:40]] += 1
                ready = client.get("/v2/health/ready").status_code == 200
        finally:
            code = server.stop()[0]
    report.update(
        cases=args.cases, raw_cases=args.raw, seconds=time.perf_counter() - start, statuses=dict(statuses),
        raw_replies=dict(raw_replies), failures=failures, ready_after=ready, exit_code=code,
    )  # fmt: skip
    print("| status | cases |\n|---|---|")
    for status, count in sorted(statuses.items()):
        print(f"| {status} | {count} |")
    print(f"raw socket replies: {dict(raw_replies)}")
    print(f"failures: {len(failures)}; ready after: {ready}; exit code on SIGTERM: {code}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
