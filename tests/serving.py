"""The serve tests' fixtures (imported by each test module: a second conftest.py would
shadow the root one's ``from conftest import``): a small model, a random alpha-0.25
network at 64 px with ten classes exported to ONNX once per session, and
``mobilenet-v1 serve`` started in a subprocess."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

import pytest

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.classify import Classifier
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.onnx import export_onnx, load_onnx
from mobilenet_v1.serve.app import ServedModel

CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    import torch

    pytest.importorskip("onnxruntime")

    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, num_classes=10).eval()
    with torch.no_grad():  # statistics and weights that give each image a clear top class
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
        model.classifier.weight.normal_(0, 1)
    path = tmp_path_factory.mktemp("serve") / "tiny.onnx"
    export_onnx(model, path, Preprocessing(64), labels=CLASSES)
    return path


@pytest.fixture(scope="session")
def tiny_served(tiny_onnx) -> ServedModel:
    model, info = load_onnx(tiny_onnx, 1)
    classifier = Classifier(model, info.preprocessing, info.classes, info.ignore, source="tiny")
    return ServedModel(classifier, "tiny", "ONNX Runtime", tiny_onnx)


def _drain(stream: IO[str], lines: deque[str]) -> None:
    """Read a pipe to its end, keeping its last lines: a server that logs more than a pipe
    holds (uvicorn warns on every malformed request) must never block on writing."""
    for line in stream:
        lines.append(line)


class Server:
    """``mobilenet-v1 serve`` in a subprocess on a free loopback port, ready when made,
    stopped by SIGTERM; its output is read all along."""

    def __init__(self, *args: str, timeout: float = 120.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mobilenet_v1", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._out: deque[str] = deque(maxlen=10_000)
        self._err: deque[str] = deque(maxlen=10_000)
        self._readers = [threading.Thread(target=_drain, args=(self.proc.stderr, self._err), daemon=True)]
        self._readers[0].start()
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self._out.append(line)
            if match := re.search(r"at http://([\d.]+):(\d+)/", line):
                self.host, self.port = match[1], int(match[2])
                self.url = f"http://{self.host}:{self.port}"
                self._readers.append(threading.Thread(target=_drain, args=(self.proc.stdout, self._out), daemon=True))
                self._readers[-1].start()
                self._wait_ready(deadline)
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        self.proc.wait()
        self._readers[0].join(10)
        raise RuntimeError(f"server did not start: {line!r} {''.join(self._err)[-2000:]}")

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server never became ready")

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM (SIGKILL after a minute): the exit code, stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        return self.proc.returncode, "".join(self._out), "".join(self._err)


@pytest.fixture
def server_factory():
    servers = []

    def start(*args: str) -> Server:
        servers.append(Server(*args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
