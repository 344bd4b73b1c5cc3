"""The HTTP application: one model behind the Open Inference Protocol, ``/v1/classify``
for photos, Prometheus metrics and the web page.

Every answer that is not a success is a JSON ``{"error": "..."}`` of one printable line:
400 for a request the model cannot take (a tensor's shape or datatype, a ``topk``), 404
for another model's name, 413 for a body over the limit (refused from its
``Content-Length`` before it is read, or as soon as a chunked body passes the limit), 415
for a photo that cannot be decoded, 503 with ``Retry-After`` when the queue is full, 504
past the request's timeout. Photos are decoded as ``predict`` decodes files
(:func:`~mobilenet_v1.data.images.decode_image`: sizes checked from the header, EXIF
orientation applied) on worker threads, then batched with the tensors of other requests.
"""

import asyncio
import json
import logging
import os
import signal
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata as package_metadata
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..classify import Classifier
from ..data.images import decode_image
from ..optional import require
from ..untrusted import printable
from .batcher import Batcher, Overloaded, TimedOut
from .metrics import EXTRA, Metrics
from .protocol import HEADER_LENGTH, ProtocolError, encode_response, parse_request

__all__ = ["ServeConfig", "ServedModel", "create_app", "run_server"]

INPUT, OUTPUT = "input", "logits"  # the names export gives the ONNX graph's tensors
MAX_TOPK = 1000
BODY_BUDGET = 4  # request bodies received at once, in units of the body limit
PAGE = resources.files(__package__) / "page"
VERSION = package_metadata.version("mobilenet-v1")
WEB_RUNTIME_ENV = "MOBILENET_V1_WEB_RUNTIME"  # onnxruntime-web's folder when not given (`make web` sets it)
WEB_RUNTIME_FILE = "ort.wasm.min.js"  # onnxruntime-web's WASM-only bundle, beside its .mjs and .wasm


@dataclass(frozen=True)
class ServeConfig:
    """How the server batches and bounds its work (Triton's ``dynamic_batching`` and queue
    policy; 64 MiB is Triton's default request limit)."""

    max_batch: int = 8
    max_delay_ms: float = 0.0
    max_queue: int = 64
    max_body_mb: float = 64.0
    timeout_ms: float = 10_000.0

    def __post_init__(self) -> None:
        if not 0 < self.max_body_mb <= 1024:
            raise ValueError(f"max_body_mb={self.max_body_mb!r}: must be in (0, 1024]")
        if not 0 < self.timeout_ms <= 3_600_000:
            raise ValueError(f"timeout_ms={self.timeout_ms!r}: must be in (0, 3600000]")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


@dataclass(frozen=True)
class ServedModel:
    """The model a server runs: its classifier, the name it is served under, its runtime
    (for ``/v2/models/{name}``'s platform) and, for the page's browser mode, its ONNX file."""

    classifier: Classifier
    name: str
    runtime: str
    onnx_file: Path | None = None

    @property
    def datatype(self) -> str:
        return "UINT8" if self.classifier.uint8 else "FP32"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        resolution = self.classifier.preprocessing.resolution
        return (3, resolution, resolution)


