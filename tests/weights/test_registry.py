"""The registry under torchvision's weights contract (``torchvision.models._api.WeightsEnum``):
``url``, ``transforms`` and ``meta`` on every member, the ``DEFAULT`` alias, ``verify``,
``get_state_dict(progress)``, and members that survive deepcopy and pickle."""

from __future__ import annotations

import copy
import io
import pickle
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights
from torchvision.models._api import WeightsEnum
from torchvision.models._meta import _IMAGENET_CATEGORIES
from torchvision.transforms.v2 import functional as F

from mobilenet_v1.data.transforms import eval_transform
from mobilenet_v1.model import MobileNetV1
from mobilenet_v1.weights import FINETUNE_WEIGHTS, MobileNetV1Weights, get_weights, load_weights
from mobilenet_v1.weights.records import LABELS

W = MobileNetV1Weights
SEVERAL = [W.ALPHA_1_0_224_FLOAT, W.ALPHA_1_0_224_QUANT, W.ALPHA_0_75_160_FLOAT, W.ALPHA_0_25_128_QUANT]
META_KEYS = {
    "categories",
    "num_params",
    "min_size",
    "mult_adds",
    "_ops",
    "_metrics",
    "recipe",
    "license",
    "source",
    "alpha",
    "resolution",
    "quantized",
    "_docs",
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail(f"tried to download {a[0]}"))


def test_is_a_torchvision_weights_enum() -> None:
    assert issubclass(W, WeightsEnum)
    assert all(isinstance(member, WeightsEnum) for member in W)
    assert len(W) == 32 and len(list(W)) == 32
    assert repr(W.ALPHA_0_5_160_QUANT) == "MobileNetV1Weights.ALPHA_0_5_160_QUANT"


@pytest.mark.parametrize("member", SEVERAL, ids=lambda m: m.name)
def test_url_transforms_and_meta(member: MobileNetV1Weights) -> None:
    record = member.value
    assert member.url == record.sources[0].url
    if record.verifiable:
        assert member.url.startswith("https://github.com/google-coral/test_data/raw/master/")
    else:
        assert member.url.endswith(f"/{record.name}.tgz")
    assert callable(member.transforms) and member.transforms.func is eval_transform
    meta = member.meta
    assert set(meta) == META_KEYS
    assert (meta["alpha"], meta["resolution"], meta["quantized"]) == (record.alpha, record.resolution, record.quantized)
    assert meta["min_size"] == (32, 32)
    assert meta["mult_adds"] == record.mult_adds and meta["_ops"] == record.mult_adds / 1e9
    assert meta["recipe"] == "https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet_v1.md"
    assert meta["license"] == "Apache-2.0"
    assert meta["source"] == [{"url": s.url, "sha256": s.sha256} for s in record.sources]
    assert meta["_metrics"]["ImageNet-1K"] == {"acc@1": record.google_top1}
    imagenette = {k: v for k, v in meta["_metrics"].items() if k.startswith("Imagenette")}
    if record.imagenette_top1 is None:
        assert not imagenette
    else:
        ((label, value),) = imagenette.items()
        assert value == {"acc@1": record.imagenette_top1} and "tie-rule-free" in label
    assert isinstance(meta["_docs"], str) and meta["_docs"].count(". ") == 0 and meta["_docs"].endswith(".")
    assert member.meta is meta  # built once


def _photo(height: int = 300, width: int = 200) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("member", SEVERAL, ids=lambda m: m.name)
def test_transforms_take_pil_and_tensors_like_eval_transform(member: MobileNetV1Weights) -> None:
    image = _photo()
    chw = F.pil_to_tensor(image)
    hwc_view = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # what load_image gives for JPEGs
    preset = eval_transform(member.value.preprocessing)
    expected = preset(chw)
    transform = member.transforms()
    for given in (image, chw, hwc_view):
        got = transform(given)
        assert type(got) is torch.Tensor and got.dtype == torch.float32
        assert got.shape == (3, member.value.resolution, member.value.resolution)
        assert torch.equal(got, expected)
    assert torch.equal(preset(hwc_view), expected)


@pytest.mark.parametrize("layout", ["chw", "hwc-view"])
@pytest.mark.parametrize("to_float", [True, False])
def test_eval_transform_is_the_plain_tensor_pipeline(layout: str, to_float: bool) -> None:
    """Bit-identical to resize + centre crop (+ scale, normalize) on the uint8 tensor: the
    preset as it was before it took PIL images, and uint8 with ``to_float=False``."""
    member = W.ALPHA_0_5_160_QUANT
    preset = member.value.preprocessing
    hwc = torch.from_numpy(np.asarray(_photo(257, 311)).copy())
    image = hwc.permute(2, 0, 1) if layout == "hwc-view" else hwc.permute(2, 0, 1).contiguous()
    ref = F.center_crop(F.resize(image, [preset.resize], antialias=True), [preset.resolution])
    if to_float:
        ref = F.normalize(F.to_dtype(ref, torch.float32, scale=True), list(preset.mean), list(preset.std))
    got = eval_transform(preset, to_float=to_float)(image)
    assert type(got) is torch.Tensor and got.dtype == (torch.float32 if to_float else torch.uint8)
    assert torch.equal(got, ref)
    assert torch.equal(eval_transform(preset, to_float=to_float)(Image.fromarray(hwc.numpy())), ref)


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.5, 0.25])
def test_num_params_counts_every_parameter_of_the_model(alpha: float) -> None:
    member = get_weights(f"mobilenet_v1_{alpha}_128")
    built = MobileNetV1(member.value.config)
    expected = sum(p.numel() for p in built.parameters())
    assert member.meta["num_params"] == expected
    assert member.meta["num_params"] > member.value.params  # torchvision counts biases, the paper does not
    assert get_weights(f"mobilenet_v1_{alpha}_224_quant").meta["num_params"] == expected  # resolution-free


