"""int8-exact level: TFLite's integer arithmetic, checked against LiteRT.

The fixed-point primitives are checked against a literal scalar transcription of
gemmlowp's C++; the models against Google's interpreter on a fixed small subset (the
shared photos and a few Imagenette val images per model). The full val set is in
``benchmarks/weights/int8_fidelity.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mobilenet_v1.weights.google_tflite.fixed_point import (
    exp_on_negative_values,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    softmax_uint8,
)
from mobilenet_v1.weights.google_tflite.int8 import Int8MobileNetV1, compare_outputs

INT32 = st.integers(-(2**31), 2**31 - 1)
MODELS = {  # name: (files, resolution)
    "0.25_128": (["mobilenet_v1_0.25_128_quant.tflite"], 128),
    "0.5_160": (["mobilenet_v1_0.5_160_quant.tflite"], 160),
    "0.75_192": (["mobilenet_v1_0.75_192_quant.tflite"], 192),
    "1.0_224": (
        ["mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v1_1.0_224_quant_head_layers.tflite"],
        224,
    ),
}


# --- gemmlowp / TFLite C++, transcribed literally (scalar Python ints) ---------------------
def _srdhm(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) // (1 << 31)  # C++ integer division truncates towards zero
    return q if ab + nudge >= 0 else -q


def _rdbp(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


@given(st.lists(INT32, min_size=1, max_size=50), INT32)
def test_saturating_rounding_doubling_high_mul_matches_gemmlowp(xs: list[int], b: int) -> None:
    out = saturating_rounding_doubling_high_mul(torch.tensor(xs), b)
    assert out.tolist() == [_srdhm(a, b) for a in xs]


def test_saturating_rounding_doubling_high_mul_saturates() -> None:
    out = saturating_rounding_doubling_high_mul(torch.tensor([-(2**31), 5]), -(2**31))
    assert out.tolist() == [2**31 - 1, _srdhm(5, -(2**31))]


@given(st.lists(INT32, min_size=1, max_size=50), st.integers(0, 31))
def test_rounding_divide_by_pot_matches_gemmlowp(xs: list[int], exponent: int) -> None:
    assert rounding_divide_by_pot(torch.tensor(xs), exponent).tolist() == [_rdbp(x, exponent) for x in xs]


def test_rounding_divide_by_pot_ties() -> None:
    x = torch.tensor([-6, -5, -2, 2, 5, 6])
    assert rounding_divide_by_pot(x, 2).tolist() == [-2, -1, -1, 1, 1, 2]  # halves away from zero
    assert rounding_divide_by_pot(x, 2, ties_up=True).tolist() == [-1, -1, 0, 1, 1, 2]  # halves up


@given(st.floats(1e-9, 0.999999, allow_nan=False))
def test_quantize_multiplier_represents_the_real_multiplier(real: float) -> None:
    multiplier, shift = quantize_multiplier(real)
    assert 2**30 <= multiplier < 2**31
    assert abs(multiplier * 2.0 ** (shift - 31) - real) <= 2.0 ** (shift - 32)


def test_quantize_multiplier_known_values() -> None:
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.25 * (1 - 2**-40)) == (2**30, -1)  # rounds up to 2**31: renormalised


@given(st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=20), st.floats(1e-6, 0.99))
def test_multiply_by_quantized_multiplier_is_close_to_real_product(xs: list[int], real: float) -> None:
    multiplier, shift = quantize_multiplier(real)
    out = multiply_by_quantized_multiplier(torch.tensor(xs), multiplier, shift)
    expected = torch.tensor(xs, dtype=torch.float64) * real
    assert (out - expected).abs().max().item() <= 1.0


@given(st.lists(st.floats(-31.9, 0.0), min_size=1, max_size=20))
def test_fixed_point_exp_is_accurate(values: list[float]) -> None:
    raw = torch.tensor([round(v * 2**26) for v in values])  # Q5.26
    out = exp_on_negative_values(raw).double() / 2**31  # Q0.31
    assert (out - torch.exp(raw.double() / 2**26)).abs().max().item() < 1e-6


def test_fixed_point_softmax_bytes() -> None:
    """Ties give equal bytes, a dominant logit saturates at 255, the rest round to 0."""
    flat = softmax_uint8(torch.full((1, 4), 77, dtype=torch.uint8), input_scale=0.1)
    assert flat.tolist() == [[64, 64, 64, 64]]
    peaked = softmax_uint8(torch.tensor([[0, 255, 0, 10]], dtype=torch.uint8), input_scale=0.2)
    assert peaked.tolist() == [[0, 255, 0, 0]]
    x = torch.randint(0, 256, (8, 1001), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = softmax_uint8(x, input_scale=0.13)
    assert torch.equal(out.argmax(1), x.argmax(1)) and (out.int().sum(1) - 256).abs().max() <= 1001 // 2


# --- models against LiteRT --------------------------------------------------------------------
@pytest.fixture(scope="module")
def litert() -> object:
    return pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")


def _images(shared: Path, resolution: int, val_every: int = 200) -> torch.Tensor:
    from mobilenet_v1.data.images import load_image
    from mobilenet_v1.data.transforms import Preprocessing, eval_transform

    photos = sorted((shared / "images").iterdir())
    val = sorted((shared / "imagenette" / "val").glob("*/*.JPEG"))[::val_every]
    transform = eval_transform(Preprocessing(resolution), to_float=False)
    return torch.stack([transform(load_image(p)) for p in [*photos, *val]])


def _litert_bytes(litert: object, paths: list[Path], batch: torch.Tensor, resolver: str) -> torch.Tensor:
    from mobilenet_v1.deploy.litert import LiteRTModel

    model = LiteRTModel(paths, kernels=resolver)
    nhwc = batch.permute(0, 2, 3, 1).contiguous().numpy()
    return torch.from_numpy(model.run(nhwc))


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_matches_litert_default_kernels(shared_data: Path, litert: object, model: str) -> None:
    """LiteRT's default CPU path (XNNPACK): every output byte, on ~29 images per model."""
    files, resolution = MODELS[model]
    paths = [shared_data / "pretrained" / f for f in files]
    batch = _images(shared_data, resolution)
    ours = Int8MobileNetV1.from_tflite(paths, kernels="xnnpack")(batch)
    stats = compare_outputs(ours, _litert_bytes(litert, paths, batch, "default"))
    assert stats["top1_agreement"] == 100.0, stats
    assert stats["bytes_within_1"] >= 99.9 and stats["bytes_exact"] >= 99.0, stats


