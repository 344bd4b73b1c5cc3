"""The model in PyTorch's own tools: ``torch.jit.script``, FX tracing, FX graph-mode
quantization (``prepare_fx``) and torchvision's ``create_feature_extractor``, each computing
what the eager model computes."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import randomize_batch_norm
from torch import nn

from mobilenet_v1 import mobilenet_v1

# --------------------------------------------------------------------------------------
# Scripting, tracing, feature extraction

CONFIGS = {
    "default": {"alpha": 0.25},
    "google": {
        "alpha": 0.25,
        "num_classes": 1001,
        "activation": "relu6",
        "padding": "same",
        "bn_eps": 1e-3,
        "folded_bn": True,
    },
    "full-conv": {"alpha": 0.25, "variant": "full-conv", "num_classes": 10},
    "shallow": {"alpha": 0.5, "variant": "shallow", "num_classes": 10},
}


def _randomized(kwargs: dict) -> nn.Module:
    """An eval-mode model whose BN statistics and biases are not the identity/zero."""
    torch.manual_seed(0)
    model = randomize_batch_norm(mobilenet_v1(**kwargs))
    return model.eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def model_and_input(request):
    model = _randomized(CONFIGS[request.param])
    x = torch.randn(2, 3, 97, 113, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    return request.param, model, x, expected


def test_jit_script_matches_eager(model_and_input):
    _, model, x, expected = model_and_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_fx_symbolic_trace_matches_eager(model_and_input):
    _, model, x, expected = model_and_input
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        out = traced(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # the eager input check leaves nothing in the graph: no call, no read of a parameter
    # outside the layers (a get_attr of the stem's weight broke prepare_fx's fusion)
    assert not [n for n in traced.graph.nodes if "check" in str(n.target)]
    assert not [n for n in traced.graph.nodes if n.op == "get_attr" and not n.users]
    with pytest.raises(ValueError, match="at least"):  # the model itself still checks
        model(torch.randn(1, 3, 16, 64))


def test_prepare_fx_quantizes_a_model_with_batch_norm(model_and_input):
    """PyTorch's FX graph-mode quantization fuses conv + BN + ReLU in every layer, the stem included."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    name, model, x, expected = model_and_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that the flow moves to torchao
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,))
        with torch.no_grad():
            prepared(x)  # calibrate
        quantized = convert_fx(prepared)
    with torch.no_grad():
        out = quantized(x)
    assert out.shape == expected.shape
    assert (out.argmax(1) == expected.argmax(1)).float().mean() >= 0.5, name


def test_create_feature_extractor_matches_feature_info(model_and_input):
    from torchvision.models.feature_extraction import create_feature_extractor

    name, model, x, expected = model_and_input
    info = model.feature_info
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32], name
    nodes = {i["module"]: i["module"] for i in info}
    extractor = create_feature_extractor(model, return_nodes={**nodes, "classifier": "logits"})
    with torch.no_grad():
        feats = extractor(x)
        eager = model.forward_intermediates(x, intermediates_only=True)
    torch.testing.assert_close(feats["logits"], expected, rtol=0, atol=1e-5)
    h, w = x.shape[-2:]
    for entry, tap in zip(info, eager, strict=True):
        out = feats[entry["module"]]
        r = entry["reduction"]
        assert out.shape == (x.shape[0], entry["num_chs"], -(-h // r), -(-w // r)), (name, entry)
        torch.testing.assert_close(out, tap, rtol=0, atol=1e-5)
        # the module path names a real submodule whose output this is
        assert isinstance(model.get_submodule(entry["module"]), nn.Module)
    # the last tap is the backbone's output
    torch.testing.assert_close(feats[info[-1]["module"]], model.forward_features(x), rtol=0, atol=1e-5)