def test_categories_are_torchvision_names_after_background() -> None:
    for member in SEVERAL:
        categories = member.meta["categories"]
        assert len(categories) == 1001 == member.value.num_classes
        assert categories[0] == "background" and categories[1:] == list(_IMAGENET_CATEGORIES)
        assert len(set(categories)) == 1001


def test_categories_follow_googles_label_order(shared_data: Path) -> None:
    google = (shared_data / "pretrained" / LABELS.filename).read_text().splitlines()
    categories = W.DEFAULT.meta["categories"]
    assert len(google) == len(categories) and google[0] == categories[0]
    differ = {i: (c, g) for i, (c, g) in enumerate(zip(categories, google, strict=True)) if c != g.split(", ")[0]}
    # the two names torchvision disambiguated; every other one is Google's first synonym
    assert differ == {135: ("crane bird", "crane"), 640: ("maillot tank suit", "maillot, tank suit")}


def test_default_is_an_uncounted_alias() -> None:
    assert W.DEFAULT is W.ALPHA_1_0_224_QUANT
    assert W["DEFAULT"] is W.ALPHA_1_0_224_QUANT
    assert "DEFAULT" in W.__members__ and "DEFAULT" not in [m.name for m in W]
    assert len(W) == 32 and W.DEFAULT.name == "ALPHA_1_0_224_QUANT"
    assert get_weights("DEFAULT") is W.verify("DEFAULT") is W.ALPHA_1_0_224_QUANT
    assert FINETUNE_WEIGHTS is W.ALPHA_0_25_128_QUANT  # the CLI's default stays the smallest verifiable one


def test_verify_takes_our_names() -> None:
    member = W.ALPHA_0_25_128_QUANT
    for name in ("ALPHA_0_25_128_QUANT", "MobileNetV1Weights.ALPHA_0_25_128_QUANT", "mobilenet_v1_0.25_128_quant"):
        assert W.verify(name) is member
    assert WeightsEnum.verify.__func__(W, "MobileNetV1Weights.ALPHA_0_25_128_QUANT") is member  # torchvision's own
    assert W.verify(member) is member and W.verify(None) is None
    with pytest.raises(TypeError, match="expected MobileNetV1Weights"):
        W.verify(ResNet18_Weights.DEFAULT)
    with pytest.raises(ValueError, match=r"did you mean 'ALPHA_0_25_128_QUANT'"):
        W.verify("ALPHA_0_25_128_QUNT")


def test_get_state_dict_loads_strictly(shared_data: Path, cache: Path, no_network: None, capsys) -> None:
    member = W.ALPHA_0_25_128_QUANT
    state = member.get_state_dict(progress=True)  # found through MOBILENET_V1_DATA: nothing to download
    model = MobileNetV1(member.value.config)
    assert not model.load_state_dict(state, strict=True).missing_keys
    reference, _ = load_weights(member, download=False)
    assert state.keys() == reference.state_dict().keys()
    for key, tensor in reference.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert not (cache / "mobilenet_v1_0.25_128_quant.safetensors").exists()  # converted from the verified file
    assert capsys.readouterr().err == ""  # no download, no bar


def test_get_state_dict_rejects_a_corrupted_file(
    shared_data: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    member = W.ALPHA_0_25_128_QUANT
    data = tmp_path / "data"
    data.mkdir()
    (source,) = member.value.sources
    shutil.copy(shared_data / "pretrained" / LABELS.filename, data / LABELS.filename)
    payload = bytearray((shared_data / "pretrained" / source.filename).read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (data / source.filename).write_bytes(bytes(payload))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(data))
    with pytest.raises(ValueError, match="sha256"):
        member.get_state_dict()


class _Response(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


@pytest.mark.parametrize("progress", [True, False])
def test_get_state_dict_shows_a_progress_bar_while_downloading(
    shared_data: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, progress: bool
) -> None:
    member = W.ALPHA_0_25_128_QUANT
    (source,) = member.value.sources
    served = {
        source.url: (shared_data / "pretrained" / source.filename).read_bytes(),
        LABELS.url: (shared_data / "pretrained" / LABELS.filename).read_bytes(),
    }
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _Response(served[url]))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(tmp_path / "empty"))
    state = member.get_state_dict(progress=progress)
    MobileNetV1(member.value.config).load_state_dict(state, strict=True)
    assert (cache / source.filename).read_bytes() == served[source.url]  # downloaded into the cache
    err = capsys.readouterr().err
    if progress:
        assert source.filename in err and "100%" in err and LABELS.filename in err
    else:
        assert err == ""


def test_members_survive_deepcopy_and_pickle() -> None:
    for member in W:
        for _ in range(2):  # before and after meta is built and cached on the record
            assert copy.deepcopy(member) is member and copy.copy(member) is member
            assert pickle.loads(pickle.dumps(member)) is member
            assert member.meta["alpha"] == member.value.alpha
    copied = copy.deepcopy(W.DEFAULT.value)
    assert copied == W.DEFAULT.value and W(copied) is W.DEFAULT
    assert copied.transforms.func is W.DEFAULT.transforms.func and copied.transforms.args == W.DEFAULT.transforms.args
