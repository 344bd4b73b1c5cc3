"""Weights registry, lookup order, download and .safetensors files."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.config import MobileNetV1Config
from mobilenet_v1.cost import model_cost
from mobilenet_v1.weights import (
    FINETUNE_WEIGHTS,
    MobileNetV1Weights,
    get_weights,
    load_safetensors,
    load_weights,
    save_safetensors,
)
from mobilenet_v1.weights.download import Source, fetch, sha256sum

PAPER = Path(__file__).resolve().parents[3] / "shared" / "docs" / "paper.md"
SHARED = {
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant",
}


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch ~/.cache; tests that need the shared files set MOBILENET_V1_DATA."""
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(tmp_path / "no-data"))
    return tmp_path


@pytest.fixture
def pretrained(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data / "pretrained"))
    return shared_data / "pretrained"


def test_registry_lists_all_32_checkpoints() -> None:
    records = [w.value for w in MobileNetV1Weights]
    assert len(records) == 32 and len({r.name for r in records}) == 32
    assert sum(r.quantized for r in records) == 16
    assert {(r.alpha, r.resolution) for r in records} == {
        (a, s) for a in (1.0, 0.75, 0.5, 0.25) for s in (224, 192, 160, 128)
    }
    assert all(r.license == "Apache-2.0" and r.num_classes == 1001 for r in records)
    assert {r.name for r in records if r.verifiable} == SHARED
    for r in records:
        assert r.preprocessing.resolution == r.resolution and r.preprocessing.mean == (0.5, 0.5, 0.5)
        if not r.verifiable:  # Google's release archives hold the .tflite
            (source,) = r.sources
            assert source.sha256 is None and source.url.endswith(f"/{r.name}.tgz")
            assert source.member == f"{r.name}.tflite"


def test_cost_matches_the_cost_module() -> None:
    for w in MobileNetV1Weights:
        r = w.value
        cost = model_cost(MobileNetV1Config(alpha=r.alpha, num_classes=r.num_classes), r.resolution)
        assert (r.mult_adds, r.params) == (cost.mult_adds, cost.params), r.name


def test_google_top1_matches_paper_table() -> None:
    if not PAPER.is_file():
        pytest.skip(f"{PAPER} not found")
    rows = re.findall(
        r"^\| (1\.0|0\.75|0\.5|0\.25) \| (\d+\.\d / \d+\.\d(?: \| \d+\.\d / \d+\.\d){3}) \|$", PAPER.read_text(), re.M
    )
    table = {}
    for alpha, cells in rows:
        for res, cell in zip((224, 192, 160, 128), cells.split(" | "), strict=True):
            fp, q = (float(v) for v in cell.split(" / "))
            table[(float(alpha), res, False)], table[(float(alpha), res, True)] = fp, q
    assert len(table) == 32
    for w in MobileNetV1Weights:
        r = w.value
        assert r.google_top1 == table[(r.alpha, r.resolution, r.quantized)], r.name


def test_shared_files_match_recorded_sha256(pretrained: Path) -> None:
    for w in MobileNetV1Weights:
        for source in w.value.sources if w.value.verifiable else ():
            assert sha256sum(pretrained / source.filename) == source.sha256
            assert source.url.startswith("https://github.com/google-coral/test_data/raw/master/")


def test_get_weights_by_enum_google_name_and_typo() -> None:
    assert get_weights("ALPHA_0_25_128_QUANT") is FINETUNE_WEIGHTS
    assert get_weights("mobilenet_v1_0.25_128_quant") is FINETUNE_WEIGHTS
    assert get_weights(FINETUNE_WEIGHTS) is FINETUNE_WEIGHTS
    assert get_weights("mobilenet_v1_0.5_160").value.quantized is False
    with pytest.raises(ValueError, match=r"did you mean 'mobilenet_v1_0\.25_128_quant'"):
        get_weights("mobilenet_v1_0.25_128_qant")


def _source(tmp_path: Path, payload: bytes, digest: str | None = None) -> Source:
    origin = tmp_path / "origin.tflite"
    origin.write_bytes(payload)
    return Source(origin.as_uri(), "model.tflite", digest or hashlib.sha256(payload).hexdigest())


def test_download_is_verified_and_atomic(isolated_dirs: Path) -> None:
    source = _source(isolated_dirs, b"weights")
    path = fetch(source)
    assert path == isolated_dirs / "cache" / "model.tflite" and path.read_bytes() == b"weights"
    assert [p.name for p in path.parent.iterdir()] == ["model.tflite"]  # no temporary left behind


def test_download_sha256_mismatch_shows_both_digests(isolated_dirs: Path) -> None:
    source = _source(isolated_dirs, b"tampered", digest="0" * 64)
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ValueError, match=f"expected {'0' * 64}, got {actual}"):
        fetch(source)
    assert not (isolated_dirs / "cache" / "model.tflite").exists()


def test_download_extracts_archive_member(isolated_dirs: Path) -> None:
    archive = isolated_dirs / "release.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("./m/model.tflite")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"TFL3!"))
    source = Source(archive.as_uri(), "model.tflite", hashlib.sha256(b"TFL3!").hexdigest(), member="model.tflite")
    assert fetch(source).read_bytes() == b"TFL3!"
    with pytest.raises(ValueError, match=r"archive has no other\.tflite"):
        fetch(Source(archive.as_uri(), "other.tflite", None, member="other.tflite"))


