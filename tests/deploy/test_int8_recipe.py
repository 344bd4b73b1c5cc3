"""The int8 recipe every int8 format shares (``deploy/int8.py``): the layers of a checkpoint
that still hold the weights of Google's quantized file keep Google's grids in ``onnx-int8``,
``tflite-int8`` and ``executorch-int8`` alike; the others are calibrated."""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch

from mobilenet_v1.deploy.int8 import grids_used
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.fold import fuse_bn
from mobilenet_v1.weights import LoadedWeights, load_weights
from mobilenet_v1.weights.google_tflite.reader import read_tflite, read_tflite_files
from mobilenet_v1.weights.grids import GRID_TOLERANCE, Int8Grids, google_tflite, int8_grids, layers_on_grids

GOOGLE = "mobilenet_v1_0.25_128_quant"
CLASSES = ["n01440764", "n02102040", "n02979186", "n03000684"]


@pytest.fixture(scope="module")
def google(shared_data):
    """Google's 0.25/128, its ``.tflite`` file, its grids and a few photos."""
    model, info = load_weights(GOOGLE)
    images = load_batch(calibration_files(shared_data / "imagenette" / "val", 16), info.preprocessing)
    return model, info, google_tflite(info), Int8Grids.read(google_tflite(info)), images


@pytest.fixture(scope="module")
def finetuned(google):
    """What the classifier-only fine-tune of small data gives: Google's backbone untouched,
    a new 4-class classifier, and the metadata a run folder's weights carry."""
    model, info, *_ = google
    tuned = copy.deepcopy(model)
    torch.manual_seed(0)
    tuned.reset_classifier(len(CLASSES))
    loaded = LoadedWeights(CLASSES, info.preprocessing, metadata={"trained_from": GOOGLE})
    return tuned, loaded


def _google_convs(files):
    return [op for op in read_tflite_files(files) if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]


def test_layers_on_grids_are_the_layers_still_on_googles_grids(google, finetuned):
    model, _, files, grids, _ = google
    assert layers_on_grids(fuse_bn(model), grids) == [True] * 28  # 27 convolutions and the classifier
    tuned, _ = finetuned
    assert layers_on_grids(fuse_bn(tuned), grids) == [True] * 27 + [False]  # a new classifier is calibrated
    step = float(_google_convs(files)[10].inputs[1].scale[0])
    for nudge, kept in ((0.2 * GRID_TOLERANCE, True), (5 * GRID_TOLERANCE, False)):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            moved.features[5].pw.conv.weight[0, 0] += nudge * step  # the 11th convolution
        keep = layers_on_grids(fuse_bn(moved), grids)
        assert keep[10] is kept and sum(keep) == 27 + kept
    assert grids_used([True] * 27 + [False]) == "tflite 27/28+calibrated"


def test_int8_grids_follow_the_checkpoint_a_fine_tune_started_from(google, finetuned):
    *_, grids, _ = google
    _, loaded = finetuned
    assert int8_grids(loaded) == grids and int8_grids(loaded, "tflite") == grids
    assert int8_grids(loaded, "calibrated") is None
    scratch = LoadedWeights(CLASSES, loaded.preprocessing, metadata={"trained_from": "scratch"})
    assert int8_grids(scratch) is None
    with pytest.raises(ValueError, match="quantization='tflite' needs Google's quantized"):
        int8_grids(scratch, "tflite")


