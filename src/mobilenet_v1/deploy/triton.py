"""A Triton Inference Server model repository: the float32 ONNX export and its
``config.pbtxt``, for serving beyond one process.

The repository holds ``NAME/config.pbtxt``, ``NAME/labels.txt`` and ``NAME/1/model.onnx``
(ONNX Runtime backend). Its dynamic batching and queue policy are those of
``mobilenet-v1 serve`` (the same batch, delay, queue and timeout), and its tensors those
of ``serve``'s ``/v2/models/NAME`` (``input`` FP32 ``[-1, 3, H, W]``, ``logits`` FP32
``[-1, classes]``), so a client of the Open Inference Protocol moves from one to the
other unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..data.transforms import Preprocessing
from ..files import write_text
from ..model import MobileNetV1
from ..untrusted import printable
from .common import ExportReport
from .onnx import export_onnx

__all__ = ["export_triton", "model_config"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def model_config(
    name: str,
    resolution: int,
    classes: int,
    *,
    max_batch: int = 8,
    max_delay_ms: float = 0.0,
    max_queue: int = 64,
    timeout_ms: float = 10_000.0,
    threads: int = 2,
) -> str:
    """The ``config.pbtxt`` of the model (protobuf text format)."""
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{ name: "input" data_type: TYPE_FP32 dims: [ 3, {resolution}, {resolution} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {classes} ] label_filename: "labels.txt" }}
]
dynamic_batching {{
  preferred_batch_size: [ {max_batch} ]
  max_queue_delay_microseconds: {round(max_delay_ms * 1000)}
  default_queue_policy {{
    max_queue_size: {max_queue}
    timeout_action: REJECT
    default_timeout_microseconds: {round(timeout_ms * 1000)}
    allow_timeout_override: true
  }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}
"""


def export_triton(
    model: MobileNetV1,
    repository: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str],
    name: str,
    max_batch: int = 8,
    max_delay_ms: float = 0.0,
    max_queue: int = 64,
    timeout_ms: float = 10_000.0,
    threads: int = 2,
) -> ExportReport:
    """``model`` as the model ``name`` of the Triton repository ``repository`` (created if
    missing; an existing model of that name is refused). Returns the ONNX export's report."""
    if not NAME.fullmatch(name):
        raise ValueError(f"name={name!r}: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if len(labels) != model.num_classes:
        raise ValueError(f"labels has {len(labels)} names for {model.num_classes} classes")
    folder = Path(repository) / name
    if folder.exists():
        raise FileExistsError(f"{printable(folder)} exists: choose another name or repository")
    (folder / "1").mkdir(parents=True)
    report = export_onnx(model, folder / "1" / "model.onnx", preprocessing, labels=labels)
    config = model_config(
        name, preprocessing.resolution, model.num_classes, max_batch=max_batch, max_delay_ms=max_delay_ms,
        max_queue=max_queue, timeout_ms=timeout_ms, threads=threads,
    )  # fmt: skip
    write_text(folder / "config.pbtxt", config)
    write_text(folder / "labels.txt", "".join(" ".join(label.split()) + "\n" for label in labels))
    return report
