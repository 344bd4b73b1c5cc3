"""``predict`` and ``eval`` subcommands and the evaluation library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.classify import top_classes
from mobilenet_v1.cli import main
from mobilenet_v1.data.folders import find_samples
from mobilenet_v1.measure.evaluate import evaluate
from mobilenet_v1.weights import save_safetensors

SMALL_NAME = "mobilenet_v1_0.25_128_quant"
SMALL = f"{SMALL_NAME}.tflite"


@pytest.fixture
def env(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data / "pretrained"))
    return shared_data


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], needle: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and needle in err, err
    return err


def test_predict_prints_topk(env: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(env / "images" / "cat.bmp"), "--topk", "3", "--weights", SMALL_NAME]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"weights {SMALL_NAME}" and lines[1].endswith("cat.bmp") and len(lines) == 5
    assert "cat" in lines[2]  # Google's 0.25/128 sees an Egyptian or tabby cat


def test_predict_json_and_plot(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = [str(env / "images" / "parrot.jpg"), str(env / "images" / "grace_hopper.bmp")]
    plot = tmp_path / "pred.png"
    assert main(["predict", *images, "--weights", "mobilenet_v1_0.5_160_quant", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[0])["predictions"]
    assert list(out) == images
    probs = [p["probability"] for p in out[images[0]]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert out[images[0]][0]["label"] == "macaw" and all(p["label"] != "background" for p in out[images[1]])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_bad_images(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    _one_line_error(capsys, ["predict", str(env / "images" / "cat.bmp"), str(bad)], "broken.jpg")
    _one_line_error(capsys, ["predict", str(tmp_path / "absent.png")], "absent.png")


def test_bad_weights_are_one_line_errors(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = str(env / "images" / "cat.bmp")
    _one_line_error(capsys, ["predict", image, "--weights", str(tmp_path / "gone.tflite")], "gone.tflite")
    notes = tmp_path / "notes.tflite"
    notes.write_text("not a model")
    _one_line_error(capsys, ["predict", image, "--weights", str(notes)], "not a TFLite flatbuffer")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes((env / "pretrained" / SMALL).read_bytes()[:100_000])
    _one_line_error(capsys, ["predict", image, "--weights", str(cut)], "truncated or corrupt")
    head = str(env / "pretrained" / "mobilenet_v1_1.0_224_quant_head_layers.tflite")
    _one_line_error(capsys, ["predict", image, "--weights", head], "head-layers")
    _one_line_error(capsys, ["predict", image, "--weights", "mobilenet_v1_0.25_128_qant"], "did you mean")


def test_sha256_mismatch_in_cache(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    tampered = bytearray((env / "pretrained" / SMALL).read_bytes())
    tampered[-1] ^= 1
    (cache / SMALL).write_bytes(bytes(tampered))
    err = _one_line_error(capsys, ["predict", str(env / "images" / "cat.bmp"), "--weights", SMALL_NAME], "sha256")
    assert "expected cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785, got " in err


def _imagenette_subset(shared_data: Path, root: Path, per_class: int = 2, classes: int = 3) -> Path:
    for folder in sorted((shared_data / "imagenette" / "val").iterdir())[:classes]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / image.name).symlink_to(image)
    return root


def test_eval_wnid_folder_json(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _imagenette_subset(env, tmp_path / "val")
    confusion = tmp_path / "confusion.png"
    argv = ["eval", str(root), "--json", "--workers", "0", "--batch-size", "4", "--confusion", str(confusion)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["count"] == 6 and 0 <= result["top1"] <= result["top5"] <= 100
    assert set(result["per_class"]) == {p.name for p in root.iterdir()}
    assert confusion.read_bytes()[:4] == b"\x89PNG"


def test_eval_own_class_names_with_workers(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = mobilenet_v1(alpha=0.25, num_classes=2)
    prep = {"resolution": 64, "crop_fraction": 1.0, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    ckpt = save_safetensors(
        model, tmp_path / "m.safetensors", {"resolution": 64, "classes": ["cat", "bird"], "preprocessing": prep}
    )
    for name in ("cat", "bird"):
        (tmp_path / "data" / name).mkdir(parents=True)
        shutil.copy(shared_data / "images" / f"{name}.bmp", tmp_path / "data" / name / f"{name}.bmp")
    assert main(["eval", str(tmp_path / "data"), "--weights", str(ckpt), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "cat" in out and "bird" in out and "(2 images)" in out
    (tmp_path / "data" / "cat" / "zz.jpg").write_bytes(b"junk")
    argv = ["eval", str(tmp_path / "data"), "--weights", str(ckpt), "--workers", "1"]
    _one_line_error(capsys, argv, "zz.jpg")


def test_eval_bad_folders(env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    _one_line_error(capsys, ["eval", str(tmp_path / "empty")], "no images in")
    _one_line_error(capsys, ["eval", str(tmp_path / "nowhere")], "image folder not found")
    (tmp_path / "odd" / "not_a_class").mkdir(parents=True)
    shutil.copy(env / "images" / "cat.bmp", tmp_path / "odd" / "not_a_class")
    _one_line_error(capsys, ["eval", str(tmp_path / "odd")], "neither an ImageNet WordNet id")


def test_evaluate_any_callable(tmp_path: Path) -> None:
    """The loop only needs batch -> logits (the export developer evaluates ONNX through it)."""
    folders = {"a": 1, "b": 2}
    targets = torch.tensor([1, 1, 2, 2])
    logits = torch.tensor([[9.0, 5, 1], [9, 1, 5], [0, 5, 1], [0, 1, 0.5]])  # column 0 is ignored
    batches = [(logits[:2], targets[:2]), (logits[2:], targets[2:])]
    result = evaluate(lambda x: x, batches, folders, ignore=(0,))
    assert result.top1 == 25.0 and result.top5 == 100.0
    assert result.per_class == {"a": 50.0, "b": 0.0}
    assert result.confusion.tolist() == [[1, 1, 0], [2, 0, 0]]
    assert np.array_equal(result.predictions[:, 0], [1, 2, 1, 1])


def test_find_samples_maps_wnids_past_background(tmp_path: Path) -> None:
    (tmp_path / "n2").mkdir()
    (tmp_path / "n2" / "x.JPEG").write_bytes(b"")
    (tmp_path / "notes").mkdir()  # a folder without images is skipped
    samples, folders = find_samples(tmp_path, ["background", "first", "second"], ["n1", "n2"])
    assert folders == {"n2": 2} and samples == [(tmp_path / "n2" / "x.JPEG", 2)]


def test_find_samples_prefers_a_checkpoints_own_wnid_classes(tmp_path: Path) -> None:
    # a model fine-tuned on wnid folders (Imagenette): its 2 classes are wnids, not ImageNet's rows
    for wnid in ("n2", "n3"):
        (tmp_path / wnid).mkdir()
        (tmp_path / wnid / "x.JPEG").write_bytes(b"")
    samples, folders = find_samples(tmp_path, ["n3", "n2"], ["n1", "n2", "n3"])
    assert folders == {"n2": 1, "n3": 0} and [t for _, t in samples] == [1, 0]


def test_top_classes_orders_by_score_and_breaks_ties_evenly():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.3]])
    assert top_classes(scores, 3).tolist() == [[3, 1, 4]]  # no ties: plain descending order
    assert top_classes(scores, 10).shape == (1, 5)
    ties = torch.zeros(2000, 10)  # every row an all-way tie
    ties[:, 0] = torch.arange(2000) % 2  # half the rows: class 0 strictly best
    first = top_classes(ties, 1).squeeze(1)
    assert (first[1::2] == 0).all()
    assert torch.equal(first[::2], first[:1].expand(1000))  # the same tie-break every time
    winners = {int(top_classes(torch.zeros(1, 10), 1, seed=s)) for s in range(20)}
    assert len(winners) > 3  # the winner of a tie is not always the lowest index


def test_top1_ties_split_counts_a_k_way_tie_as_one_kth():
    scores = torch.tensor([[0.0, 5.0, 5.0, 1.0], [0.0, 2.0, 2.0, 2.0], [9.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    targets = torch.tensor([1, 3, 1, 0])  # 2-way tie won, 3-way tie won, plain miss, 4-way tie won
    result = evaluate(lambda x: x, [(scores, targets)], {"a": 0, "b": 1, "c": 2, "d": 3})
    assert result.top1_ties_split == pytest.approx(100 * (1 / 2 + 1 / 3 + 0 + 1 / 4) / 4)
    assert result.to_dict()["top1_ties_split"] == result.top1_ties_split
    plain = evaluate(lambda x: x, [(torch.eye(4), torch.arange(4))], {"a": 0, "b": 1, "c": 2, "d": 3})
    assert plain.top1_ties_split == plain.top1 == 100.0  # without ties both figures agree


def test_predict_cli_says_which_weights_it_used(shared_data, capsys):
    image = str(shared_data / "images" / "cat.bmp")
    assert main(["predict", image, "--topk", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "weights mobilenet_v1_1.0_224_quant"  # the most accurate by default
    assert lines[1] == image and "Egyptian cat" in lines[2]
    assert main(["predict", image, "--topk", "1", "--weights", SMALL_NAME, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == SMALL_NAME and out["int8_exact"] is False and list(out["predictions"]) == [image]