def test_onnx_int8_keeps_googles_grids_for_the_backbone(google, finetuned, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from mobilenet_v1.deploy.quantize import export_int8

    _, _, files, grids, images = google
    tuned, loaded = finetuned
    report = export_int8(tuned, tmp_path / "q.onnx", loaded.preprocessing, images, labels=CLASSES, grids=grids)
    assert "tflite 27/28+calibrated" in report.checked_on
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    ints = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantize = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    clips = [n for n in graph.node if n.op_type in ("Clip", "Relu")]
    convs = _google_convs(files)
    for clip, op in list(zip(clips, convs, strict=False))[2:]:  # the first two layers stay float
        _, scale, zero = quantize[clip.output[0]].input
        assert ints[scale] == np.float32(op.outputs[0].scale[0]) and ints[zero] == op.outputs[0].zero_point[0]
    logits = next(n for n in graph.node if n.op_type == "Gemm").output[0]
    _, scale, _ = quantize[logits].input
    assert ints[scale] != np.float32(convs[-1].outputs[0].scale[0])  # the new classifier: calibrated
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert props["mobilenet_v1.quantization"] == "tflite 27/28+calibrated"


def test_tflite_int8_keeps_googles_grids_for_the_backbone(google, finetuned, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from mobilenet_v1.deploy.litert import export_tflite

    _, _, files, grids, images = google
    tuned, loaded = finetuned
    path = tmp_path / "q.tflite"
    export_tflite(tuned, path, loaded.preprocessing, labels=CLASSES, int8=True, calibration=images, grids=grids)
    ours = [op for op in read_tflite(path) if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    for mine, op in zip(ours[:-1], _google_convs(files)[:-1], strict=True):
        for a, b in ((mine.outputs[0], op.outputs[0]), (mine.inputs[1], op.inputs[1])):
            assert (float(a.scale[0]), int(a.zero_point[0])) == pytest.approx((float(b.scale[0]), int(b.zero_point[0])))
        np.testing.assert_array_equal(mine.inputs[1].data, op.inputs[1].data)  # Google's uint8 weights, unchanged
    assert ours[-1].inputs[1].shape[0] == len(CLASSES)


def test_executorch_int8_keeps_googles_grids(google):
    pytest.importorskip("executorch")
    from mobilenet_v1.deploy.executorch import _Lowerable, _quantize

    model, _, files, grids, images = google
    folded = fuse_bn(model)
    quantized = _quantize(_Lowerable(folded).eval(), images, grids, layers_on_grids(folded, grids))
    relu6 = [n for n in quantized.graph.nodes if n.target == torch.ops.aten.hardtanh_.default]
    convs = _google_convs(files)
    assert len(relu6) == 27
    for node, op in zip(relu6, convs, strict=False):
        (quantize,) = node.users
        scale, zero_point = quantize.args[1:3]
        assert scale == pytest.approx(float(op.outputs[0].scale[0]), rel=1e-6)
        assert zero_point == int(op.outputs[0].zero_point[0]) - 128  # uint8 (s, z) is int8 (s, z - 128)


def test_grids_travel_as_json_and_hostile_json_is_one_line(google):
    *_, grids, _ = google
    again = Int8Grids.from_json(grids.to_json(), "weights")
    assert (again.input, again.weights, again.outputs) == (grids.input, grids.weights, grids.outputs)
    for text, needle in (
        ('{"input": [0.1, 300], "weights": [[0.1, 0]], "outputs": [[0.1, 0]]}', "not [scale, zero point] pairs"),
        ('{"input": [0.1, 0], "weights": [[0.1, 0]], "outputs": []}', "1 weights, 0 outputs"),
        ('{"input": [NaN, 0], "weights": [], "outputs": []}', "not [scale, zero point] pairs"),
        ("[" * 200, "int8 grids"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            Int8Grids.from_json(text, "weights")


def test_bias_correction_removes_the_mean_shift_of_rounded_weights():
    """Nagel et al.'s empirical bias correction: after it, a layer computed with its rounded
    weights has the float layer's mean output per channel on the calibration images."""
    from mobilenet_v1 import mobilenet_v1
    from mobilenet_v1.deploy.int8 import per_tensor_uint8
    from mobilenet_v1.weights.grids import correct_biases

    torch.manual_seed(0)
    model = fuse_bn(mobilenet_v1(alpha=0.25, num_classes=5).eval())
    with torch.no_grad():  # channel ranges that differ widely, as in trained depthwise layers
        model.features[1].dw.conv.weight.mul_(torch.logspace(-2, 1, 8).view(8, 1, 1, 1))
    images = torch.randn(8, 3, 64, 64)
    layers = [False] * 28
    layers[1] = True  # the first depthwise layer
    corrected = correct_biases(model, images, per_tensor_uint8, layers)
    with torch.no_grad():
        x = model.features[0](images)
        dw, fixed = model.features[1].dw.conv, corrected.features[1].dw.conv
        exact = dw(x).mean((0, 2, 3))
        rounded = torch.nn.functional.conv2d(x, per_tensor_uint8(dw.weight), fixed.bias, 1, 1, 1, dw.groups)
        before = torch.nn.functional.conv2d(x, per_tensor_uint8(dw.weight), dw.bias, 1, 1, 1, dw.groups)
    assert (rounded.mean((0, 2, 3)) - exact).abs().max() < 1e-5
    assert (before.mean((0, 2, 3)) - exact).abs().max() > 1e-3  # there was a shift to remove
    changed = [
        name for name, p in corrected.named_parameters() if not torch.equal(p, dict(model.named_parameters())[name])
    ]
    assert changed == ["features.1.dw.conv.bias"]  # nothing else moves


def test_per_channel_weight_grids_travel_as_json_and_are_checked(google):
    """A QAT run's convolutions carry one symmetric int8 step per output channel: they
    round-trip through the weights' metadata, every scale is checked, and a layer whose
    channel count differs from the model's is a one-line error."""
    from mobilenet_v1.weights.grids import ChannelGrid

    model, _, _, grids, _ = google
    channels = ChannelGrid(tuple(np.linspace(1e-3, 2e-2, 8).tolist()))
    mixed = Int8Grids(grids.input, (channels, *grids.weights[1:]), grids.outputs)
    again = Int8Grids.from_json(mixed.to_json(), "weights")
    assert again.weights == mixed.weights and again.per_channel and not grids.per_channel
    assert again.qat_run
    pair = "[0.1, 128]"
    for first, last, needle in (
        ('{"scales": [0.1, 1e-20]}', pair, "not [scale, zero point] pairs"),
        ('{"scales": []}', pair, "not [scale, zero point] pairs"),
        ('{"scales": [0.1], "zero": 3}', pair, "not [scale, zero point] pairs"),
        ('{"scales": "0.1"}', pair, "not [scale, zero point] pairs"),
        (pair, '{"scales": [0.1, 0.2]}', "the classifier per-channel weights"),
    ):
        text = f'{{"input": [0.1, 0], "weights": [{first}, {last}], "outputs": [[0.1, 0], [0.1, 0]]}}'
        with pytest.raises(ValueError, match=re.escape(needle)):
            Int8Grids.from_json(text, "weights")
    wrong = Int8Grids(grids.input, (ChannelGrid((0.01,) * 7), *grids.weights[1:]), grids.outputs, "weights")
    with pytest.raises(ValueError, match="layer 0 has 7 channel scales for 8 channels"):
        layers_on_grids(fuse_bn(model), wrong)


@pytest.fixture(scope="module")
def per_channel(google):
    """Google's 0.25/128 moved off its grids and through a QAT forward pass: per-channel
    grids for every convolution, the model on them (what a ``--qat-epochs`` run saves)."""
    from mobilenet_v1.train import qat

    model, info, _, _, images = google
    tuned = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * 0.05)
    qat.instrument(tuned, info.preprocessing, None, None, images)
    with torch.no_grad():
        tuned.train()(images)
    return qat.finalize(tuned, info.preprocessing)


def test_per_channel_grids_give_an_int8_litert_file_that_runs_exactly(google, per_channel, tmp_path):
    """TFLite's int8 scheme for a QAT run's per-channel grids: uint8 pixels in and uint8
    probabilities out, int8 inside with one weight step per output channel; LiteRT's
    default (XNNPACK, checked by the export), reference and optimized kernels all equal the
    int8-exact emulation byte for byte."""
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mobilenet_v1.deploy.litert import export_tflite
    from mobilenet_v1.weights.google_tflite.int8 import Int8MobileNetV1

    _, info, *_ = google
    model, grids = per_channel
    assert grids.per_channel and layers_on_grids(model, grids) == [True] * 28
    path = tmp_path / "m.tflite"
    report = export_tflite(model, path, info.preprocessing, labels=info.classes, int8=True, grids=grids)
    assert "bytes equal to the int8-exact emulation on 100.00%" in report.checked_on
    ops = read_tflite(path)
    assert [op.name for op in ops[:2]] == ["QUANTIZE", "CONV_2D"] and [op.name for op in ops[-2:]] == [
        "QUANTIZE",
        "SOFTMAX",
    ]
    assert (ops[0].inputs[0].dtype, ops[0].outputs[0].dtype, ops[-1].outputs[0].dtype) == ("uint8", "int8", "uint8")
    depthwise = ops[2].inputs[1]
    assert depthwise.dtype == "int8" and depthwise.scale.size == 8 and depthwise.quantized_dimension == 3
    np.testing.assert_allclose(depthwise.scale, grids.weights[1].scales, rtol=1e-7)
    pixels = torch.randint(0, 256, (3, 128, 128, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for kernels, resolver in (
        ("reference", OpResolverType.BUILTIN_REF),
        ("optimized", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
    ):
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        outs = []
        for image in pixels:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None].numpy())
            interpreter.invoke()
            outs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
        emulated = Int8MobileNetV1(ops, kernels=kernels)(pixels)
        assert torch.equal(torch.from_numpy(np.stack(outs)), emulated), kernels
    # a file whose per-channel scales do not match its channels is a one-line error
    short = dataclasses.replace(depthwise, scale=depthwise.scale[:5], zero_point=depthwise.zero_point[:5])
    broken = dataclasses.replace(ops[2], inputs=(ops[2].inputs[0], short, ops[2].inputs[2]))
    with pytest.raises(ValueError, match="expected 8 per-channel scales with zero points 0, got 5"):
        Int8MobileNetV1([*ops[:2], broken, *ops[3:]])
