"""LiteRT export: float32 files against PyTorch, uint8 files byte for byte against the
int8-exact emulation and Google's own files, the labels and preprocessing they carry,
and bad input (one line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import randomize_batch_norm

from mobilenet_v1 import Classifier, mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy.common import FP32_TOLERANCE
from mobilenet_v1.deploy.quantize import calibration_files, load_batch
from mobilenet_v1.weights.grids import google_tflite, int8_grids

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from mobilenet_v1.deploy.litert import LiteRTModel, export_tflite, load_litert
from mobilenet_v1.weights import load_weights
from mobilenet_v1.weights.google_tflite.int8 import load_int8
from mobilenet_v1.weights.google_tflite.reader import read_tflite

LABELS = [f"class {i}" for i in range(10)]
PRESET = Preprocessing(64)


def small_model(**kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batch_norm(mobilenet_v1(alpha=0.25, num_classes=10, **kwargs)).eval()


def images(count: int = 8, size: int = 64) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_float_export_matches_pytorch_and_carries_its_metadata(padding, tmp_path):
    model = small_model(padding=padding, activation="relu6" if padding == "same" else "relu")
    path = tmp_path / "m.tflite"
    report = export_tflite(model, path, PRESET, labels=LABELS)
    assert report.format == "tflite" and report.max_abs_diff <= FP32_TOLERANCE and report.top1_agreement == 1.0
    ops = [op.name for op in read_tflite(path)]
    # symmetric padding at stride 2 on an even map is an explicit PAD; SAME is the ops' own
    assert ("PAD" in ops) == (padding == "symmetric")
    assert ops[-3:] == ["AVERAGE_POOL_2D", "CONV_2D", "RESHAPE"]
    loaded, info = load_litert(path)
    assert info.classes == LABELS and info.preprocessing == PRESET
    x = images()
    assert (loaded(x) - model(x)).abs().max() <= FP32_TOLERANCE


def test_google_int8_export_is_googles_file_byte_for_byte(shared_data, tmp_path):
    model, info = load_weights("mobilenet_v1_0.25_128_quant")
    files = calibration_files(shared_data / "imagenette" / "val", 8)
    batch = load_batch(files, info.preprocessing)
    path = tmp_path / "q.tflite"
    report = export_tflite(
        model, path, info.preprocessing, labels=info.classes, int8=True, calibration=batch, grids=int8_grids(info)
    )
    assert report.format == "tflite-int8" and "equal to the int8-exact emulation on 100.00%" in report.checked_on
    assert report.top1_agreement >= 0.75  # int8 against the float import of the same weights
    assert report.compared == "probability" and 0 <= report.max_abs_diff <= 1  # uint8 scores, not logits
    ours = LiteRTModel(path)
    nhwc = ours.to_pixels(batch).permute(0, 2, 3, 1).contiguous()
    litert = torch.from_numpy(ours.run(nhwc.numpy()))
    google = LiteRTModel(google_tflite(info))
    expected = torch.from_numpy(google.run(nhwc.numpy()))
    assert torch.equal(litert, expected)  # every weight, bias and grid is Google's
    emulation, _ = load_int8(path)  # the brief's check: the project's emulation of our file
    assert torch.equal(emulation(nhwc), litert)
    ours_top = Classifier(ours, info.preprocessing, info.classes, info.ignore, uint8=ours.uint8).predict(
        [shared_data / "images" / "cat.bmp"], 1
    )
    google_top = Classifier.from_weights("mobilenet_v1_0.25_128_quant", int8_exact=True).predict(
        [shared_data / "images" / "cat.bmp"], 1
    )
    assert ours_top[0][0][0] == google_top[0][0][0] and ours_top[0][0][1] == pytest.approx(
        google_top[0][0][1], abs=1e-6
    )


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_calibrated_int8_export_of_any_checkpoint(padding, tmp_path):
    """Any checkpoint, Google's SAME padding or torchvision's symmetric padding (a model
    trained from scratch: an explicit PAD with the zero point before each stride-2 layer)."""
    model = small_model(padding=padding, activation="relu6" if padding == "same" else "relu")
    x = images(16)
    path = tmp_path / "q.tflite"
    report = export_tflite(model, path, PRESET, labels=LABELS, int8=True, calibration=x)
    assert "100.00%" in report.checked_on  # else export_tflite raises: LiteRT == emulation, byte for byte
    ops = read_tflite(path)
    assert {op.outputs[0].dtype for op in ops} == {"uint8"} and ops[-1].name == "SOFTMAX"
    assert ("PAD" in [op.name for op in ops]) == (padding == "symmetric")
    model_out, info = load_litert(path)
    assert info.classes == LABELS
    probs = torch.softmax(model_out(x), 1)
    assert (probs.sum(1) - 1).abs().max() < 0.05  # the file's own uint8 probabilities, renormalized
    assert model_out.metadata["quantization"] == "calibrated" and model_out.metadata["format"] == "tflite-int8"


def test_qat_steps_give_the_int8_form_they_trained_for(tmp_path):
    """``qat_steps`` fine-tunes with per-channel weight grids (``deploy.qat``): the file is
    TFLite's int8 form, per-channel weights between uint8 ends, equal to the emulation."""
    path = tmp_path / "q.tflite"
    model = small_model(padding="same", activation="relu6")
    report = export_tflite(model, path, PRESET, labels=LABELS, int8=True, calibration=images(16), qat_steps=2)
    assert "100.00%" in report.checked_on
    ops = read_tflite(path)
    assert ops[0].name == "QUANTIZE" and ops[1].inputs[1].dtype == "int8" and ops[1].inputs[1].scale.size == 8
    assert ops[0].inputs[0].dtype == ops[-1].outputs[0].dtype == "uint8"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"int8": True}, "needs calibration images"),
        ({"qat_steps": 2}, "qat_steps=2 needs fmt='tflite-int8'"),
        ({"int8": True, "calibration": images(2), "preset": Preprocessing(64, mean=(0.485, 0.456, 0.406))}, "one grid"),
    ],
)
def test_bad_export_is_one_line_and_writes_nothing(kwargs, needle, tmp_path):
    model = small_model(padding=kwargs.pop("model", {}).get("padding", "same"))
    preset = kwargs.pop("preset", PRESET)
    with pytest.raises(ValueError, match=needle) as info:
        export_tflite(model, tmp_path / "m.tflite", preset, labels=LABELS, **kwargs)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_output_that_is_a_directory_or_a_device(tmp_path):
    model = small_model(padding="same")
    with pytest.raises(IsADirectoryError):
        export_tflite(model, tmp_path, PRESET, labels=LABELS)
    with pytest.raises(ValueError, match="not a regular file"):
        export_tflite(model, "/dev/null", PRESET, labels=LABELS)


