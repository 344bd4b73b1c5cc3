"""The Open Inference Protocol (KServe's and Triton's "v2" REST protocol) for one model.

A request carries tensors as JSON (``{"inputs": [{"name", "shape", "datatype", "data"}]}``)
or, with the binary tensor data extension, as a JSON header of
``Inference-Header-Content-Length`` bytes followed by each tensor's raw little-endian
bytes (what ``tritonclient.http`` sends by default). Every field is checked before any
tensor is allocated: one input, its datatype, a shape of ``[B, 3, H, W]`` with ``B`` at
most the server's batch and ``H, W`` the model's, and as many values or bytes as the
shape says. Outputs are logits, or with Triton's classification extension
(``"parameters": {"classification": K}``) the top ``K`` as ``"score:index:label"``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..untrusted import printable

__all__ = ["HEADER_LENGTH", "InferRequest", "ProtocolError", "encode_response", "parse_request"]

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


class ProtocolError(ValueError):
    """A request the protocol or the model cannot take (HTTP 400)."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k as "score:index:label", 0 for the logits
    binary: bool = False


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    input_name: str
    array: np.ndarray  # (B, 3, H, W) of the model's datatype
    outputs: tuple[RequestedOutput, ...]


def parse_request(
    body: bytes,
    header_length: str | None,
    *,
    input_name: str,
    output_name: str,
    datatype: str,
    shape: tuple[int, int, int],
    max_batch: int,
) -> InferRequest:
    """The request in ``body`` (the binary extension's header length from its HTTP header,
    or ``None`` for plain JSON), for a model of one input ``input_name`` of ``datatype``
    and per-image ``shape``, answering ``output_name``."""
    header, binary = _split(body, header_length)
    try:
        request = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError("the request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"inputs must be a list of one tensor, {input_name!r}")
    tensor = inputs[0]
    if tensor.get("name") != input_name:
        raise ProtocolError(
            f"unknown input {printable(str(tensor.get('name')))!r}; the model's input is {input_name!r}"
        )
    if tensor.get("datatype") != datatype:
        raise ProtocolError(f"input datatype must be {datatype}, got {printable(str(tensor.get('datatype')))}")
    dims = tensor.get("shape")
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise ProtocolError("input shape must be a list of integers")
    if len(dims) != 4 or tuple(dims[1:]) != shape or not 1 <= dims[0] <= max_batch:
        raise ProtocolError(
            f"input shape must be [B, {', '.join(map(str, shape))}] with 1 <= B <= {max_batch}, got {dims}"
        )
    count = math.prod(dims)
    dtype = DATATYPES[datatype]
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("input parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if size != count * dtype.itemsize or len(binary) != size:
            raise ProtocolError(
                f"binary input of {len(binary)} bytes (binary_data_size {printable(str(size))}); "
                f"shape {dims} in {datatype} is {count * dtype.itemsize} bytes"
            )
        array = np.frombuffer(binary, dtype=dtype).reshape(dims)
    else:
        if binary:
            raise ProtocolError("binary data after the header, but the input has no binary_data_size")
        array = _from_json(tensor.get("data"), dims, count, dtype)
    outputs = _requested_outputs(request, output_name)
    request_id = request.get("id")
    return InferRequest(None if request_id is None else str(request_id)[:256], input_name, array, outputs)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {printable(header_length)[:32]} does not fit a body of {len(body)} bytes"
        )
    return body[:length], body[length:]


def _from_json(data: Any, dims: list[int], count: int, dtype: np.dtype) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError("input data must be a list of numbers (flat, or nested as the shape)")
    flat = data
    while flat and isinstance(flat[0], list):  # nested as the shape: flatten level by level, sizes checked below
        flat = [value for row in flat if isinstance(row, list) for value in row]
        if len(flat) > count:
            break
    if len(flat) != count:
        raise ProtocolError(f"input data has {len(flat)} values; shape {dims} needs {count}")
    try:
        array = np.asarray(flat, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProtocolError("input data must hold numbers only") from None
    if not np.isfinite(array).all():
        raise ProtocolError("input data holds NaN or infinite values")
    if dtype == np.uint8 and ((array < 0) | (array > 255) | (array != np.round(array))).any():
        raise ProtocolError("UINT8 input data must be integers in [0, 255]")
    return array.astype(dtype).reshape(dims)


def _requested_outputs(request: dict[str, Any], output_name: str) -> tuple[RequestedOutput, ...]:
    parameters = request.get("parameters") or {}
    binary_default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    outputs = request.get("outputs")
    if outputs is None:
        return (RequestedOutput(output_name, binary=binary_default),)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError("outputs must be a list of objects")
    found = []
    for output in outputs:
        if output.get("name") != output_name:
            raise ProtocolError(
                f"unknown output {printable(str(output.get('name')))!r}; the model's output is {output_name!r}"
            )
        params = output.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError("output parameters must be an object")
        k = params.get("classification", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ProtocolError(f"classification must be an integer >= 0, got {printable(str(k))}")
        found.append(RequestedOutput(output_name, k, bool(params.get("binary_data", binary_default))))
    return tuple(found)


def encode_response(
    request: InferRequest,
    model_name: str,
    logits: np.ndarray,
    classifications: dict[int, list[list[str]]],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header and binary tensors when
    an output asks for them. ``classifications`` holds each asked ``K``'s strings per image."""
    outputs, chunks = [], []
    for output in request.outputs:
        if output.classification:
            rows = classifications[output.classification]
            entry: dict[str, Any] = {"name": output.name, "datatype": "BYTES", "shape": [len(rows), len(rows[0])]}
            if output.binary:
                chunk = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for row in rows for s in row)
            else:
                entry["data"] = [s for row in rows for s in row]
        else:
            entry = {"name": output.name, "datatype": "FP32", "shape": list(logits.shape)}
            if output.binary:
                chunk = np.ascontiguousarray(logits, dtype="<f4").tobytes()
            else:
                entry["data"] = logits.astype(np.float32).ravel().tolist()
        if output.binary:
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
