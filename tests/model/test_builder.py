"""The one builder ``mobilenet_v1(...)``: weights and architecture arguments reconciled
(a conflict is a ``ValueError``), and the registry of Google's checkpoints written out
member by member."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.weights import MobileNetV1Weights, get_weights

# --------------------------------------------------------------------------------------
# The builder


@pytest.mark.parametrize(
    ("kwargs", "name", "given", "have"),
    [
        ({"alpha": 0.5}, "alpha", "0.5", "0.25"),
        ({"num_classes": 5}, "num_classes", "5", "3"),
        ({"padding": "same"}, "padding", "'same'", "'symmetric'"),
        ({"activation": "relu6"}, "activation", "'relu6'", "'relu'"),
        ({"folded_bn": True}, "folded_bn", "True", "False"),
    ],
)
def test_builder_rejects_conflicting_architecture(tiny, kwargs, name, given, have):
    path, _ = tiny
    with pytest.raises(ValueError) as excinfo:
        mobilenet_v1(weights=path, **kwargs)
    message = str(excinfo.value)
    assert name in message and given in message and have in message, message


def test_builder_loads_weights_with_matching_arguments(tiny):
    path, state = tiny
    for kwargs in ({}, {"alpha": 0.25}, {"alpha": 0.25, "num_classes": 3}, {"padding": "symmetric"}):
        model = mobilenet_v1(weights=path, **kwargs)
        assert model.config.alpha == 0.25 and model.config.num_classes == 3
        got = model.state_dict()
        assert got.keys() == state.keys()
        for k, v in state.items():
            assert torch.equal(got[k], v), k
    # differs from a fresh build, so the comparison above is meaningful
    fresh = mobilenet_v1(alpha=0.25, num_classes=3).state_dict()
    assert not torch.equal(fresh["classifier.weight"], state["classifier.weight"])


def test_builder_dropout_is_allowed_with_weights(tiny):
    path, state = tiny
    model = mobilenet_v1(weights=path, dropout=0.2)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2
    assert model.config.dropout == 0.2
    assert model.training  # like any freshly built model
    assert torch.equal(model.state_dict()["classifier.weight"], state["classifier.weight"])
    assert mobilenet_v1(alpha=0.25, dropout=0.3).dropout.p == 0.3


@pytest.mark.parametrize("bad", [123, 1.5, ["x"]])
def test_builder_rejects_bad_weights_spec(bad):
    with pytest.raises(ValueError):
        mobilenet_v1(weights=bad)


# --------------------------------------------------------------------------------------
# The registry

ALPHAS = {"1_0": 1.0, "0_75": 0.75, "0_5": 0.5, "0_25": 0.25}
RESOLUTIONS = (224, 192, 160, 128)
EXPECTED_MEMBERS = [f"ALPHA_{a}_{r}_{kind}" for a in ALPHAS for r in RESOLUTIONS for kind in ("FLOAT", "QUANT")]


def test_registry_is_written_out_member_by_member():
    text = (ROOT / "src" / "mobilenet_v1" / "weights" / "registry.py").read_text(encoding="utf-8")
    missing = [m for m in EXPECTED_MEMBERS if not re.search(rf"^    {m} = ", text, re.MULTILINE)]
    assert not missing, missing
    assert len(EXPECTED_MEMBERS) == 32
    assert len(MobileNetV1Weights) == 32
    assert sorted(m.name for m in MobileNetV1Weights) == sorted(EXPECTED_MEMBERS)
    assert MobileNetV1Weights.DEFAULT is MobileNetV1Weights.ALPHA_1_0_224_QUANT  # an alias, not a 33rd member


@pytest.mark.parametrize("member", list(MobileNetV1Weights), ids=lambda m: m.name)
def test_registry_member_agrees_with_its_record(member):
    match = re.fullmatch(r"ALPHA_(\d+_\d+)_(\d+)_(FLOAT|QUANT)", member.name)
    assert match, member.name
    record = member.value
    assert record.alpha == ALPHAS[match[1]]
    assert record.resolution == int(match[2])
    assert record.quantized is (match[3] == "QUANT")
    assert record.name == f"mobilenet_v1_{record.alpha}_{record.resolution}" + ("_quant" if record.quantized else "")
    assert record.config.alpha == record.alpha and record.preprocessing.resolution == record.resolution
    assert get_weights(record.name) is member
    assert get_weights(member.name) is member


def test_get_weights_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"mobilenet_v1_0\.25_128_quant"):
        get_weights("mobilenet_v1_0.25_128_qant")
