"""Fuzzed requests leave the server serving: mutated photos (bytes), odd headers and
malformed multipart forms and tensors, each answered with a status below 500 (or 503/504
under load) and a one-line JSON error; the server is ready after every batch of cases.
benchmarks/serve/fuzz.py runs thousands of the same cases against a real server."""

import io
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))  # test_fuzz: mutate, header_case
from test_fuzz import header_case, image_seeds, mutate, random_edits

from mobilenet_v1.serve.app import ServeConfig, create_app

TestClient = pytest.importorskip("fastapi.testclient").TestClient
CONTENT_TYPES = ["image/jpeg", "image/png", "image/*", "application/octet-stream", "text/plain", "", "image/jpeg; x=1",
                 "IMAGE/JPEG", "multipart/form-data", "multipart/form-data; boundary=", "application/json"]  # fmt: skip


def _photo(rng: random.Random) -> bytes:
    pixels = np.random.default_rng(rng.randrange(2**32)).random((rng.randint(1, 40), rng.randint(1, 40), 3)) * 255
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, rng.choice(["JPEG", "PNG", "GIF", "BMP", "WEBP"]))
    return buffer.getvalue()


def upload_case(rng: random.Random, seeds: dict[str, bytes]) -> tuple[str, dict]:
    """One request: (path, httpx keyword arguments), drawn from ``rng``."""
    kind = rng.choice(["raw", "raw", "header", "multipart", "form-garbage", "tensor", "tensor-binary"])
    if kind in ("raw", "header"):
        data = mutate(rng.choice(list(seeds.values())), random_edits(rng)) if kind == "raw" else header_case(rng)[1]
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)]
        return f"/v1/classify?topk={rng.choice([1, 5, 1000])}", {
            "content": data,
            "headers": {"Content-Type": rng.choice(CONTENT_TYPES)},
        }
    if kind == "multipart":
        data = _photo(rng) if rng.random() < 0.5 else mutate(_photo(rng), random_edits(rng))
        field = rng.choice(["file", "file", "photo", "", "f" * 300])
        name = rng.choice(["a.jpg", "", "../../etc/passwd", "\x1b[31mred.jpg", "x" * 1000, "名前.png"])
        files = {field: (name, data, rng.choice(CONTENT_TYPES) or "image/jpeg")}
        if rng.random() < 0.2:
            files["file2"] = ("b.jpg", data, "image/jpeg")
        return "/v1/classify", {"files": files}
    if kind == "form-garbage":
        boundary = rng.choice(["x", "", "-" * 80, "a b"])
        body = mutate(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n".encode()
                      + _photo(rng) + f"\r\n--{boundary}--\r\n".encode(), random_edits(rng))  # fmt: skip
        return "/v1/classify", {
            "content": body,
            "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        }
    shape = rng.choice([[1, 3, 64, 64], [2, 3, 64, 64], [1, 3, 64], [0, 3, 64, 64], [1, 3, 65, 64], "x", [True] * 4])
    if kind == "tensor":
        count = int(np.prod(shape)) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else 10
        data = rng.choice([[0.5] * count, [0.5] * (count + 1), ["a"] * count, None, [[1.0]] * 3])
        request = {"inputs": [{"name": rng.choice(["input", "x"]), "shape": shape,
                               "datatype": rng.choice(["FP32", "FP32", "FP64", "BYTES"]), "data": data}]}  # fmt: skip
        body = json.dumps(request).encode()
        if rng.random() < 0.3:
            body = mutate(body, random_edits(rng))
        return "/v2/models/tiny/infer", {"content": body, "headers": {"Content-Type": "application/json"}}
    raw = np.zeros((1, 3, 64, 64), np.float32).tobytes()
    size = rng.choice([len(raw), len(raw) - 4, 0, -1, 2**40])
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": size}}]}).encode()  # fmt: skip
    length = rng.choice([str(len(header)), "0", "-5", "abc", str(len(header) + len(raw) + 10), "9" * 30])
    return "/v2/models/tiny/infer", {
        "content": header + raw[: rng.randrange(len(raw) + 1)],
        "headers": {"Inference-Header-Content-Length": length, "Content-Type": "application/octet-stream"},
    }


def check_answer(response) -> None:
    """A status below 500 (or 503/504: load) and, for an error, one line of JSON."""
    assert response.status_code < 500 or response.status_code in (503, 504), response.text[:300]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and "\n" not in body["error"] and "\x1b" not in body["error"]


def test_fuzzed_requests_leave_the_server_serving(tiny_served):
    seeds = image_seeds()
    app = create_app(tiny_served, ServeConfig(max_batch=4, max_body_mb=1))
    statuses = {}
    with TestClient(app) as client:
        for i in range(300):
            path, kwargs = upload_case(random.Random(f"upload-{i}"), seeds)
            response = client.post(path, **kwargs)
            check_answer(response)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if i % 50 == 49:
                assert client.get("/v2/health/ready").status_code == 200
    assert {200, 400, 415} <= set(statuses)  # the cases reach success and both kinds of refusal
