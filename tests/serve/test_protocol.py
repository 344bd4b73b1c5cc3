"""The Open Inference Protocol's requests and responses, JSON and binary."""

import json

import numpy as np
import pytest

from mobilenet_v1.serve.protocol import ProtocolError, encode_response, parse_request

SHAPE = (3, 4, 4)
KW = {"input_name": "input", "output_name": "logits", "datatype": "FP32", "shape": SHAPE, "max_batch": 4}


def _json(batch=1, data=None, **extra):
    array = np.arange(batch * 48, dtype=np.float32).reshape(batch, *SHAPE)
    tensor = {"name": "input", "shape": [batch, *SHAPE], "datatype": "FP32"}
    tensor["data"] = array.ravel().tolist() if data is None else data
    return json.dumps({"inputs": [tensor], **extra}).encode(), array


def test_json_flat_and_nested_give_the_array():
    body, array = _json(2)
    parsed = parse_request(body, None, **KW)
    assert np.array_equal(parsed.array, array) and parsed.array.dtype == np.float32
    nested, _ = _json(2, data=array.tolist())
    assert np.array_equal(parse_request(nested, None, **KW).array, array)
    assert parsed.outputs[0].name == "logits" and not parsed.outputs[0].binary


def test_binary_extension_round_trip():
    array = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    header = {
        "id": "r1",
        "inputs": [
            {
                "name": "input",
                "shape": [2, *SHAPE],
                "datatype": "FP32",
                "parameters": {"binary_data_size": array.nbytes},
            }
        ],
        "outputs": [
            {"name": "logits", "parameters": {"binary_data": True}},
            {"name": "logits", "parameters": {"classification": 2, "binary_data": True}},
        ],
    }
    raw = json.dumps(header).encode()
    parsed = parse_request(raw + array.tobytes(), str(len(raw)), **KW)
    assert np.array_equal(parsed.array, array)
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]], dtype=np.float32)
    classes = {2: [["0.9:1:b", "0.1:0:a"], ["0.5:0:a", "0.3:2:c"]]}
    body, headers = encode_response(parsed, "m", logits, classes)
    n = int(headers["inference-header-content-length"])
    response = json.loads(body[:n])
    assert response["id"] == "r1" and response["model_name"] == "m"
    first, second = response["outputs"]
    size = first["parameters"]["binary_data_size"]
    assert np.array_equal(np.frombuffer(body[n : n + size], "<f4").reshape(2, 3), logits)
    rest, strings = body[n + size :], []
    while rest:
        length = int.from_bytes(rest[:4], "little")
        strings.append(rest[4 : 4 + length].decode())
        rest = rest[4 + length :]
    assert strings == ["0.9:1:b", "0.1:0:a", "0.5:0:a", "0.3:2:c"] and second["shape"] == [2, 2]


def test_json_response_lists_logits():
    body, _ = _json(1)
    parsed = parse_request(body, None, **KW)
    out, headers = encode_response(parsed, "m", np.ones((1, 3), np.float32), {})
    assert headers["content-type"] == "application/json"
    assert json.loads(out)["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [1.0] * 3}


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "list of one tensor"),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": []}]}).encode(),
            None,
            "unknown input",
        ),
        (
            json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP16", "data": []}]}).encode(),
            None,
            "datatype must be FP32",
        ),
        (
            json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 5, 5], "datatype": "FP32", "data": []}]}).encode(),
            None,
            "shape must be",
        ),
        (
            json.dumps({"inputs": [{"name": "input", "shape": [5, 3, 4, 4], "datatype": "FP32", "data": []}]}).encode(),
            None,
            "1 <= B <= 4",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [1.0] * 47}]}
            ).encode(),
            None,
            "has 47 values",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": ["a"] * 48}]}
            ).encode(),
            None,
            "numbers only",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [1e999] * 48}]}
            ).encode(),
            None,
            "NaN or infinite",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 3, 4, 4],
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": 10},
                        }
                    ]
                }
            ).encode(),
            None,
            "binary input of 0 bytes",
        ),
        (b'{"inputs": []}', "9999", "does not fit"),
        (b'{"inputs": []}', "abc", "does not fit"),
    ],
)
def test_bad_requests_are_one_line_protocol_errors(body, header, message):
    with pytest.raises(ProtocolError, match=message) as exc:
        parse_request(body, header, **KW)
    assert "\n" not in str(exc.value)


def test_unknown_output_and_bad_classification():
    for outputs, message in (
        ([{"name": "probs"}], "unknown output"),
        ([{"name": "logits", "parameters": {"classification": -1}}], "classification must be"),
    ):
        body, _ = _json(1, outputs=outputs)
        with pytest.raises(ProtocolError, match=message):
            parse_request(body, None, **KW)


def test_uint8_input_must_be_bytes():
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, *SHAPE], "datatype": "UINT8", "data": [256] * 48}]})
    with pytest.raises(ProtocolError, match=r"integers in \[0, 255\]"):
        parse_request(body.encode(), None, **{**KW, "datatype": "UINT8"})