@pytest.mark.slow
@pytest.mark.parametrize("model", ["0.25_128", "1.0_224"])
def test_matches_litert_reference_kernels(shared_data: Path, litert: object, model: str) -> None:
    """LiteRT's reference kernels (BUILTIN_REF: gemmlowp rounding), a few images."""
    files, resolution = MODELS[model]
    paths = [shared_data / "pretrained" / f for f in files]
    batch = _images(shared_data, resolution, val_every=800)
    ours = Int8MobileNetV1.from_tflite(paths, kernels="reference")(batch)
    stats = compare_outputs(ours, _litert_bytes(litert, paths, batch, "reference"))
    assert stats["top1_agreement"] == 100.0, stats
    assert stats["bytes_within_1"] >= 99.9 and stats["bytes_exact"] >= 99.0, stats


@pytest.mark.parametrize(
    ("kernels", "resolver"), [("reference", "BUILTIN_REF"), ("optimized", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")]
)
def test_every_intermediate_tensor_matches_litert(
    shared_data: Path, litert: object, kernels: str, resolver: str
) -> None:
    """Layer by layer: each operator's uint8 output equals LiteRT's (0.25/128, two photos)."""
    path = shared_data / "pretrained" / MODELS["0.25_128"][0][0]
    batch = _images(shared_data, 128, val_every=10**9)[:2]
    interpreter = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=getattr(litert.OpResolverType, resolver),
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    index = {t["name"]: t["index"] for t in interpreter.get_tensor_details()}
    ours = Int8MobileNetV1.from_tflite(path, kernels=kernels).forward_intermediates(batch)
    assert len(ours) == 31
    for i in range(len(batch)):
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], batch[i : i + 1].permute(0, 2, 3, 1).numpy()
        )
        interpreter.invoke()
        for name, tensor in ours:
            theirs = interpreter.get_tensor(index[name])[0]
            assert np.array_equal(tensor[i].numpy(), theirs), f"{name} differs on image {i}"


# --- API and bad input ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(shared_data: Path) -> Int8MobileNetV1:
    return Int8MobileNetV1.from_tflite(shared_data / "pretrained" / MODELS["0.25_128"][0][0])


def test_nhwc_and_nchw_give_the_same_output(small: Int8MobileNetV1) -> None:
    x = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8)
    out = small(x)
    assert out.shape == (2, 1001) and out.dtype == torch.uint8
    assert torch.equal(out, small(x.permute(0, 2, 3, 1)))
    assert abs(out.double().sum(1) - 256).max() <= 1001 / 2  # softmax bytes: probabilities * 256


def test_bad_input_is_a_one_line_error(small: Int8MobileNetV1) -> None:
    with pytest.raises(ValueError, match="uint8"):
        small(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\(1, 3, 64, 64\)"):
        small(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown kernels"):
        Int8MobileNetV1([], kernels="fast")


def test_unsupported_graphs_are_rejected(shared_data: Path) -> None:
    from mobilenet_v1.weights.google_tflite.reader import read_tflite

    ops = read_tflite(shared_data / "pretrained" / MODELS["0.25_128"][0][0])
    with pytest.raises(ValueError, match="unsupported operator ADD"):
        Int8MobileNetV1([*ops[:3], replace(ops[3], name="ADD"), *ops[4:]])
    with pytest.raises(ValueError, match="not a single chain"):
        Int8MobileNetV1([ops[0], ops[2]])
    with pytest.raises(ValueError, match="empty"):
        Int8MobileNetV1([])


def test_cli_predict_int8_exact(shared_data: Path, litert: object, capsys: pytest.CaptureFixture) -> None:
    """``--int8-exact``: LiteRT's own probabilities (byte / 256), background never listed."""
    import json

    from mobilenet_v1.cli import main

    model = shared_data / "pretrained" / MODELS["0.25_128"][0][0]
    photo = shared_data / "images" / "parrot.jpg"
    assert main(["predict", str(photo), "--weights", str(model), "--int8-exact", "--topk", "1000", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][str(photo)]
    batch = _images(shared_data, 128, val_every=10**9)[[7]]  # sorted photos: parrot.jpg is the 8th
    reference = _litert_bytes(litert, [model], batch, "default")[0]
    assert top[0]["probability"] == reference[1:].max().item() / 256
    assert "background" not in [t["label"] for t in top] and len(top) == 1000
    assert main(["predict", str(photo), "--weights", "mobilenet_v1_0.25_128", "--int8-exact"]) == 2
    assert "needs one of Google's quantized" in capsys.readouterr().err
