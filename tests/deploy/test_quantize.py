"""The int8 ONNX file takes ORT's fast kernels without changing Google's arithmetic:
the classifier's weights per tensor (one requantization scale for ``QGemm``), exactly
on Google's grid, and its logits as TFLite's fully-connected arithmetic computes them."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from mobilenet_v1.deploy.quantize import calibration_files, export_int8, load_batch
from mobilenet_v1.weights import load_weights
from mobilenet_v1.weights.google_tflite.reader import read_tflite_files
from mobilenet_v1.weights.grids import google_tflite, int8_grids

GOOGLE = "mobilenet_v1_0.25_128_quant"


@pytest.fixture(scope="module")
def google_int8(shared_data, tmp_path_factory):
    """Google's 0.25/128 exported to int8 with Google's grids, its images and float model."""
    model, info = load_weights(GOOGLE)
    folder = tmp_path_factory.mktemp("int8")
    images = load_batch(calibration_files(shared_data / "imagenette" / "val", 8), info.preprocessing)
    report = export_int8(model, folder / "q.onnx", info.preprocessing, images, grids=int8_grids(info))
    return folder, images, google_tflite(info), report, model


def _classifier(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    ints = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {n.output[0]: n for n in graph.node}
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    return graph, ints, producer, gemm


def test_classifier_weights_are_googles_grid_per_tensor(google_int8):
    folder, _, grids, report, model = google_int8
    _, ints, producer, gemm = _classifier(folder / "q.onnx")
    q, scale, zero = (ints[name] for name in producer[gemm.input[1]].input)
    google = [op for op in read_tflite_files(grids) if op.name == "CONV_2D"][-1].inputs[1]
    assert q.dtype == np.int8 and scale.shape == () and zero.shape == ()
    assert zero == int(google.zero_point[0]) - 128 and scale == np.float32(google.scale[0])
    expected = model.classifier.weight.detach().numpy()  # Google's s * (q - z), imported
    np.testing.assert_array_equal((q.astype(np.float32) - zero) * scale, expected)
    assert report.top1_agreement >= 0.75  # int8 against float on the 8 images: nothing broke


def test_ort_runs_one_per_tensor_qgemm(google_int8, tmp_path):
    """ORT fuses the classifier into one QGemm whose weight scale is a scalar, and every
    quantized convolution into a QLinearConv (nothing left in float by the change)."""
    import onnx
    import onnxruntime as ort

    folder = google_int8[0]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(folder / "q.onnx"), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "opt.onnx")).graph
    sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    gemms = [n for n in graph.node if n.op_type == "QGemm"]
    assert len(gemms) == 1 and "Gemm" not in ops and ops.count("QLinearConv") == 25
    assert sizes[gemms[0].input[4]] == 1  # b_scale: one scale for all 1001 outputs


def test_logits_are_tflites_fully_connected_arithmetic(google_int8):
    """The uint8 logits ORT computes from the uint8 pooled features are TFLite's
    ``round(s_x s_w / s_y * sum((x - z_x)(w - z_w)) + b) + z_y``, to one step (ORT
    requantizes in float, TFLite in fixed point) and exactly for almost every output."""
    import onnxruntime as ort
    from onnx.utils import extract_model

    folder, images, grids, *_ = google_int8
    graph, _, producer, gemm = _classifier(folder / "q.onnx")
    pooled = producer[gemm.input[0]].input[0]  # the uint8 features the classifier reads
    extract_model(str(folder / "q.onnx"), str(folder / "pooled.onnx"), [graph.input[0].name], [pooled])
    x = images.numpy()
    feats, logits = (
        ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for name in ("pooled.onnx", "q.onnx")
    )
    conv = [op for op in read_tflite_files(grids) if op.name == "CONV_2D"][-1]
    inp, weight, bias, out = conv.inputs[0], conv.inputs[1], conv.inputs[2], conv.outputs[0]
    w = np.asarray(weight.data, np.int64).reshape(len(bias.data), -1) - int(weight.zero_point[0])
    acc = (feats.reshape(len(x), -1).astype(np.int64) - int(inp.zero_point[0])) @ w.T + np.asarray(bias.data)
    multiplier = float(inp.scale[0]) * float(weight.scale[0]) / float(out.scale[0])
    expected = np.clip(np.rint(acc * multiplier) + int(out.zero_point[0]), 0, 255)
    ours = np.rint(logits / np.float32(out.scale[0]) + int(out.zero_point[0]))
    assert np.abs(ours - expected).max() <= 1
    assert (ours == expected).mean() > 0.99
