"""What every export format shares: the report of an export, the metadata each file
carries and its checked reading, the numerics check against PyTorch, and ``torch.export``
with a dynamic batch (and size).

Every exported file carries the same string metadata (:func:`metadata_props`): the
preprocessing, the labels, the model's configuration and the format, so that
``mobilenet-v1 eval/predict --model FILE`` needs nothing else. Each format stores it its
own way (ONNX ``metadata_props``, a named ``.tflite`` buffer, a ``.pte`` method, the
``.pt2`` package's metadata) and hands the strings to :func:`check_metadata`, which reads
them as untrusted input.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import MIN_INPUT_SIZE, MobileNetV1Config
from ..data.transforms import Preprocessing
from ..untrusted import parse_json, printable
from ..weights import LoadedWeights
from ..weights.io import check_preprocessing

__all__ = [
    "FP32_TOLERANCE",
    "META_PREFIX",
    "ExportReport",
    "captured_stderr",
    "check_metadata",
    "compare_with_torch",
    "dynamic_shapes",
    "export_program",
    "loaded_weights",
    "metadata_props",
    "random_inputs",
]

FP32_TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and a runtime in float32
META_PREFIX = "mobilenet_v1."
MAX_BATCH = 4096  # upper bounds of the dynamic dimensions (torch.export needs finite ranges)
MAX_SIZE = 4096


@dataclass(frozen=True)
class ExportReport:
    """What an export produced: the file, its precision and the numerics check (the largest
    absolute difference of ``compared``, logits or probabilities, from float PyTorch)."""

    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float
    checked_on: str
    compared: str = "logit"

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def random_inputs(resolution: int, count: int = 4) -> torch.Tensor:
    """The fixed random batch an export is checked on when no images are given."""
    return torch.randn(count, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def compare_with_torch(
    exported: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, inputs: torch.Tensor
) -> tuple[float, float]:
    """Max absolute logit difference and top-1 agreement, runtime vs PyTorch, on ``inputs``."""
    ours = exported(inputs)
    ref = model(inputs)
    return float((ours - ref).abs().max()), float((ours.argmax(1) == ref.argmax(1)).float().mean())


def metadata_props(
    preprocessing: Preprocessing,
    labels: Sequence[str] | None,
    config: MobileNetV1Config,
    fmt: str,
    *,
    dynamic_size: bool = False,
) -> dict[str, str]:
    """The string metadata stored in every exported file (read back by :func:`check_metadata`)."""
    props = {
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "config": json.dumps(config.to_dict()),
        "format": fmt,
        "input_layout": "NCHW float32, RGB, normalized as in preprocessing",
        "dynamic_size": json.dumps(dynamic_size),  # "true": any height/width >= 32, not only the resolution
    }
    if labels is not None:
        props["labels"] = json.dumps(list(labels))
    return {META_PREFIX + k: v for k, v in props.items()}


def check_metadata(props: Mapping[str, str], outputs: int | None, where: str | Path) -> dict[str, Any]:
    """The metadata of an exported file, from its raw strings (``props``) and the width of
    its output (``outputs``; ``None`` where the graph does not fix it): preprocessing,
    labels, config, dynamic size, and the other strings as they are.

    The file is untrusted input: each JSON value is parsed with bounded size and depth
    (:func:`~mobilenet_v1.untrusted.parse_json`), the preprocessing is checked as a weights
    file's is, the labels must be as many strings as the outputs (and the config's
    ``num_classes`` agree with them), and every string is made printable. Any
    disagreement is a one-line ``ValueError`` naming the file (``where``) and the key.
    """
    meta = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if "preprocessing" not in meta:
        raise ValueError(f"{where}: no mobilenet_v1 metadata (was it exported by `mobilenet-v1 export`?)")
    out: dict[str, Any] = {printable(k): printable(v) for k, v in meta.items()}
    out["preprocessing"] = _metadata_preprocessing(where, meta["preprocessing"])
    config = _metadata_json(where, meta, "config", "{}", dict)
    labels = _metadata_json(where, meta, "labels", "null", list | None)
    dynamic = _metadata_json(where, meta, "dynamic_size", "false", bool)  # files from before the option: static
    num_classes = config.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise ValueError(f"{where}: bad 'config' metadata (num_classes must be an integer, got {num_classes!r})")
    if outputs is not None and num_classes is not None and num_classes != outputs:
        raise ValueError(f"{where}: the metadata says {num_classes} classes, the graph has {outputs} outputs")
    if labels is not None:
        if not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{where}: bad 'labels' metadata (expected a list of strings)")
        expected = outputs if outputs is not None else num_classes
        if expected is not None and len(labels) != expected:
            raise ValueError(f"{where}: {len(labels)} labels in the metadata for the graph's {expected} outputs")
        labels = list(labels)  # as they are, to match folder names; printed through printable()
    out["config"], out["labels"], out["dynamic_size"], out["outputs"] = config, labels, dynamic, outputs
    return out


def loaded_weights(meta: dict[str, Any], where: str | Path) -> LoadedWeights:
    """What ``weights.load_weights`` gives for a checkpoint, from an exported file's checked
    metadata (:func:`check_metadata`): class names (the labels, else numbers for as many
    outputs as the graph or the config has) and preprocessing."""
    count = meta["outputs"] if meta["outputs"] is not None else meta["config"].get("num_classes")
    if meta["labels"] is None and count is None:
        raise ValueError(f"{where}: neither labels in the metadata nor a fixed number of outputs in the graph")
    classes = meta["labels"] if meta["labels"] is not None else [str(i) for i in range(count)]
    strings = {k: v for k, v in meta.items() if isinstance(v, str)}
    return LoadedWeights(classes, meta["preprocessing"], strings)


def _metadata_json(where: str | Path, meta: dict[str, str], key: str, default: str, kind: Any) -> Any:
    value = parse_json(meta.get(key, default), what=f"{where}: '{key}' metadata", max_depth=2)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: bad '{key}' metadata (got a JSON {type(value).__name__})")
    return value


def _metadata_preprocessing(where: str | Path, text: str) -> Preprocessing:
    data = parse_json(text, what=f"{where}: 'preprocessing' metadata", max_depth=2)
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return check_preprocessing(Preprocessing.from_dict(data))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ValueError(f"{where}: bad 'preprocessing' metadata ({printable(exc)})") from None


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Keep a native runtime's log lines off the terminal, where the CLI prints one line per
    error: C++ code writes to file descriptor 2, Python bindings to ``sys.stderr``. Yields
    a list that holds the captured lines once the block ends (the reason to give when
    loading fails)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as native, contextlib.redirect_stderr(io.StringIO()) as python:
        os.dup2(native.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            native.seek(0)
            text = native.read(1 << 16).decode("utf-8", "replace") + python.getvalue()[: 1 << 16]
            lines += [line.strip() for line in text.splitlines() if line.strip()]


def dynamic_shapes(dynamic_size: bool = True) -> tuple[dict[int, Any]]:
    """``dynamic_shapes`` for ``torch.export`` of a model's one (N, 3, H, W) input: the
    batch always, the height and width (any size >= 32, Section 3.4) with ``dynamic_size``."""
    dims = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_size:
        dims[2] = torch.export.Dim("height", min=MIN_INPUT_SIZE, max=MAX_SIZE)
        dims[3] = torch.export.Dim("width", min=MIN_INPUT_SIZE, max=MAX_SIZE)
    return (dims,)


@contextlib.contextmanager
def size_oblivious(enabled: bool = True) -> Iterator[None]:
    """Trace a dynamic height/width without specializing on the last feature map's size.

    A 32-pixel input leaves a 1x1 map at stride 32, so PyTorch's contiguity check of that
    convolution's output (``_prims_common.check_contiguous_sizes_strides``, run while
    recording tensor metadata) asks whether the size is 1 and guards on the answer, which
    ``torch.export`` then rejects for the range [32, ...]. Size-oblivious reasoning answers
    "not 1" without a guard; the check only affects metadata, never the computation."""
    if not enabled:
        yield
        return
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


def export_program(
    model: nn.Module, resolution: int = 224, *, dynamic_size: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (put it in eval mode first) with a dynamic batch and,
    with ``dynamic_size``, a dynamic height and width in [32, 4096]: the program follows
    the input's size (SAME pads included) as eager PyTorch does. ``resolution`` is only
    the example input's size (and the fixed one without ``dynamic_size``)."""
    example = torch.randn(2, 3, resolution, resolution)
    with size_oblivious(dynamic_size):
        return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes(dynamic_size))
