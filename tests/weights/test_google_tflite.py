"""TFLite reader and float import of Google's MobileNet V1 models."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tflite", reason="the 'tflite' package is not installed")

from mobilenet_v1.weights.google_tflite.convert import check_ops, import_table, load_tflite, tflite_state_dict
from mobilenet_v1.weights.google_tflite.reader import dequantize, join_ops, read_tflite

MODELS = {  # file name -> (alpha, resolution)
    "mobilenet_v1_0.25_128_quant.tflite": (0.25, 128),
    "mobilenet_v1_0.5_160_quant.tflite": (0.5, 160),
    "mobilenet_v1_0.75_192_quant.tflite": (0.75, 192),
}
EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
HEAD = "mobilenet_v1_1.0_224_quant_head_layers.tflite"
SMALL = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture(scope="module")
def pretrained(shared_data: Path) -> Path:
    return shared_data / "pretrained"


@pytest.fixture(scope="module")
def small_ops(pretrained: Path) -> list:
    return read_tflite(pretrained / SMALL)


def test_reader_ops_options_and_quantization(small_ops: list) -> None:
    names = [op.name for op in small_ops]
    assert len(names) == 31
    assert names[:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert names[-4:] == ["AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX"]
    stem = small_ops[0]
    assert stem.options["stride_h"] == stem.options["stride_w"] == 2
    assert stem.options["padding"] == "SAME" and stem.options["fused_activation"] == "RELU6"
    x, w, b = stem.inputs
    assert x.shape == (1, 128, 128, 3) and x.dtype == "uint8" and x.data is None
    assert x.scale.tolist() == [0.0078125] and x.zero_point.tolist() == [128]
    assert w.dtype == "uint8" and w.data.shape == w.shape == (8, 3, 3, 3)
    assert b.dtype == "int32" and b.data.shape == (8,)
    assert small_ops[1].options["depth_multiplier"] == 1
    pool = small_ops[27]
    assert (pool.options["filter_h"], pool.options["filter_w"]) == (4, 4) and pool.options["padding"] == "VALID"
    # ops form one chain: each op consumes the previous op's output tensor
    assert all(a.outputs[0] is b.inputs[0] for a, b in itertools.pairwise(small_ops))


def test_dequantize_per_tensor_and_per_channel() -> None:
    q = np.array([[0, 10], [20, 30]], np.uint8)
    assert dequantize(q, np.array([0.5]), np.array([10])).tolist() == [[-5, 0], [5, 10]]
    per_row = dequantize(q, np.array([1.0, 2.0]), np.array([0, 20]), axis=0)
    assert per_row.tolist() == [[0, 10], [0, 20]]
    per_col = dequantize(q, np.array([1.0, 2.0]), np.array([0, 20]), axis=1)
    assert per_col.tolist() == [[0, -20], [20, 20]]


def test_import_table_shapes_follow_table1() -> None:
    table = import_table(1.0, 224)
    assert len(table) == 27 + 4
    assert table[0].weight == (32, 3, 3, 3) and table[0].output == (1, 112, 112, 32)
    assert table[1].weight == (1, 3, 3, 32) and table[1].target == "features.1.dw.conv"
    assert table[26].output == (1, 7, 7, 1024) and table[26].target == "features.13.pw.conv"
    assert table[28].weight == (1001, 1, 1, 1024) and table[28].target == "classifier"
    assert [r.output for r in import_table(0.25, 128)[25:27]] == [(1, 4, 4, 256), (1, 4, 4, 256)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_load_tflite_infers_architecture(pretrained: Path, name: str) -> None:
    model, info = load_tflite(pretrained / name)
    alpha, res = MODELS[name]
    assert (info["alpha"], info["resolution"], info["num_classes"]) == (alpha, res, 1001)
    assert model.config.alpha == alpha and model.config.activation == "relu6" and model.config.folded_bn
    assert not model.training
    with torch.no_grad():
        out = model(torch.zeros(1, 3, res, res))
    assert out.shape == (1, 1001) and torch.isfinite(out).all()


def test_joined_extractor_and_head(pretrained: Path) -> None:
    extractor, head = read_tflite(pretrained / EXTRACTOR), read_tflite(pretrained / HEAD)
    joined = join_ops(extractor, head)
    assert len(joined) == 31 and joined[28].inputs[0] is extractor[-1].outputs[0]
    model, info = load_tflite([pretrained / EXTRACTOR, pretrained / HEAD])
    assert (info["alpha"], info["resolution"]) == (1.0, 224)
    assert model.classifier.weight.shape == (1001, 1024)


def test_weights_are_dequantized_exactly(small_ops: list) -> None:
    state, config = tflite_state_dict(small_ops)
    assert config.alpha == 0.25 and len(state) == 2 * 28
    x, w, b = small_ops[1].inputs  # first depthwise conv: 1HWC -> C1HW
    expected = (w.data.astype(np.float64) - w.zero_point) * w.scale
    torch.testing.assert_close(
        state["features.1.dw.conv.weight"][:, 0], torch.from_numpy(expected).float()[0].permute(2, 0, 1)
    )
    bias = b.data * x.scale[0] * w.scale[0]
    torch.testing.assert_close(state["features.1.dw.conv.bias"], torch.from_numpy(bias).float())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.tflite"):
        read_tflite(tmp_path / "nope.tflite")


def test_not_a_flatbuffer(tmp_path: Path) -> None:
    bad = tmp_path / "notes.tflite"
    bad.write_text("hello, this is not a model\n")
    with pytest.raises(ValueError, match=r"notes\.tflite: not a TFLite flatbuffer"):
        read_tflite(bad)


@pytest.mark.parametrize("keep", [0.01, 0.5, 0.97, 0.9999])
def test_truncated_file(pretrained: Path, tmp_path: Path, keep: float) -> None:
    data = (pretrained / SMALL).read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"cut\.tflite: truncated or corrupt") as err:
        read_tflite(cut)
    assert "\n" not in str(err.value)


def test_head_layers_alone_is_rejected(pretrained: Path) -> None:
    with pytest.raises(ValueError, match=r"head_layers\.tflite: not a MobileNet V1 classifier.*head-layers"):
        load_tflite(pretrained / HEAD)


def test_extractor_alone_is_rejected(pretrained: Path) -> None:
    with pytest.raises(ValueError, match="expected the 31 ops of MobileNet V1, found 28"):
        load_tflite(pretrained / EXTRACTOR)


def test_unexpected_operator_and_shape_are_named(small_ops: list) -> None:
    table = import_table(0.25, 128)
    odd = [*small_ops[:5], replace(small_ops[5], name="ADD"), *small_ops[6:]]
    with pytest.raises(ValueError, match="unexpected operators: ADD"):
        check_ops(odd, table, "odd.tflite")
    with pytest.raises(ValueError, match=r"op 3 \(DEPTHWISE_CONV_2D -> features.2.dw.conv\): output shape"):
        check_ops(small_ops, import_table(0.25, 128)[:3] + import_table(0.5, 128)[3:], "x.tflite")


def test_join_rejects_mismatched_head(pretrained: Path, small_ops: list) -> None:
    with pytest.raises(ValueError, match="does not match the extractor output"):
        join_ops(small_ops, read_tflite(pretrained / HEAD), source="head.tflite")
