import math

import pytest
import torch
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.config import TABLE1, layer_plan, scaled_channels


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_28_layers_as_in_table1():
    model = mobilenet_v1()
    convs = _convs(model)
    assert len(convs) == 27  # 1 stem + 13 x (depthwise + pointwise)
    assert len(convs) + 1 == 28  # + the FC layer, the paper's count
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert [c.stride[0] for c in depthwise] == [s for s, _ in TABLE1[1:]]
    pointwise_out = [c.out_channels for c in convs if c.kernel_size == (1, 1)]
    assert pointwise_out == [c for _, c in TABLE1[1:]]
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 1024


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0, 1.4, 0.3])
@pytest.mark.parametrize("size", [32, 128, 160, 193, (96, 160)])
def test_output_shapes_grid(alpha, size):
    h, w = size if isinstance(size, tuple) else (size, size)
    model = mobilenet_v1(alpha=alpha, num_classes=7).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, h, w))
        feats = model.forward_features(torch.randn(1, 3, h, w))
    assert out.shape == (2, 7)
    assert feats.shape == (1, scaled_channels(1024, alpha), math.ceil(h / 32), math.ceil(w / 32))


def test_tf_slim_channel_rule():
    assert scaled_channels(32, 0.25) == 8
    assert scaled_channels(64, 0.1) == 8  # the minimum depth of 8
    assert scaled_channels(1024, 0.3) == 307  # int(), not rounding to a multiple of 8
    assert scaled_channels(1024, 0.3, rule="divisible-by-8") == 304
    model = mobilenet_v1(alpha=0.3)
    assert model.num_features == 307


@pytest.mark.parametrize("size", [224, 225, 97])
def test_feature_map_strides(size):
    model = mobilenet_v1(alpha=0.5).eval()
    with torch.inference_mode():
        feats = model.forward_intermediates(torch.randn(1, 3, size, size), intermediates_only=True)
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    for f, info in zip(feats, model.feature_info, strict=True):
        assert f.shape[1] == info["num_chs"]
        assert f.shape[-1] == math.ceil(size / info["reduction"])
    assert [i["num_chs"] for i in model.feature_info] == [32, 64, 128, 256, 512]


def test_same_padding_is_asymmetric_on_stride2():
    """TF "SAME" on an even input pads 0 before and 1 after (paper.md, Google's models)."""
    torch.manual_seed(0)
    same = mobilenet_v1(padding="same", alpha=0.25).eval()
    sym = mobilenet_v1(padding="symmetric", alpha=0.25).eval()
    sym.load_state_dict(same.state_dict())
    x = torch.randn(1, 3, 64, 64)
    stem_same, stem_sym = same.features[0].conv, sym.features[0].conv
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), stem_same.weight, stride=2)
    assert torch.allclose(stem_same(x), expected, atol=1e-6)
    assert not torch.allclose(stem_same(x), stem_sym(x), atol=1e-3)
    assert stem_same(x).shape == stem_sym(x).shape


def test_options_for_google_models():
    model = mobilenet_v1(activation="relu6", bn_eps=1e-3, num_classes=1001, folded_bn=True)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(c.bias is not None for c in _convs(model))
    bn = mobilenet_v1(bn_eps=1e-3)
    assert all(m.eps == 1e-3 for m in bn.modules() if isinstance(m, nn.BatchNorm2d))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1001)


def test_full_conv_variant_table4():
    model = mobilenet_v1(variant="full-conv")
    convs = _convs(model)
    assert len(convs) == 14 and all(c.groups == 1 and c.kernel_size == (3, 3) for c in convs)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_shallow_variant_table5():
    model = mobilenet_v1(variant="shallow")
    plan = layer_plan(model.config)
    assert len(plan) == 1 + 2 * 8
    assert sum(1 for s in plan if s.in_channels == 512 and s.kind == "pointwise" and s.out_channels == 512) == 0
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_timm_surface():
    model = mobilenet_v1(alpha=0.25, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, 256)
    assert torch.allclose(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.config.num_classes == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": "1.0"}, "alpha"),
        ({"num_classes": -1}, "num_classes"),
        ({"variant": "deep"}, "variant"),
        ({"activation": "gelu"}, "activation"),
        ({"padding": "valid"}, "padding"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mobilenet_v1(**kwargs)


def test_too_small_input():
    with pytest.raises(ValueError, match="at least 32"):
        mobilenet_v1(alpha=0.25)(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="N, 3, H, W"):
        mobilenet_v1(alpha=0.25)(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError):
        mobilenet_v1().reset_classifier(-1)
