"""The entry points users reach for first, offline: torch.hub from a checkout, timm's
registry and data config, the Hugging Face Hub's save_pretrained/from_pretrained, and
Classifier.predict on whatever image a user holds."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT, randomize_batch_norm
from PIL import Image

from mobilenet_v1 import Classifier, MobileNetV1, load_weights, mobilenet_v1
from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import eval_transform

SMALL = "mobilenet_v1_0.25_128_quant"


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# --------------------------------------------------------------------------------------
# torch.hub


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


# --------------------------------------------------------------------------------------
# timm


timm = pytest.importorskip("timm", reason="timm is installed by `make` (the dev extra)")


def test_importing_the_package_registers_every_release_with_timm():
    names = timm.list_models("mobilenet_v1_*")
    assert len(names) == 16 and "mobilenet_v1_025_128" in names and "mobilenet_v1_100_224" in names
    pretrained = timm.list_pretrained("mobilenet_v1_025_128*")
    assert pretrained == ["mobilenet_v1_025_128.google_float", "mobilenet_v1_025_128.google_quant"]


def test_timm_create_model_without_weights_and_a_new_head():
    model = timm.create_model("mobilenet_v1_050_160.google_float", pretrained=False, num_classes=7)
    assert isinstance(model, MobileNetV1) and model.num_classes == 7
    assert model.pretrained_cfg["input_size"] == (3, 160, 160) and model.default_cfg is model.pretrained_cfg
    assert model(torch.randn(2, 3, 160, 160)).shape == (2, 7)
    features = timm.create_model("mobilenet_v1_025_128", features_only=True, out_indices=(3, 4))
    assert [f.shape[1] for f in features(torch.randn(1, 3, 128, 128))] == [128, 256]
    with pytest.raises(ValueError, match="unknown tag"):
        timm.create_model("mobilenet_v1_025_128.imagenet")


def test_timm_pretrained_is_googles_checkpoint_through_our_loader(shared_data):
    model = timm.create_model("mobilenet_v1_025_128.google_quant", pretrained=True)
    assert _same_outputs(model, mobilenet_v1(weights=SMALL), 128)
    assert model.pretrained_cfg["label_names"][1] == "tench, Tinca tinca"
    tuned = timm.create_model("mobilenet_v1_025_128", pretrained=True, num_classes=7)
    assert tuned.num_classes == 7 and "label_names" not in tuned.pretrained_cfg
    torch.testing.assert_close(tuned.features[3].pw.conv.weight, model.features[3].pw.conv.weight)


def test_timm_data_config_gives_the_weights_preset(shared_data):
    model = timm.create_model("mobilenet_v1_050_160.google_quant", pretrained=True)
    config = timm.data.resolve_data_config(model=model)
    timm_transform = timm.data.create_transform(**config)
    _, info = load_weights("mobilenet_v1_0.5_160_quant")
    image = Image.open(shared_data / "images" / "cat.bmp").convert("RGB")
    ours, theirs = eval_transform(info.preprocessing)(image), timm_transform(image)
    assert ours.shape == theirs.shape == (3, 160, 160)  # the same resize (183) and crop
    # PIL's resize (timm) and torchvision's tensor resize (ours) round differently: within 2 levels
    assert float((ours - theirs).abs().max()) <= 2 / 127.5 + 1e-6


def test_timm_layer_decay_groups_the_blocks():
    from timm.optim import create_optimizer_v2

    model = mobilenet_v1(alpha=0.25, num_classes=10)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.5)
    scales = sorted({group["lr_scale"] for group in optimizer.param_groups})
    assert len(scales) == 15 and scales[-1] == 1.0  # stem, 13 blocks, classifier


# --------------------------------------------------------------------------------------
# Hugging Face Hub convention


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


# --------------------------------------------------------------------------------------
# Classifier.predict


@pytest.fixture(scope="module")
def classifier(shared_data):
    return Classifier.from_weights(SMALL)


def test_predict_takes_paths_pil_images_tensors_and_arrays(classifier, shared_data):
    path = shared_data / "images" / "cat.bmp"
    expected = classifier.predict([path], k=3)
    pixels = load_image(path)
    pil = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    same = [
        classifier.predict(path, k=3),  # one path, not a list of characters
        classifier.predict(str(path), k=3),
        classifier.predict(pil, k=3),
        classifier.predict(pixels, k=3),
        classifier.predict(pixels.float() / 255, k=3),
        classifier.predict(pixels.permute(1, 2, 0).numpy(), k=3),
    ]
    for got in same:
        assert [label for label, _ in got[0]] == [label for label, _ in expected[0]]
        np.testing.assert_allclose([p for _, p in got[0]], [p for _, p in expected[0]], atol=1e-5)
    batch = classifier.predict(torch.stack([pixels, pixels.flip(-1)]), k=1)
    assert len(batch) == 2 and batch[0][0][0] == expected[0][0][0]
    gray = classifier.predict(Image.fromarray(pixels[0].numpy(), mode="L"), k=1)
    assert len(gray) == 1


@pytest.mark.parametrize(
    "bad, needle",
    [
        ([], "images is empty"),
        (torch.zeros(3, 40, 40, dtype=torch.int32), "uint8 or floating-point"),
        (torch.full((3, 40, 40), 2.0), r"in \[0, 1\]"),
        (torch.zeros(4, 40, 40), r"shape \(3, H, W\)"),
        (42, "got int"),
    ],
)
def test_predict_refuses_bad_images_in_one_line(classifier, bad, needle):
    with pytest.raises(ValueError, match=needle):
        classifier.predict(bad)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_predict_refuses_a_bad_k(classifier, shared_data, k):
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        classifier.predict(shared_data / "images" / "cat.bmp", k=k)


def test_predict_cli_says_which_weights_it_used(shared_data, capsys):
    from mobilenet_v1.cli import main

    image = str(shared_data / "images" / "cat.bmp")
    assert main(["predict", image, "--topk", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "weights mobilenet_v1_1.0_224_quant"  # the most accurate by default
    assert lines[1] == image and "Egyptian cat" in lines[2]
    assert main(["predict", image, "--topk", "1", "--weights", SMALL, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == SMALL and out["int8_exact"] is False and list(out["predictions"]) == [image]
