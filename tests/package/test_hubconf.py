"""torch.hub from a checkout: ``hubconf.py``'s entry points and its ``dependencies``."""

from __future__ import annotations

import warnings

import torch
from conftest import ROOT

from mobilenet_v1 import mobilenet_v1

SMALL = "mobilenet_v1_0.25_128_quant"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_torch_hub_load_from_a_checkout(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.hub.load(str(ROOT), "mobilenet_v1", source="local", weights=SMALL)
        backbone = torch.hub.load(str(ROOT), "mobilenet_v1_backbone", source="local", weights=SMALL, fpn=False)
        tiny = torch.hub.load(str(ROOT), "mobilenet_v1", source="local", alpha=0.25, num_classes=7)
    assert _same_outputs(model, mobilenet_v1(weights=SMALL), 128)
    maps = backbone(torch.randn(1, 3, 128, 128))
    assert len(maps) >= 2 and tiny.num_classes == 7


def test_hubconf_declares_what_it_imports():
    namespace: dict = {"__file__": str(ROOT / "hubconf.py")}
    exec(compile((ROOT / "hubconf.py").read_text(), "hubconf.py", "exec"), namespace)
    assert {"torch", "torchvision", "safetensors"} <= set(namespace["dependencies"])
    assert callable(namespace["mobilenet_v1"]) and callable(namespace["mobilenet_v1_backbone"])