class ApiError(Exception):
    """An answer other than success: its HTTP status, one line, and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def create_app(served: ServedModel, config: ServeConfig | None = None, *, web_runtime: Path | None = None) -> Any:
    """The FastAPI application serving ``served``; ``web_runtime`` is the folder of
    onnxruntime-web's files for the page's browser mode (``ort.wasm.min.js`` and its
    WASM; default ``$MOBILENET_V1_WEB_RUNTIME``, none without it)."""
    fastapi = require("fastapi", EXTRA, "the server")
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.staticfiles import StaticFiles

    config = config or ServeConfig()
    runtime_folder = web_runtime or (Path(os.environ[WEB_RUNTIME_ENV]) if os.environ.get(WEB_RUNTIME_ENV) else None)
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a line per malformed form: the client's 400
    metrics = Metrics()
    classifier = served.classifier
    batcher = Batcher(
        lambda batch: classifier.scores(batch),
        max_batch=config.max_batch,
        max_delay_ms=config.max_delay_ms,
        max_queue=config.max_queue,
        metrics=metrics,
    )
    timeout = config.timeout_ms / 1000

    @asynccontextmanager
    async def lifespan(app: Any):
        await batcher.start()
        yield
        await batcher.stop()

    app = fastapi.FastAPI(title=f"mobilenet-v1: {served.name}", version=VERSION, lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse({"error": printable(" ".join(str(message).split()))}, status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Any, exc: ApiError) -> Any:
        return error(exc.status, str(exc), exc.headers)

    @app.exception_handler(fastapi.HTTPException)
    async def http_error(request: Any, exc: Any) -> Any:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(fastapi.exceptions.RequestValidationError)
    async def validation_error(request: Any, exc: Any) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body"))
        return error(400, f"{where}: {first.get('msg', 'invalid request')}")

    def check_name(name: str) -> None:
        if name != served.name:
            raise ApiError(404, f"unknown model {printable(name)!r}; this server serves {served.name!r}")

    async def infer(inputs: torch.Tensor) -> torch.Tensor:
        try:
            return await batcher.submit(inputs, timeout)
        except Overloaded as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        except TimedOut as exc:
            raise ApiError(504, str(exc)) from None
        except ValueError as exc:  # more rows than max_batch, or the model's outputs refused
            raise ApiError(400, str(exc)) from None

    # ---- Open Inference Protocol -----------------------------------------------------
    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Any:
        if not batcher.running:
            raise ApiError(503, "not ready")
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "mobilenet-v1", "version": VERSION, "extensions": ["classification", "binary_tensor_data"]}

    def model_metadata(name: str) -> dict[str, Any]:
        check_name(name)
        return {
            "name": served.name,
            "versions": ["1"],
            "platform": served.runtime,
            "inputs": [{"name": INPUT, "datatype": served.datatype, "shape": [-1, *served.input_shape]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(classifier.classes)]}],
        }

    @app.get("/v2/models/{name}")
    async def metadata(name: str) -> dict[str, Any]:
        return model_metadata(name)

    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata_version(name: str, version: str) -> dict[str, Any]:
        check_version(version)
        return model_metadata(name)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Any:
        check_name(name)
        return await ready()

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Any:
        check_version(version)
        return await model_ready(name)

    def check_version(version: str) -> None:
        if version != "1":
            raise ApiError(404, f"unknown version {printable(version)!r}; the model has version '1'")

    async def v2_infer(request: Any, name: str) -> Any:
        check_name(name)
        body = await read_body(request, config.max_body_bytes)
        try:
            parsed = parse_request(
                body,
                request.headers.get(HEADER_LENGTH),
                input_name=INPUT,
                output_name=OUTPUT,
                datatype=served.datatype,
                shape=served.input_shape,
                max_batch=config.max_batch,
            )
        except ProtocolError as exc:
            raise ApiError(400, str(exc)) from None
        logits = await infer(torch.from_numpy(parsed.array.copy()))
        classes = {}
        for k in {o.classification for o in parsed.outputs if o.classification}:
            probs = classifier.probabilities_of(logits)
            indices = classifier.top_indices(probs, k)
            classes[k] = [
                [f"{float(p):f}:{i}:{classifier.classes[i]}" for p, i in zip(row_p, row_i.tolist(), strict=True)]
                for row_p, row_i in zip(probs.gather(1, indices), indices, strict=True)
            ]
        content, headers = encode_response(parsed, served.name, logits.float().numpy(), classes)
        return Response(content, headers=headers)

    @app.post("/v2/models/{name}/infer")
    async def model_infer(name: str, request: fastapi.Request) -> Any:
        return await v2_infer(request, name)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def model_version_infer(name: str, version: str, request: fastapi.Request) -> Any:
        check_version(version)
        return await v2_infer(request, name)

    # ---- photos ------------------------------------------------------------------------
    def prepare(data: bytes, filename: str) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        try:
            image = decode_image(data, filename)
        except ValueError as exc:
            raise ApiError(415, str(exc)) from None
        x = classifier.transform(image).unsqueeze(0)
        seconds = time.perf_counter() - start
        metrics.decode_seconds.observe(seconds)
        return x, seconds

    decode_slots = asyncio.Semaphore(os.cpu_count() or 2)  # a decoded photo may be 0.5 GB: a few at a time

    @app.post("/v1/classify")
    async def classify(request: fastapi.Request, topk: int = fastapi.Query(5, ge=1, le=MAX_TOPK)) -> Any:
        """Top-k of one photo: the raw body (``Content-Type: image/*``) or a multipart form's ``file``."""
        start = time.perf_counter()
        data, filename = await read_photo(request, config.max_body_bytes)
        async with decode_slots:
            x, decode_s = await run_in_threadpool(prepare, data, filename)
        queued = time.perf_counter()
        scores = await infer(x)
        probs = classifier.probabilities_of(scores)
        indices = classifier.top_indices(probs, topk)[0]
        predictions = [
            {"label": classifier.classes[i], "index": i, "probability": float(probs[0, i])} for i in indices.tolist()
        ]
        done = time.perf_counter()
        timing = {"decode": decode_s * 1000, "model": (done - queued) * 1000, "total": (done - start) * 1000}
        return {"model": served.name, "predictions": predictions, "timing_ms": timing}

    # ---- the page, its model, metrics --------------------------------------------------
    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        pre = classifier.preprocessing
        return {
            "name": served.name,
            "runtime": served.runtime,
            "classes": classifier.classes,
            "ignore": list(classifier.ignore),
            "uint8": classifier.uint8,
            "preprocessing": {"resolution": pre.resolution, "resize": pre.resize, "mean": pre.mean, "std": pre.std},
            "browser": bool(served.onnx_file and runtime_folder and (runtime_folder / WEB_RUNTIME_FILE).is_file()),
            "onnx": served.onnx_file is not None,
        }

    @app.get("/v1/model.onnx")
    async def model_file() -> Any:
        from fastapi.responses import FileResponse

        if served.onnx_file is None:
            raise ApiError(404, f"{served.name} is not served from an ONNX file: the browser cannot run it")
        return FileResponse(served.onnx_file, media_type="application/octet-stream")

    @app.get("/metrics")
    async def prometheus() -> Any:
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    @app.get("/")
    async def page() -> Any:
        from fastapi.responses import HTMLResponse

        return HTMLResponse((PAGE / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(PAGE)), name="static")
    if runtime_folder is not None and runtime_folder.is_dir():
        app.mount("/ort", StaticFiles(directory=str(runtime_folder)), name="ort")

    return Limits(app, metrics, config.max_body_bytes)


def run_server(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on the listening ``sock`` with uvicorn until SIGTERM or SIGINT. On
    SIGTERM uvicorn stops accepting, lets what is in flight finish (30 s at most), then
    raises the signal again under the handler it found, this one: a clean stop returns."""
    uvicorn = require("uvicorn", EXTRA, "the server")
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30, lifespan="on")
    )
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Any, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over the server's limit of {limit} bytes (--max-body-mb)")
            chunks.append(chunk)
    except BodyTooLarge:
        raise ApiError(413, f"the body is over the server's limit of {limit} bytes (--max-body-mb)") from None
    return b"".join(chunks)


async def read_photo(request: Any, limit: int) -> tuple[bytes, str]:
    """The photo of a ``/v1/classify`` request and a name for it in errors."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except BodyTooLarge:
            raise ApiError(413, f"the body is over the server's limit of {limit} bytes (--max-body-mb)") from None
        except Exception as exc:  # python-multipart's errors: a malformed form
            raise ApiError(400, f"malformed multipart form: {exc}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "the multipart form has no file field 'file'")
        try:
            return await upload.read(), printable(upload.filename or "upload")[:100]
        finally:
            await form.close()
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise ApiError(415, f"Content-Type {printable(kind)[:64]} is not an image: send image/* or a multipart form")
    data = await read_body(request, limit)
    if not data:
        raise ApiError(400, "the body is empty: send the photo's bytes")
    return data, "upload"


class Limits:
    """ASGI middleware around the application: bodies over the limit get 413 before they
    are read (from ``Content-Length``) or as soon as they pass it (chunked); the bodies
    being received at once are bounded too (:data:`BODY_BUDGET` times the limit: a
    request that would pass it gets 503 before its body is read), and every answer is
    counted by endpoint and status in the metrics."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.state = app.state  # the FastAPI app's, for callers and tests
        self.budget, self.in_flight = BODY_BUDGET * max_body, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            code = 400 if not length.isdigit() else 413
            message = (
                "Content-Length is not a number"
                if code == 400
                else f"the body is over the server's limit of {self.max_body} bytes (--max-body-mb)"
            )
            await _send_json(send, code, message)
            self.metrics.request(_endpoint(scope), code, time.perf_counter() - start)
            return
        headers = dict(scope["headers"])
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        reserved = int(length) if length is not None else self.max_body if chunked else 0
        if self.in_flight + reserved > self.budget:
            await _send_json(send, 503, "too many request bodies in flight: try again", retry_after=True)
            self.metrics.request(_endpoint(scope), 503, time.perf_counter() - start)
            return
        self.in_flight += reserved
        received = [0]

        async def bounded_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.max_body:
                    raise BodyTooLarge
            return message

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, bounded_receive, counting_send)
        finally:
            self.in_flight -= reserved
            self.metrics.request(_endpoint(scope), status[0], time.perf_counter() - start)


def _endpoint(scope: dict[str, Any]) -> str:
    """The route's template (``/v2/models/{name}/infer``), never the raw path: bounded labels."""
    route = scope.get("route")
    return getattr(route, "path", None) or ("/static" if scope.get("path", "").startswith("/static") else "other")


async def _send_json(send: Any, status: int, message: str, *, retry_after: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"retry-after", b"1")] if retry_after else []
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
