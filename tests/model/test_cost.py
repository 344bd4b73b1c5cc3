import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mobilenet_v1 import mobilenet_v1, model_cost
from mobilenet_v1.config import MobileNetV1Config
from mobilenet_v1.cost import PAPER_ROWS, conv_cost, paper_row_cost, separable_cost

# ../shared/docs/paper.md, "Exact integers" (1000 classes).
EXACT = [
    (1.0, 224, 568_740_352, 4_209_088),
    (1.0, 192, 418_121_728, 4_209_088),
    (1.0, 160, 290_675_200, 4_209_088),
    (1.0, 128, 186_400_768, 4_209_088),
    (0.75, 224, 325_400_448, 2_568_144),
    (0.5, 224, 149_497_088, 1_319_648),
    (0.5, 160, 76_524_800, 1_319_648),
    (0.25, 224, 41_030_272, 463_600),
    (0.25, 128, 13_570_048, 463_600),
]


@pytest.mark.parametrize("alpha, res, mult_adds, params", EXACT)
def test_exact_integers(alpha, res, mult_adds, params):
    cost = model_cost(MobileNetV1Config(alpha=alpha), res)
    assert (cost.mult_adds, cost.params) == (mult_adds, params)
    with_bg = model_cost(MobileNetV1Config(alpha=alpha, num_classes=1001), res)
    extra = int(1024 * alpha)
    assert (with_bg.mult_adds, with_bg.params) == (mult_adds + extra, params + extra)


def test_body_without_fc():
    cost = model_cost(MobileNetV1Config(), 224)
    body = [layer for layer in cost.layers if layer.kind != "fc"]
    assert sum(layer.mult_adds for layer in body) == 567_716_352
    assert sum(layer.params for layer in body) == 3_185_088


def test_table2_shares():
    shares = model_cost(MobileNetV1Config(), 224).shares()
    assert round(shares["pointwise"]["mult_adds"], 2) == 94.86
    assert round(shares["pointwise"]["params"], 2) == 74.59
    assert round(shares["depthwise"]["mult_adds"], 2) == 3.06
    assert round(shares["depthwise"]["params"], 2) == 1.06
    # Table 2 prints 1.19% for the full 3x3 conv: a transposition of the counted 1.91%.
    assert round(shares["conv"]["mult_adds"], 2) == 1.91
    assert round(shares["conv"]["params"], 2) == 0.02
    assert round(shares["fc"]["mult_adds"], 2) == 0.18
    assert round(shares["fc"]["params"], 2) == 24.33


def test_table3_single_layer():
    conv = conv_cost(3, 512, 512, 14)
    sep = separable_cost(3, 512, 512, 14)
    thin = separable_cost(3, 384, 384, 14)
    small = separable_cost(3, 384, 384, 10)
    assert (round(conv[0] / 1e6), round(conv[1] / 1e6, 2)) == (462, 2.36)
    assert (round(sep[0] / 1e6, 1), round(sep[1] / 1e6, 2)) == (52.3, 0.27)
    assert (round(thin[0] / 1e6, 1), round(thin[1] / 1e6, 2)) == (29.6, 0.15)
    assert (round(small[0] / 1e6, 1), round(small[1] / 1e6, 2)) == (15.1, 0.15)
    # Section 3.1: the separable/standard ratio is 1/N + 1/Dk^2.
    assert sep[0] / conv[0] == pytest.approx(1 / 512 + 1 / 9)


@pytest.mark.parametrize("row", PAPER_ROWS, ids=lambda r: f"table{r.table}-{r.label}")
def test_paper_tables_4_to_9(row):
    cost = paper_row_cost(row)
    mult_adds_m = cost.mult_adds / 1e6
    if row.label == "Conv MobileNet":
        # Table 4 prints 4866; the count is 4867.29, so the paper's figure is a typo.
        assert round(mult_adds_m) == 4867
    else:
        assert round(mult_adds_m) == row.mult_adds_m
    if row.params_m is not None:
        digits = len(str(row.params_m).split(".")[1])
        assert round(cost.params / 1e6, digits) == row.params_m


def test_paper_convention_vs_exact():
    config = MobileNetV1Config()
    assert round(model_cost(config, 160, "paper").mult_adds / 1e6) == 290
    assert round(model_cost(config, 160, "exact").mult_adds / 1e6, 2) == 290.68
    half = MobileNetV1Config(alpha=0.5)
    assert round(model_cost(half, 160, "paper").mult_adds / 1e6) == 76
    assert round(model_cost(half, 160, "exact").mult_adds / 1e6, 2) == 76.52
    assert model_cost(config, 224, "paper").mult_adds == model_cost(config, 224).mult_adds


def _counted(model, h, w):
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, h, w))
    return counter.get_total_flops() // 2  # FLOPs = 2 x mult-adds for conv and linear


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0, 0.35, 1.3])
@pytest.mark.parametrize("size", [(224, 224), (160, 160), (97, 131), (32, 32)])
def test_cost_matches_counted_module(alpha, size):
    model = mobilenet_v1(alpha=alpha, num_classes=17)
    cost = model_cost(model.config, size)
    assert _counted(model, *size) == cost.mult_adds
    weights = sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)
    assert weights == cost.params


@pytest.mark.parametrize("variant", ["full-conv", "shallow"])
def test_variant_cost_matches_module(variant):
    model = mobilenet_v1(variant=variant)
    assert _counted(model, 128, 128) == model_cost(model.config, 128).mult_adds


def test_bad_cost_inputs():
    with pytest.raises(ValueError, match="at least 32"):
        model_cost(MobileNetV1Config(), 16)
    with pytest.raises(ValueError, match="input size"):
        model_cost(MobileNetV1Config(), 224.0)
    with pytest.raises(ValueError, match="convention"):
        model_cost(MobileNetV1Config(), 224, "approx")
    with pytest.raises(ValueError, match="num_classes"):
        MobileNetV1Config(num_classes=-1)