def test_missing_extra_names_the_pip_extra(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(ImportError, match=r"pip install 'mobilenet-v1\[litert\]'"):
        export_tflite(small_model(padding="same"), tmp_path / "m.tflite", PRESET, labels=LABELS)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def float_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    export_tflite(small_model(padding="same"), path, PRESET, labels=LABELS)
    return path


def _with_metadata(source: Path, out: Path, text: bytes) -> Path:
    """``source`` with its metadata JSON replaced by ``text`` (padded with spaces to its length)."""
    data = source.read_bytes()
    start = data.index(b'{"mobilenet_v1.')
    _, end = json.JSONDecoder().raw_decode(data[start:].decode("latin-1"))
    assert len(text) <= end
    out.write_bytes(data[:start] + text.ljust(end) + data[start + end :])
    return out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"[1, 2]", "expected a JSON object of strings"),
        (b'{"mobilenet_v1.preprocessing": "{\\"resolution\\": -3}"', "not valid JSON"),
        (b'{"mobilenet_v1.preprocessing": "{\\"resolution\\": -3}"}', "bad 'preprocessing' metadata"),
        (b'{"mobilenet_v1.preprocessing": "{}"}', "bad 'preprocessing' metadata"),
    ],
)
def test_hostile_metadata_is_one_line(float_file, tmp_path, text, needle):
    path = _with_metadata(float_file, tmp_path / "bad.tflite", text)
    with pytest.raises(ValueError, match=needle) as info:
        load_litert(path)
    assert "\n" not in str(info.value)


def test_truncated_or_foreign_file_is_one_line(float_file, tmp_path):
    truncated = tmp_path / "t.tflite"
    truncated.write_bytes(float_file.read_bytes()[:200])
    for path in (truncated, Path(__file__)):
        with pytest.raises(ValueError) as info:
            load_litert(path)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_litert(tmp_path / "missing.tflite")


def test_cli_eval_model_tflite_matches_int8_exact(shared_data, tmp_path, capsys):
    """``eval --model x.tflite`` runs our int8 file under LiteRT with its own preprocessing
    and gives what ``--int8-exact`` gives for Google's weights (the same arithmetic)."""
    from mobilenet_v1.cli import main

    model, info = load_weights("mobilenet_v1_0.25_128_quant")
    path = tmp_path / "q.tflite"
    export_tflite(model, path, info.preprocessing, labels=info.classes, int8=True, grids=int8_grids(info))
    val = tmp_path / "val"
    for wnid in ("n01440764", "n03888257"):
        (val / wnid).mkdir(parents=True)
        for image in sorted((shared_data / "imagenette" / "val" / wnid).iterdir())[:3]:
            (val / wnid / image.name).symlink_to(image)
    results = []
    for extra in (["--model", str(path)], ["--weights", "mobilenet_v1_0.25_128_quant", "--int8-exact"]):
        code = main(["eval", str(val), "--json", "--workers", "0", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        results.append(json.loads(captured.out.strip().splitlines()[-1]))
    assert results[0]["top1"] == results[1]["top1"] and results[0]["per_class"] == results[1]["per_class"]


def test_one_model_from_eight_threads_gives_the_sequential_results(shared_data):
    """LiteRT's interpreter is not thread-safe; the wrapper serializes its calls."""
    from concurrent.futures import ThreadPoolExecutor

    model = LiteRTModel(shared_data / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite")
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8, generator=gen) for _ in range(16)]
    expected = [model(batch) for batch in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(model, batches))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
