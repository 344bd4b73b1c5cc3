"""``mobilenet-v1 serve``: one model over HTTP (Open Inference Protocol, ``/v1/classify``,
metrics, a web page), dynamically batched; see docs/serving.md."""

from __future__ import annotations

import argparse
import os
import re
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path

from ..untrusted import printable
from ..weights import MobileNetV1Weights
from . import args as types
from .predict import MODEL_HELP, TRUST_HELP

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP: Open Inference Protocol, /v1/classify, a web page")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        default=MobileNetV1Weights.DEFAULT.value.name,
        help="Google's model name or a checkpoint, served as float32 ONNX under ONNX Runtime (default: %(default)s)",
    )
    source.add_argument("--model", type=Path, help=MODEL_HELP)
    p.add_argument("--name", help="the model's name in the URLs (default: the weights' or file's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=types.non_negative_int, default=8000, help="0 picks a free port")
    p.add_argument("--threads", type=types.positive_int, default=2, help="the runtime's intra-op threads")
    p.add_argument("--max-batch", type=types.positive_int, default=8, help="images per call of the model")
    p.add_argument(
        "--max-delay-ms", type=float, default=0.0, help="wait up to this long to fill a batch (default 0: never wait)"
    )
    p.add_argument("--max-queue", type=types.positive_int, default=64, help="requests waiting before 503")
    p.add_argument("--max-body-mb", type=types.positive_float, default=64.0, help="request body limit (413 above)")
    p.add_argument("--timeout-ms", type=types.positive_float, default=10_000.0, help="answer 504 past this wait")
    p.add_argument(
        "--web-runtime",
        type=Path,
        help="onnxruntime-web's dist folder for the page's browser mode (default: $MOBILENET_V1_WEB_RUNTIME)",
    )
    p.add_argument(
        "--ort-spin",
        action="store_true",
        help="let ONNX Runtime's idle threads spin (default: they sleep; the server's own event loop and "
        "decoding threads share the cores with them)",
    )
    p.add_argument("--trust-native-code", action="store_true", help=TRUST_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.onnx import SPIN_ENV
    from ..serve.app import ServeConfig, create_app, run_server

    # a server under load is its own busy neighbour: ORT's spinning threads would take the cores
    # from the event loop and the decoding threads (docs/serving.md); $MOBILENET_V1_ORT_SPIN still rules
    os.environ[SPIN_ENV] = "1" if args.ort_spin else os.environ.get(SPIN_ENV, "0")
    config = ServeConfig(
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        timeout_ms=args.timeout_ms,
    )
    if args.web_runtime is not None and not args.web_runtime.is_dir():
        raise FileNotFoundError(f"--web-runtime folder not found: {args.web_runtime}")
    with ExitStack() as stack:
        served = load_served(args, stack)
        app = create_app(served, config, web_runtime=args.web_runtime)  # checks max_batch and the rest first
        sock = bind(args.host, args.port)
        host, port = sock.getsockname()[:2]
        print(
            printable(f"serving {served.name} ({served.runtime}, {args.threads} threads) at http://{host}:{port}/"),
            flush=True,
        )
        run_server(app, sock)
    print("stopped", flush=True)
    return 0


def load_served(args: argparse.Namespace, stack: ExitStack):
    """The model to serve: an exported file as it is, or the weights exported to float32 ONNX."""
    from ..deploy.formats import RUNTIMES
    from ..serve.app import ServedModel
    from .predict import from_model

    if args.model is not None:
        if not args.model.is_file():
            raise FileNotFoundError(f"--model file not found: {args.model}")
        classifier = from_model(args.model, False, args.trust_native_code, threads=args.threads)
        name = check_name(args.name or args.model.stem)
        runtime = RUNTIMES.get(args.model.suffix.lower(), "")
        onnx_file = args.model if args.model.suffix.lower() == ".onnx" else None
        return ServedModel(classifier, name, runtime, onnx_file)
    from ..classify import Classifier
    from ..deploy.onnx import export_onnx, load_onnx
    from ..weights import load_weights

    model, info = load_weights(args.weights)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mobilenet-v1-serve-")))
    path = folder / "model.onnx"
    export_onnx(model, path, info.preprocessing, labels=info.classes)
    onnx_model, loaded = load_onnx(path, args.threads)
    classifier = Classifier(onnx_model, loaded.preprocessing, loaded.classes, info.ignore, source=str(args.weights))
    name = check_name(args.name or Path(str(args.weights)).name.removesuffix(".safetensors").removesuffix(".tflite"))
    return ServedModel(classifier, name, RUNTIMES[".onnx"], path)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(
            f"--name {printable(name)!r} must be 1-64 letters, digits, '_', '.' or '-' (it goes into URLs), "
            "starting with a letter or digit"
        )
    return name


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts: a taken port is one line, exit code 2."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that
        # say so, and with it on, a response written in two parts waits for the client's delayed ACK (40 ms)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise OSError(f"cannot listen on {printable(host)}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock
