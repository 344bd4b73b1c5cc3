"""Batch norm folded into the convolutions and unfolded again (``mobilenet_v1.fold``)."""

import pytest
import torch
from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.fold import fuse_bn, unfold_bn
from mobilenet_v1.model import ConvBNAct


@pytest.fixture(scope="module")
def folded():
    """A folded 0.25 model with trained-looking batch norm (random statistics and affine maps)."""
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, num_classes=7, dropout=0.0)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return fuse_bn(model.eval())


def test_unfolded_model_computes_the_folded_one_in_eval_and_on_its_own_images_in_training(folded):
    images = torch.randn(12, 3, 64, 64)
    unfolded = unfold_bn(folded, images, batch_size=5)  # statistics gathered over three chunks
    assert not unfolded.config.folded_bn and folded.config.folded_bn
    layers = [m for m in unfolded.modules() if isinstance(m, ConvBNAct)]
    assert len(layers) == 27 and all(isinstance(m.bn, nn.BatchNorm2d) and m.conv.bias is None for m in layers)
    assert all(m.bn.eps == unfolded.config.bn_eps for m in layers)
    with torch.no_grad():
        reference = folded.features(images)  # the last feature map, before pooling
        assert reference.std() > 0.1
        assert torch.allclose(unfolded.eval().features(images), reference, atol=1e-4)
        # Training mode normalises by these very images' statistics: the same outputs again.
        assert torch.allclose(unfolded.train().features(images), reference, atol=1e-3)
        # ... and moved the running statistics only towards the values they already had (but
        # for the variance's unbiased estimate, n / (n - 1)).
        assert torch.allclose(unfolded.eval().features(images), reference, atol=1e-3)
        assert torch.allclose(fuse_bn(unfolded).features(images), reference, atol=1e-3)
    # The unfolded layers load into a model built unfolded: the layout of a trained checkpoint.
    mobilenet_v1(alpha=0.25, num_classes=7).load_state_dict(unfolded.state_dict())


def test_unfold_leaves_its_input_alone_and_keeps_its_mode(folded):
    before = {k: v.clone() for k, v in folded.state_dict().items()}
    unfolded = unfold_bn(folded.train(), torch.randn(4, 3, 32, 32))
    assert unfolded.training and folded.config.folded_bn
    assert all(torch.equal(before[k], v) for k, v in folded.state_dict().items())
    plain = mobilenet_v1(alpha=0.25, num_classes=7).eval()
    copied = unfold_bn(plain, torch.randn(2, 3, 32, 32))
    assert copied is not plain and not copied.training
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in copied.state_dict().items())
    folded.eval()
