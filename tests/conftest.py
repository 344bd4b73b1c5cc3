"""Shared fixtures: the read-only shared data (``$MOBILENET_V1_DATA``, which the Makefile
sets to ../shared/data beside the checkout; skip if absent) and an isolated weights cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

pytest_plugins = ["serving"]  # tests/serving.py: the fixtures of tests/serve

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOBILENET_V1_DATA") or ROOT.parent / "shared" / "data")
os.environ["MOBILENET_V1_DATA"] = str(SHARED_DATA)  # where the library finds Google's files


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def isolated_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never read or write the user's ~/.cache/mobilenet_v1: one fresh cache per run
    (tests that need their own set MOBILENET_V1_CACHE with monkeypatch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENET_V1_CACHE", str(tmp_path_factory.mktemp("weights-cache")))
        yield


def randomize_batch_norm(model: nn.Module) -> nn.Module:
    """Give every BN layer statistics and an affine map that are not the identity, and every
    bias a value, so that a test comparing two computations of the model can fail."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    return model


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``mobilenet-v1 argv`` in this process: the exit code and what went to stderr."""
    from mobilenet_v1.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects a bad value before the subcommand runs
        code = exc.code
    return code, capsys.readouterr().err


TINY_CLASSES = ["a", "b", "c"]


def tiny_checkpoint(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 3-class α 0.25 checkpoint at 64 px whose head spreads its logits (clear rankings),
    and its state dict."""
    from mobilenet_v1 import mobilenet_v1
    from mobilenet_v1.data.transforms import Preprocessing
    from mobilenet_v1.weights import save_safetensors

    torch.manual_seed(3)
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
        model.classifier.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    meta = {"resolution": 64, "classes": TINY_CLASSES, "preprocessing": Preprocessing(64).to_dict()}
    save_safetensors(model, path, meta)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
