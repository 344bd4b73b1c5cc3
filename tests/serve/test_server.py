"""``mobilenet-v1 serve`` as a user runs it: a process on a loopback port, Triton's own
client against it, SIGTERM, and its command-line errors; ``export --format triton``."""

import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from mobilenet_v1.cli import main

httpx = pytest.importorskip("httpx")


def test_tritonclient_health_metadata_and_infer(server_factory, tiny_onnx, tiny_served):
    http = pytest.importorskip("tritonclient.http")
    server = server_factory("--model", str(tiny_onnx), "--name", "tiny", "--threads", "1")
    client = http.InferenceServerClient(f"{server.host}:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"][0]["shape"] == [-1, 3, 64, 64] and meta["outputs"][0]["name"] == "logits"
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for binary in (True, False):
        inp = http.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            http.InferRequestedOutput("logits", binary_data=binary),
        ]
        result = client.infer("tiny", [inp], outputs=outputs)
        expected = tiny_served.classifier.model(__import__("torch").from_numpy(x)).numpy()
        assert np.allclose(result.as_numpy("logits"), expected, atol=1e-5)
    top = client.infer("tiny", [inp], outputs=[http.InferRequestedOutput("logits", class_count=2)])
    first = top.as_numpy("logits")[0][0].decode()
    assert re.fullmatch(r"[\d.]+:\d+:class \d", first)


def test_sigterm_finishes_in_flight_requests_and_exits_0(server_factory, tiny_onnx):
    server = server_factory("--model", str(tiny_onnx), "--threads", "1")
    statuses = []
    body = np.zeros((1, 3, 64, 64), np.float32).ravel().tolist()
    request = {"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": body}]}

    def send():
        with httpx.Client(timeout=30) as client:
            for _ in range(20):
                try:
                    statuses.append(client.post(f"{server.url}/v2/models/tiny/infer", json=request).status_code)
                except httpx.HTTPError:
                    statuses.append("refused")  # after the server stopped accepting
                    return

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    code, out, err = server.stop()
    assert code == 0 and "stopped" in out, err
    assert set(statuses) <= {200, "refused"}  # every answered request succeeded


def test_taken_port_and_bad_flags_are_one_line_exit_2(server_factory, tiny_onnx, capsys):
    server = server_factory("--model", str(tiny_onnx), "--threads", "1")
    assert main(["serve", "--model", str(tiny_onnx), "--port", str(server.port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_onnx), "--name", "a/b"]) == 2
    assert "--name 'a/b' must be" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_onnx), "--max-body-mb", "5000"]) == 2
    assert "--max-body-mb 5000.0: must be in" in capsys.readouterr().err
    assert main(["serve", "--model", "missing.onnx"]) == 2
    assert "--model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--max-batch", "0"])
    assert exc.value.code == 2


def test_export_triton_repository_matches_serve(tmp_path, shared_data, capsys):
    repo = tmp_path / "repo"
    assert main(["export", "--weights", "mobilenet_v1_0.25_128_quant", "--format", "triton", "-o", str(repo)]) == 0
    folder = repo / "mobilenet_v1_0.25_128_quant"
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 8" in config
    assert "dims: [ 3, 128, 128 ]" in config and "dims: [ 1001 ]" in config
    assert "max_queue_size: 64" in config and "timeout_action: REJECT" in config
    assert "max_queue_delay_microseconds: 0" in config
    labels = (folder / "labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background"
    assert (folder / "1" / "model.onnx").stat().st_size > 100_000
    # a second export of the same name is refused, and int8 options do not apply
    assert main(["export", "--weights", "mobilenet_v1_0.25_128_quant", "--format", "triton", "-o", str(repo)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--weights", "x", "--format", "triton", "--dynamic-size", "-o", str(repo)]) == 2
    assert "--format triton takes the float32 ONNX export" in capsys.readouterr().err


def test_serve_help_lists_the_flags():
    out = subprocess.run(
        [sys.executable, "-m", "mobilenet_v1", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--max-batch", "--max-delay-ms", "--max-queue", "--max-body-mb", "--timeout-ms", "--name", "--host"):
        assert flag in out
