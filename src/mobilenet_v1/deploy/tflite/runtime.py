"""An exported ``.tflite`` under LiteRT (``ai-edge-litert``) with its own labels and preprocessing.

The file carries the same metadata as an ONNX export (preprocessing, labels, config,
format; :func:`~mobilenet_v1.deploy.onnx.metadata_props`) as JSON in a named metadata
buffer of the flatbuffer (``Model.metadata``, which the interpreter ignores), so
``mobilenet-v1 eval --model x.tflite`` needs nothing else. The file is untrusted: its
size is bounded, the flatbuffer is parsed with every error turned into one line, and
the metadata goes through the same checks as ONNX's (:func:`~.onnx.read_metadata`:
bounded JSON, checked preprocessing, labels as many as the outputs, printable strings).
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ...untrusted import parse_json, read_bounded
from ...weights import LoadedWeights
from ...weights.tflite.reader import MAX_TFLITE_BYTES
from ..onnx import read_metadata, require

__all__ = ["METADATA_NAME", "TFLiteModel", "load_tflite_model", "tflite_metadata"]

METADATA_NAME = "mobilenet_v1"
MAX_METADATA_BYTES = 1 << 20  # as untrusted.MAX_JSON_BYTES: 1001 labels are ~30 KB


def _read(path: Path) -> bytes:
    return read_bounded(path, "TFLite flatbuffer", MAX_TFLITE_BYTES, b"TFL3")


def tflite_metadata(path: str | Path) -> dict[str, str]:
    """The raw ``mobilenet_v1.*`` strings of an exported file ({} when it has none)."""
    tfl = require("tflite", extra="tflite")
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


def _interpreter(path: Path, threads: int) -> Any:
    module = require("ai_edge_litert.interpreter", extra="litert")
    _read(path)
    try:
        interpreter = module.Interpreter(model_path=str(path), num_threads=threads)  # default: XNNPACK
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load TFLite model {path}: {reason}") from None
    return interpreter


class TFLiteModel:
    """A ``.tflite`` file under LiteRT's default CPU path (XNNPACK) as a ``batch -> logits``
    callable, as :class:`~mobilenet_v1.deploy.onnx.OnnxModel` is for ONNX Runtime.

    A float file takes the preset's float input. A uint8 file takes uint8 pixels: a
    uint8 (N, 3, H, W) batch gives the file's uint8 softmax ``q`` as it is (probability
    ``q / 256``, as the int8-exact emulation: ``Classifier(..., uint8=model.uint8)``); a
    float batch is turned back into the pixels it was normalized from and gives logits
    ``log(q / 256)``, whose softmax is ``q`` renormalized (zero where ``q`` is 0).
    ``metadata`` reads our metadata (labels, preprocessing), which exports always have.
    """

    def __init__(self, path: str | Path, threads: int = 2, *, metadata: bool = True) -> None:
        self.path = Path(path)
        self.interpreter = _interpreter(self.path, threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.uint8 = self.input["dtype"] == np.uint8
        self.metadata = read_metadata(self._session(), name=self.path) if metadata else {}

    def _session(self) -> Any:
        """What :func:`~.onnx.read_metadata` reads: the metadata strings and the output shape."""
        props = tflite_metadata(self.path)
        shape = [int(s) for s in self.output["shape"]]
        meta = SimpleNamespace(custom_metadata_map=props)
        return SimpleNamespace(get_modelmeta=lambda: meta, get_outputs=lambda: [SimpleNamespace(shape=shape)])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The raw outputs of an NHWC batch, one image at a time (the file's batch is 1)."""
        outs = []
        for image in batch:
            self.interpreter.set_tensor(self.input["index"], image[None])
            self.interpreter.invoke()
            outs.append(self.interpreter.get_tensor(self.output["index"])[0].copy())
        return np.stack(outs)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = batch if batch.dtype == torch.uint8 else self.to_pixels(batch) if self.uint8 else None
        if pixels is not None:
            if not self.uint8:
                raise ValueError(f"{self.path} is a float model: give it the preset's float input, not uint8 pixels")
            out = torch.from_numpy(self.run(pixels.permute(0, 2, 3, 1).contiguous().numpy()))
            return out if batch.dtype == torch.uint8 else out.float().div(256).log()
        return torch.from_numpy(self.run(batch.float().permute(0, 2, 3, 1).contiguous().numpy()))

    def to_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """The uint8 pixels a float batch was normalized from (the preprocessing inverted)."""
        pre = self.metadata.get("preprocessing")
        if pre is None:
            raise ValueError(f"{self.path}: a float batch for a uint8 model needs the file's preprocessing metadata")
        mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        return (batch.float() * std + mean).mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def load_tflite_model(path: str | Path, threads: int = 2) -> tuple[TFLiteModel, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from an exported file's metadata."""
    model = TFLiteModel(path, threads)
    meta = model.metadata
    count = meta["outputs"]
    classes = meta["labels"] if meta["labels"] is not None else [str(i) for i in range(count)]
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return model, LoadedWeights(classes, meta["preprocessing"], strings)
