"""``.tflite`` files under LiteRT (``ai-edge-litert``, Google's interpreter): the one
wrapper, for our exports and for Google's own files.

An exported file carries the same metadata as any export (preprocessing, labels, config,
format; :func:`~mobilenet_v1.deploy.common.metadata_props`) as JSON in a named metadata
buffer of the flatbuffer (``Model.metadata``, which the interpreter ignores), so
``mobilenet-v1 eval --model x.tflite`` needs nothing else. Google's files carry none; the
1.0/224 model comes as an embedding extractor and its head layers, run as one chain. Every
file is untrusted: its size is bounded, the flatbuffer is parsed with every error turned
into one line, and the metadata goes through the checks every format's does
(:func:`~mobilenet_v1.deploy.common.check_metadata`).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...optional import require
from ...untrusted import parse_json, printable, read_bounded
from ...weights import LoadedWeights
from ...weights.google_tflite.reader import MAX_TFLITE_BYTES
from ..common import captured_stderr, check_metadata, loaded_weights

__all__ = ["KERNELS", "METADATA_NAME", "LiteRTModel", "load_litert", "tflite_metadata"]

METADATA_NAME = "mobilenet_v1"
MAX_METADATA_BYTES = 1 << 20  # as untrusted.MAX_JSON_BYTES: 1001 labels are ~30 KB
# "default": LiteRT's default CPU path (the XNNPACK delegate); "reference": its
# reference kernels (BUILTIN_REF), the plain C++ arithmetic of the TFLite spec.
KERNELS = ("default", "reference")


def _read(path: Path) -> bytes:
    return read_bounded(path, "TFLite flatbuffer", MAX_TFLITE_BYTES, b"TFL3")


def tflite_metadata(path: str | Path) -> dict[str, str]:
    """The raw ``mobilenet_v1.*`` strings of an exported file ({} when it has none)."""
    tfl = require("tflite", "tflite", "reading .tflite files")
    path = Path(path)
    data = _read(path)
    try:
        model = tfl.Model.GetRootAs(data, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        found = [e.Buffer() for e in entries if e.Name() == METADATA_NAME.encode()]
        if not found:
            return {}
        if not 0 <= found[0] < model.BuffersLength():
            raise IndexError(f"metadata buffer {found[0]} of {model.BuffersLength()}")
        raw = model.Buffers(found[0]).DataAsNumpy()
        raw = raw.tobytes() if isinstance(raw, np.ndarray) else b""
    except (IndexError, struct.error, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: truncated or corrupt TFLite file ({type(exc).__name__})") from None
    props = parse_json(raw, what=f"{path}: '{METADATA_NAME}' metadata", max_bytes=MAX_METADATA_BYTES, max_depth=1)
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise ValueError(f"{path}: bad '{METADATA_NAME}' metadata (expected a JSON object of strings)")
    return props


def _interpreter(path: Path, threads: int, kernels: str) -> Any:
    module = require("ai_edge_litert.interpreter", "litert", "running .tflite files")
    _read(path)
    resolver = module.OpResolverType.BUILTIN_REF if kernels == "reference" else module.OpResolverType.AUTO
    # LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (and its
    # errors) to file descriptor 2: off the terminal; its last error line is the reason
    with captured_stderr() as log:
        try:
            interpreter = module.Interpreter(
                model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        else:
            return interpreter
    reason = next((line for line in reversed(log) if "ERROR" in line), failure)  # LiteRT's own words
    raise ValueError(f"cannot load TFLite model {path}: {printable(reason[:200])}")


class LiteRTModel:
    """One ``.tflite`` file, or a chain of them (Google's 1.0/224: an embedding extractor,
    then its head layers fed the extractor's uint8 output), under LiteRT, as a
    ``batch -> outputs`` callable like :class:`~mobilenet_v1.deploy.onnx.OnnxModel`.

    A float file takes the preset's float input and gives logits. A uint8 file takes uint8
    pixels: a uint8 (N, 3, H, W) batch gives the file's uint8 output ``q`` as it is (for a
    softmax, probability ``q / 256``, as the int8-exact emulation:
    ``Classifier(..., uint8=model.uint8)``); a float batch is turned back into the pixels it
    was normalized from and gives logits ``log(q / 256)``, whose softmax is ``q``
    renormalized (zero where ``q`` is 0). :meth:`scores` gives the dequantized output
    (Google's files: probabilities). ``kernels`` picks LiteRT's default CPU path
    (XNNPACK) or its reference kernels. ``metadata`` holds our export metadata (labels,
    preprocessing) when the (single) file carries it, else it is empty. The files have a
    fixed batch of 1, so a batch runs one image at a time, under a lock: one model may be
    called from several threads.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], threads: int = 2, *, kernels: str = "default") -> None:
        if kernels not in KERNELS:
            raise ValueError(f"unknown LiteRT kernels {kernels!r}; choose from {', '.join(KERNELS)}")
        self.paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("paths must name at least one .tflite file")
        self.path = self.paths[0]
        self.stages = [_interpreter(path, threads, kernels) for path in self.paths]
        self.input = self.stages[0].get_input_details()[0]
        self.output = self.stages[-1].get_output_details()[0]
        self.uint8 = self.input["dtype"] == np.uint8
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in self.input["shape"])  # (1, H, W, 3)
        self.output_scale, self.output_zero_point = self.output["quantization"]
        self.lock = threading.Lock()
        props = tflite_metadata(self.path) if len(self.paths) == 1 else {}
        width = int(self.output["shape"][-1])
        self.metadata = check_metadata(props, width, self.path) if props else {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The raw outputs of an NHWC batch through every stage, one image at a time."""
        outs = []
        with self.lock:
            for image in batch:
                x = image[None]
                for stage in self.stages:
                    try:
                        stage.set_tensor(stage.get_input_details()[0]["index"], x)
                        stage.invoke()
                    except (ValueError, RuntimeError) as exc:  # e.g. "Input tensor 22 lacks data"
                        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise ValueError(f"{self.path}: LiteRT cannot run this model: {printable(reason)}") from None
                    x = stage.get_tensor(stage.get_output_details()[0]["index"])
                outs.append(x[0].copy())
        return np.stack(outs)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = batch if batch.dtype == torch.uint8 else self.to_pixels(batch) if self.uint8 else None
        if pixels is not None:
            if not self.uint8:
                raise ValueError(f"{self.path} is a float model: give it the preset's float input, not uint8 pixels")
            self._check_size(pixels)
            out = torch.from_numpy(self.run(pixels.permute(0, 2, 3, 1).contiguous().numpy()))
            return out if batch.dtype == torch.uint8 else out.float().div(256).log()
        self._check_size(batch)
        return torch.from_numpy(self.run(batch.float().permute(0, 2, 3, 1).contiguous().numpy()))

    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        """The dequantized output of a uint8 (N, 3, H, W) batch (Google's files: the
        probabilities LiteRT reports)."""
        raw = self(batch).numpy().astype(np.float32)
        if self.output_scale:
            raw = (raw - self.output_zero_point) * self.output_scale
        return torch.from_numpy(raw.reshape(len(batch), -1))

    def _check_size(self, batch: torch.Tensor) -> None:
        expected = (3, *self.input_shape[1:3])
        if batch.dim() != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(f"expected a batch (N, {', '.join(map(str, expected))}), got {tuple(batch.shape)}")

    def to_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """The uint8 pixels a float batch was normalized from (the preprocessing inverted)."""
        pre = self.metadata.get("preprocessing")
        if pre is None:
            raise ValueError(f"{self.path}: a float batch for a uint8 model needs the file's preprocessing metadata")
        mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        return (batch.float() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def load_litert(path: str | Path, threads: int = 2) -> tuple[LiteRTModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata."""
    model = LiteRTModel(path, threads)
    if not model.metadata:
        raise ValueError(f"{path}: no mobilenet_v1 metadata (was it exported by `mobilenet-v1 export`?)")
    return model, loaded_weights(model.metadata, path)
