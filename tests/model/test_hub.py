"""The Hugging Face Hub convention (``mobilenet_v1.hub``): ``save_pretrained`` /
``from_pretrained`` round trips, labels and preset kept, files that are not a saved model refused."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import randomize_batch_norm

from mobilenet_v1 import MobileNetV1, load_weights, mobilenet_v1

SMALL = "mobilenet_v1_0.25_128_quant"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norm(mobilenet_v1(alpha=0.25, padding="same", num_classes=10)).eval()
    model.reset_classifier(7)
    folder = model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "mobilenet_v1" and config["num_classes"] == 7
    assert config["model_args"]["padding"] == "same" and config["model_args"]["alpha"] == 0.25
    loaded = MobileNetV1.from_pretrained(folder)
    assert not loaded.training and loaded.config == model.config
    assert _same_outputs(loaded, model, 64)


def test_googles_weights_keep_their_labels_and_preset_through_the_hub_files(shared_data, tmp_path):
    model = mobilenet_v1(weights=SMALL)
    folder = model.save_pretrained(tmp_path / "google")
    loaded = MobileNetV1.from_pretrained(folder)
    assert _same_outputs(loaded, model, 128)
    assert loaded.pretrained_cfg["label_names"] == model.pretrained_cfg["label_names"]
    assert loaded.pretrained_cfg["input_size"] == (3, 128, 128)
    # the folder (or its model.safetensors alone) is a checkpoint for every command
    again, info = load_weights(folder)
    assert info.classes[1] == "tench, Tinca tinca" and info.preprocessing.resize == 146
    assert _same_outputs(again, model, 128)


def test_from_pretrained_refuses_what_is_not_a_saved_model(tmp_path):
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors not found"):
        MobileNetV1.from_pretrained(folder)
    model.save_pretrained(folder)
    (folder / "config.json").write_text('{"model_args": {"alpha": 1e308}}')
    with pytest.raises(ValueError, match="bad 'model_args'"):
        MobileNetV1.from_pretrained(folder)
    (folder / "config.json").write_text('{"model_args": {"alpha": 0.5, "num_classes": 3}}')  # not the file's shapes
    with pytest.raises(ValueError, match="has shape"):
        MobileNetV1.from_pretrained(folder)
