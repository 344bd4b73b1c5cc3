"""The HTTP application in process (FastAPI's TestClient): every endpoint, and every bad
input answered with its status and a one-line JSON error."""

import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_v1.serve.app import ServeConfig, ServedModel, create_app

CLASSES = [f"class {i}" for i in range(10)]  # the served model's (conftest.py)

TestClient = pytest.importorskip("fastapi.testclient").TestClient


def _jpeg(size=(80, 60), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def client(tiny_served):
    app = create_app(tiny_served, ServeConfig(max_batch=4, max_queue=8, max_body_mb=1))
    with TestClient(app) as c:
        yield c


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and body["error"]
    return body["error"]


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["classification", "binary_tensor_data"]
    meta = client.get("/v2/models/tiny").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get("/v2/models/tiny/versions/1").json() == meta
    assert client.get("/v2/models/tiny/ready").status_code == 200
    assert "unknown model 'other'" in _error(client.get("/v2/models/other"), 404)
    assert "unknown version" in _error(client.get("/v2/models/tiny/versions/2"), 404)


def test_v2_infer_gives_the_models_logits_and_top_k(client, tiny_served):
    x = torch.randn(2, 3, 64, 64)
    expected = tiny_served.classifier.scores(x).numpy()
    request = {
        "inputs": [{"name": "input", "shape": [2, 3, 64, 64], "datatype": "FP32", "data": x.numpy().ravel().tolist()}],
        "outputs": [{"name": "logits"}, {"name": "logits", "parameters": {"classification": 3}}],
    }
    response = client.post("/v2/models/tiny/infer", json=request)
    assert response.status_code == 200, response.text
    logits, top = response.json()["outputs"]
    assert np.allclose(np.array(logits["data"]).reshape(2, 10), expected, atol=1e-5)
    assert top["shape"] == [2, 3] and top["datatype"] == "BYTES"
    score, index, label = top["data"][0].split(":", 2)
    assert int(index) == int(expected[0].argmax()) and label == CLASSES[int(index)] and 0 < float(score) <= 1


def test_v2_infer_binary(client, tiny_served):
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 64, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        "/v2/models/tiny/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    n = int(response.headers["inference-header-content-length"])
    logits = np.frombuffer(response.content[n:], "<f4").reshape(1, 10)
    assert np.allclose(logits, tiny_served.classifier.scores(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_classify_raw_and_multipart_match_predict(client, tiny_served, tmp_path):
    data = _jpeg()
    path = tmp_path / "red.jpg"
    path.write_bytes(data)
    (expected,) = tiny_served.classifier.predict(path, k=3)
    raw = client.post("/v1/classify?topk=3", content=data, headers={"Content-Type": "image/jpeg"})
    form = client.post("/v1/classify?topk=3", files={"file": ("red.jpg", data, "image/jpeg")})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "tiny" and set(body["timing_ms"]) == {"decode", "model", "total"}
        got = [(p["label"], p["probability"]) for p in body["predictions"]]
        assert [label for label, _ in got] == [label for label, _ in expected]
        assert np.allclose([p for _, p in got], [p for _, p in expected], atol=1e-5)
        assert all(CLASSES[p["index"]] == p["label"] for p in body["predictions"])


@pytest.mark.parametrize(
    ("request_kwargs", "status", "needle"),
    [
        ({"content": b"not an image", "headers": {"Content-Type": "image/jpeg"}}, 415, "cannot decode image upload"),
        ({"content": b"\xff\xd8\xff\xe0garbage", "headers": {"Content-Type": "image/jpeg"}}, 415, "cannot decode"),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "is not an image"),
        ({"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "body is empty"),
        ({"files": {"photo": ("a.jpg", b"x", "image/jpeg")}}, 400, "no file field 'file'"),
        ({"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400, "file"),
        ({"content": b"x" * (2 << 20), "headers": {"Content-Type": "image/jpeg"}}, 413, "over the server's limit"),
    ],
)
def test_classify_bad_input(client, request_kwargs, status, needle):
    assert needle in _error(client.post("/v1/classify", **request_kwargs), status)


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"\xff" * 65536  # 2.5 MiB, no Content-Length

    assert "over the server's limit" in _error(
        client.post("/v1/classify", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413
    )


@pytest.mark.parametrize("topk", ["0", "-1", "abc", "1001"])
def test_classify_bad_topk(client, topk):
    assert "topk" in _error(client.post(f"/v1/classify?topk={topk}", content=_jpeg()), 400)


@pytest.mark.parametrize(
    ("shape", "datatype", "needle"),
    [
        ([1, 3, 32, 32], "FP32", "shape must be"),
        ([1, 3, 64, 64], "INT64", "datatype must be FP32"),
        ([9, 3, 64, 64], "FP32", "B <= 4"),
    ],
)
def test_v2_bad_tensor_is_400(client, shape, datatype, needle):
    request = {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": [0.0]}]}
    assert needle in _error(client.post("/v2/models/tiny/infer", json=request), 400)


def test_v2_unknown_model_is_404(client):
    assert "unknown model" in _error(client.post("/v2/models/nope/infer", json={}), 404)


def test_page_model_and_metrics(client, tiny_onnx):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "top-label" in page.text
    assert client.get("/static/page.js").status_code == 200
    info = client.get("/v1/model").json()
    assert info["classes"] == CLASSES and info["preprocessing"]["resolution"] == 64 and info["onnx"] is True
    assert client.get("/v1/model.onnx").content == tiny_onnx.read_bytes()
    client.post("/v1/classify", content=_jpeg(), headers={"Content-Type": "image/jpeg"})
    client.post("/v1/classify", content=b"bad", headers={"Content-Type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'mobilenet_v1_requests_total{endpoint="/v1/classify",status="200"} 1.0' in text
    assert 'mobilenet_v1_requests_total{endpoint="/v1/classify",status="415"} 1.0' in text
    assert "mobilenet_v1_inference_count_total 1.0" in text and "mobilenet_v1_execution_count_total 1.0" in text
    assert "mobilenet_v1_queue_depth 0.0" in text and "mobilenet_v1_decode_duration_seconds_count" in text


def test_no_onnx_file_means_no_browser_mode(tiny_served):
    served = ServedModel(tiny_served.classifier, "tiny", "LiteRT")
    with TestClient(create_app(served)) as client:
        assert client.get("/v1/model").json()["browser"] is False
        assert "not served from an ONNX file" in _error(client.get("/v1/model.onnx"), 404)


def _slow(served: ServedModel, seconds: float) -> ServedModel:
    classifier = served.classifier

    def model(batch):
        time.sleep(seconds)
        return classifier.model(batch)

    from dataclasses import replace

    return replace(served, classifier=replace(classifier, model=model))


def test_full_queue_is_503_with_retry_after_and_late_answers_504(tiny_served):
    app = create_app(_slow(tiny_served, 0.3), ServeConfig(max_batch=1, max_queue=1, timeout_ms=5000))
    statuses, headers = [], []
    with TestClient(app) as client:

        def send():
            r = client.post("/v1/classify", content=_jpeg(), headers={"Content-Type": "image/jpeg"})
            statuses.append(r.status_code)
            headers.append(r.headers.get("retry-after"))

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
    assert all(h == "1" for s, h in zip(statuses, headers, strict=True) if s == 503)
    with TestClient(create_app(_slow(tiny_served, 0.5), ServeConfig(timeout_ms=50))) as client:
        assert "timeout" in _error(client.post("/v1/classify", content=_jpeg()), 504)
        assert client.get("/v2/health/ready").status_code == 200  # still serving


def test_settings_name_their_parameter():
    with pytest.raises(ValueError, match="max_body_mb=0"):
        ServeConfig(max_body_mb=0)
    with pytest.raises(ValueError, match="timeout_ms=-1"):
        ServeConfig(timeout_ms=-1)


def test_bodies_in_flight_are_bounded(client):
    """Past the budget of bodies being received at once (4x the body limit), a request
    with a body gets 503 before it is read; one without a body is still answered."""
    limits = client.app
    assert limits.budget == 4 << 20 and limits.in_flight == 0
    limits.in_flight = limits.budget - 10  # as if four 1 MiB uploads were arriving
    response = client.post("/v1/classify", content=_jpeg(), headers={"Content-Type": "image/jpeg"})
    assert "bodies in flight" in _error(response, 503) and response.headers["retry-after"] == "1"
    assert client.get("/v2/health/ready").status_code == 200
    limits.in_flight = 0
    assert client.post("/v1/classify", content=_jpeg(), headers={"Content-Type": "image/jpeg"}).status_code == 200
    assert limits.in_flight == 0  # released after each request
