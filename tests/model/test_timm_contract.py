"""timm's model contract, checked with timm's own feature wrappers (Section 4.6: the network
as a feature extractor for detection and segmentation)."""

import pytest
import torch
from timm.models._features import FeatureGetterNet, FeatureHookNet, FeatureListNet
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.model import MobileNetV1Features

X = torch.randn(2, 3, 97, 113, generator=torch.Generator().manual_seed(0))


def _model(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return mobilenet_v1(alpha=0.25, num_classes=7, **kwargs).eval()


def _reference_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each feature_info level's output, computed block by block."""
    taps = {info["index"] for info in model.feature_info}
    maps = []
    for i, layer in enumerate(model.features):
        x = layer(x)
        if i in taps:
            maps.append(x)
    return maps


@torch.no_grad()
def test_forward_intermediates_follows_timm_semantics() -> None:
    model = _model()
    maps = _reference_maps(model, X)
    assert [m.shape[1] for m in maps] == [info["num_chs"] for info in model.feature_info]
    final, inter = model.forward_intermediates(X)
    torch.testing.assert_close(final, model.forward_features(X), rtol=0, atol=0)
    assert len(inter) == 5 and all(torch.equal(a, b) for a, b in zip(inter, maps, strict=True))
    last_two = model.forward_intermediates(X, indices=2, intermediates_only=True)
    assert [t.shape for t in last_two] == [maps[3].shape, maps[4].shape]
    picked = model.forward_intermediates(X, indices=[0, -1], intermediates_only=True)
    assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[4])
    early, inter = model.forward_intermediates(X, indices=[1], stop_early=True)
    assert torch.equal(early, maps[1]) and len(inter) == 1
    nhwc = model.forward_intermediates(X, indices=[2], output_fmt="NHWC", intermediates_only=True)[0]
    assert torch.equal(nhwc, maps[2].permute(0, 2, 3, 1))
    assert model.forward_intermediates(X, norm=True)[0].shape == final.shape  # no final norm layer
    for bad in ({"indices": 6}, {"indices": [5]}, {"output_fmt": "NCWH"}):
        with pytest.raises(ValueError):
            model.forward_intermediates(X, **bad)


def test_classifier_contract() -> None:
    model = _model()
    assert model.num_classes == 7 and model.num_features == model.head_hidden_size == 256
    assert model.get_classifier() is model.classifier and model.classifier.out_features == 7
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(X), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
        torch.testing.assert_close(model(X), pooled)  # timm: 0 classes -> pooled features
        model.reset_classifier(0, global_pool="")
        assert model(X).shape == (2, 256, 4, 4)  # no pooling either
        with pytest.raises(ValueError, match="pooled"):
            model.reset_classifier(3)
        model.reset_classifier(3, global_pool="avg")
        assert model(X).shape == (2, 3) and model.config.num_classes == model.pretrained_cfg["num_classes"] == 3
    assert mobilenet_v1(alpha=0.25, num_classes=0)(X).shape == (2, 256)


def test_pretrained_cfg_describes_the_input() -> None:
    cfg = _model().pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["first_conv"] == "features.0.conv" and cfg["classifier"] == "classifier" and cfg["num_classes"] == 7
    model = _model()
    assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)


def test_pretrained_cfg_of_google_weights(shared_data) -> None:
    if not (shared_data / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite").is_file():
        pytest.skip("Google's 0.25/128 model is not in the shared data")
    cfg = mobilenet_v1(weights="mobilenet_v1_0.25_128_quant").pretrained_cfg
    assert cfg["input_size"] == (3, 128, 128) and cfg["pool_size"] == (4, 4) and cfg["num_classes"] == 1001
    assert cfg["tag"] == "mobilenet_v1_0.25_128_quant" and cfg["url"].startswith("https://")


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for enable in (False, True):
        model = _model(dropout=0.0).train()
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        model(X).logsumexp(1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@torch.no_grad()
def test_prune_intermediate_layers() -> None:
    model = _model()
    maps = _reference_maps(model, X)
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    assert len(model.features) == model.feature_info[2]["index"] + 1 and len(model.feature_info) == 3
    assert isinstance(model.classifier, nn.Identity)
    out = model.forward_intermediates(X, indices=[1, 2], intermediates_only=True)
    assert torch.equal(out[0], maps[1]) and torch.equal(out[1], maps[2])


@torch.no_grad()
@pytest.mark.parametrize("variant", ["standard", "shallow", "full-conv"])
def test_timm_feature_wrappers(variant: str) -> None:
    maps = _reference_maps(_model(variant=variant), X)
    out_indices = (1, 2, 4)
    expected = [maps[i] for i in out_indices]
    wrappers = {
        "list": FeatureListNet(_model(variant=variant), out_indices=out_indices, flatten_sequential=True),
        "getter": FeatureGetterNet(_model(variant=variant), out_indices=out_indices),
        "hook": FeatureHookNet(_model(variant=variant), out_indices=out_indices),
    }
    for name, wrapper in wrappers.items():
        feats = wrapper.eval()(X)
        assert len(feats) == 3, name
        for got, want in zip(feats, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        assert wrapper.feature_info.reduction() == [4, 8, 32], name
        assert wrapper.feature_info.channels() == [m.shape[1] for m in expected], name


@torch.no_grad()
def test_features_only_builder() -> None:
    maps = _reference_maps(_model(), X)
    torch.manual_seed(0)
    features = mobilenet_v1(alpha=0.25, num_classes=7, features_only=True, out_indices=(2, 3, 4)).eval()
    assert isinstance(features, MobileNetV1Features)
    assert [info["reduction"] for info in features.feature_info] == [8, 16, 32]
    out = features(X)
    assert all(torch.equal(a, b) for a, b in zip(out, maps[2:], strict=True))
    assert not any(isinstance(m, nn.Linear) for m in features.modules())
    scripted = torch.jit.script(features)
    assert all(torch.equal(a, b) for a, b in zip(scripted(X), out, strict=True))
    with pytest.raises(ValueError):
        mobilenet_v1(alpha=0.25, features_only=True, out_indices=(5,))