def test_lookup_order_cache_then_data_dir(isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = isolated_dirs / "data"
    data.mkdir()
    (data / "model.tflite").write_bytes(b"from data")
    monkeypatch.setenv("MOBILENET_V1_DATA", str(data))
    source = Source("file:///nonexistent", "model.tflite", None)
    assert fetch(source).read_bytes() == b"from data"
    (isolated_dirs / "cache").mkdir()
    (isolated_dirs / "cache" / "model.tflite").write_bytes(b"from cache")
    assert fetch(source).read_bytes() == b"from cache"
    with pytest.raises(FileNotFoundError, match=r"absent\.tflite not found"):
        fetch(Source("file:///nonexistent", "absent.tflite"), download=False)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_load_google_weights_converted_from_the_verified_file(pretrained: Path, isolated_dirs: Path, name: str) -> None:
    """A verifiable record is converted from its sha256-checked .tflite each time (tens of
    milliseconds), so no converted file is cached that could be substituted."""
    model, info = load_weights(name, download=False)
    record = get_weights(name).value
    assert info.record == record and len(info.classes) == 1001 and info.classes[0] == "background"
    assert model.config.alpha == record.alpha and info.preprocessing.resolution == record.resolution
    assert info.metadata["source_sha256"] == record.source_sha256
    assert not (isolated_dirs / "cache" / f"{name}.safetensors").exists()
    again, _ = load_weights(name, download=False)
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], tensor)


def test_load_tflite_paths(pretrained: Path) -> None:
    model, info = load_weights(pretrained / "mobilenet_v1_0.5_160_quant.tflite")
    assert model.config.alpha == 0.5 and info.preprocessing.resolution == 160 and info.classes[1].startswith("tench")
    model, _ = load_weights(str(pretrained / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    assert model.classifier.out_features == 1001  # the head beside it was joined


def test_builder_with_weights(pretrained: Path) -> None:
    model = mobilenet_v1(weights="mobilenet_v1_0.25_128_quant", num_classes=1001)
    assert model.config.alpha == 0.25 and model.config.folded_bn and model.training
    with pytest.raises(ValueError, match="num_classes=1000 conflicts"):
        mobilenet_v1(weights=FINETUNE_WEIGHTS, num_classes=1000)
    assert mobilenet_v1().config.num_classes == 1000


def test_safetensors_round_trip_training_format(tmp_path: Path) -> None:
    model = mobilenet_v1(alpha=0.25, num_classes=10).eval()
    classes = [f"c{i}" for i in range(10)]
    prep = {"resolution": 96, "crop_fraction": 0.875, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    path = save_safetensors(
        model, tmp_path / "ckpt.safetensors", {"resolution": 96, "classes": classes, "preprocessing": prep}
    )
    loaded, info = load_safetensors(path)
    assert info.classes == classes and info.preprocessing.resolution == 96
    assert json.loads(info.metadata["config"]) == model.config.to_dict()
    assert info.metadata["alpha"] == "0.25" and info.metadata["num_classes"] == "10"
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(loaded(x), model(x))
    assert load_weights(path)[0].config.num_classes == 10


def test_safetensors_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = mobilenet_v1(alpha=0.25, num_classes=10)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["classifier.weight"] = torch.zeros(5, 256)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={"config": json.dumps(model.config.to_dict())})
    with pytest.raises(ValueError, match=r"tensor 'classifier.weight' has shape \(5, 256\)"):
        load_safetensors(bad)
    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="no 'config' metadata"):
        load_safetensors(bad)
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.safetensors: not a readable"):
        load_safetensors(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_weights(tmp_path / "missing.safetensors")


def test_measured_imagenette_top1_matches_benchmark() -> None:
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fidelity.json"
    run = json.loads(results.read_text())
    if not re.search(r"--every 1(\s|$)", run["command"]):
        pytest.skip(f"{results.name} holds a subset run ({run['command']}), not the full val set")
    measured = {row["model"]: row["float"]["top1"] for row in run["rows"]}
    for w in MobileNetV1Weights:
        r = w.value
        if r.name in measured:
            assert r.imagenette_top1 == pytest.approx(measured[r.name], abs=0.005), r.name
        else:
            assert r.imagenette_top1 is None, r.name  # never measured here


def test_unverified_record_downloads_from_archive(pretrained: Path, isolated_dirs: Path) -> None:
    """The download path end to end: a release .tgz holding the .tflite, then conversion."""
    record = get_weights("mobilenet_v1_0.25_128").value  # a float checkpoint, not shared here
    archive = isolated_dirs / "release.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pretrained / "mobilenet_v1_0.25_128_quant.tflite", arcname="./mobilenet_v1_0.25_128.tflite")
    source = replace(record.sources[0], url=archive.as_uri())
    model, info = load_weights(replace(record, sources=(source,)))
    assert model.config.alpha == 0.25 and info.record.name == "mobilenet_v1_0.25_128"
    assert (isolated_dirs / "cache" / "mobilenet_v1_0.25_128.tflite").is_file()
    assert (isolated_dirs / "cache" / "mobilenet_v1_0.25_128.safetensors").is_file()


def test_optional_packages_are_imported_lazily() -> None:
    code = (
        "import sys; sys.modules['timm'] = None; "  # timm's own imports are not ours to keep lazy
        "import mobilenet_v1, mobilenet_v1.weights, mobilenet_v1.weights.google_tflite.convert, mobilenet_v1.cli, "
        "mobilenet_v1.measure.fidelity, mobilenet_v1.measure.plots, mobilenet_v1.cli.predict; "
        "print([m for m in ('tflite', 'ai_edge_litert', 'matplotlib', 'safetensors') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
