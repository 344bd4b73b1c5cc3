"""Weights and metadata are untrusted input (docs/robustness.md, "weights and metadata").

``.safetensors`` metadata is parsed with bounded size and depth, every tensor's shape and
dtype is checked from the header before the model is built or a tensor read, NaN/Inf
weights and negative variances are refused by name, a converted cache file is never
trusted on its own word, ONNX metadata must agree with the graph, ``--int8-exact`` takes
only Google's uint8 MobileNet V1 classifier, and every string from a file prints as one
plain line. API cases raise ``ValueError`` with the reason; CLI cases exit 2 with exactly
one stderr line and leave the folder as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import main
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.untrusted import parse_json, printable
from mobilenet_v1.weights import get_weights, load_safetensors, load_weights, save_safetensors

PRETRAINED = SHARED_DATA / "pretrained"
SMALL = PRETRAINED / "mobilenet_v1_0.25_128_quant.tflite"
EXTRACTOR = PRETRAINED / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
HEAD = PRETRAINED / "mobilenet_v1_1.0_224_quant_head_layers.tflite"
DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this
CONTROLS = "\x1b[31m\x07\r\n\x7f\x85\u2028\u202e\ud800"


# --------------------------------------------------------------------------------------
# The bounded parser and printable strings


def test_parse_json_refuses_deep_nesting_before_recursing():
    with pytest.raises(RecursionError):
        json.loads(DEEP)  # what every reader did before
    with pytest.raises(ValueError, match=r"^meta: JSON nested 100000 levels deep, more than the 16 allowed$"):
        parse_json(DEEP, what="meta")
    # brackets inside strings are text, not nesting
    assert parse_json(json.dumps({"a": ["[[[[" * 50]}), what="m", max_depth=2) == {"a": ["[[[[" * 50]}
    assert parse_json("[[1]]", what="m", max_depth=2) == [[1]]
    with pytest.raises(ValueError, match="nested 3 levels"):
        parse_json("[[[1]]]", what="m", max_depth=2)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("x" * 2_000_000, "more than 1048576 bytes"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("{", "not valid JSON"),
        ("1" * 5000, "not valid JSON"),  # Python's integer-string limit
        ('{"a": "\x1b[2J"}', "not valid JSON"),  # a raw control character in a string
    ],
)
def test_parse_json_bad_input_is_one_line(text, needle):
    with pytest.raises(ValueError) as info:
        parse_json(text, what="f.safetensors: 'classes' metadata")
    message = str(info.value)
    assert needle in message and message.startswith("f.safetensors: 'classes' metadata: ")
    assert len(message.splitlines()) == 1 and "\x1b" not in message


def test_printable_replaces_controls_and_keeps_unicode():
    plain = "café 猫 🐱 tabby, tiger cat"
    assert printable(plain) == plain
    shown = printable("a" + CONTROLS + "b")
    assert shown == "a\\x1b[31m\\x07\\x0d\\x0a\\x7f\\x85\\u2028\\u202e\\ud800b"
    assert len(shown.splitlines()) == 1 and shown.isprintable()
    shown.encode("utf-8")  # a lone surrogate would raise UnicodeEncodeError on stderr
    assert printable(printable("\x1b")) == printable("\x1b")  # idempotent
    assert printable(3) == "3"


# --------------------------------------------------------------------------------------
# .safetensors files


def _variant(src: Path, dst: Path, *, state=None, **meta_changes) -> Path:
    """``src`` with some tensors and/or metadata values replaced (None: the key removed)."""
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    save_file({**load_file(src), **(state or {})}, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("weights-robust")
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    meta = {"resolution": 32, "classes": ["a", "b", "c"], "preprocessing": Preprocessing(32).to_dict()}
    tiny = save_safetensors(model, d / "tiny.safetensors", meta)
    state = load_file(tiny)
    config = json.loads(safe_open(str(tiny), framework="pt").metadata()["config"])
    w = "features.0.conv.weight"
    nan, inf = state[w].clone(), state[w].clone()
    nan[0, 0, 0, 0], inf[1, 0, 0, 0] = float("nan"), float("inf")
    var = "features.1.dw.bn.running_var"
    files = {
        "deep_config": dict(config="[" * 20_000 + "]" * 20_000),  # 40 KB: under the size bound
        "deep_classes": dict(classes=DEEP),
        "huge_classes": dict(classes=json.dumps(["x" * 2_000_000, "b", "c"])),
        "list_config": dict(config=[0.25]),
        "alpha_500": dict(config={**config, "alpha": 500.0}),
        "alpha_1e308": dict(config={**config, "alpha": 1e308}),
        "classes_1e9": dict(config={**config, "num_classes": 10**9}),
        "alpha_4_100k": dict(config={**config, "alpha": 4.0, "num_classes": 100_000}),  # 1.9 GB of float32
        "control_key": dict(config={**config, "\x1b[2Jcolor": 1}),
        "number_classes": dict(classes=[1, 2, 3]),
        "resolution_1e9": dict(preprocessing={**Preprocessing(32).to_dict(), "resolution": 10**9}),
        "std_0": dict(preprocessing={**Preprocessing(32).to_dict(), "std": [0.5, 0, 0.5]}),
        "nan": dict(state={w: nan}),
        "inf": dict(state={w: inf}),
        "f64_overflow": dict(state={w: state[w].double() * 1e300}),
        "negative_var": dict(state={var: -state[var]}),
        "int_weight": dict(state={w: state[w].to(torch.int32)}),
        "controls": dict(classes=["red" + CONTROLS, "cr\rover", "\u202eevil"]),
    }
    for name, changes in files.items():
        _variant(tiny, d / f"{name}.safetensors", **changes)
    # a header claiming 50 MB: more than we read, less than the library's own limit
    (d / "huge_header.safetensors").write_bytes((50 << 20).to_bytes(8, "little") + b"{" + b" " * 100)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "good.jpg")
    for c in ("ant", "bee"):
        (d / "data" / c).mkdir(parents=True)
        Image.new("RGB", (40, 36), (100, 50 if c == "ant" else 200, 0)).save(d / "data" / c / "0.jpg")
    return SimpleNamespace(d=d, tiny=tiny, model=model, first=w, var=var)


SAFETENSORS_CASES = [
    # (file, needle of the message)
    ("deep_config", "'config' metadata: JSON nested 20000 levels deep"),
    ("deep_classes", "'classes' metadata: JSON nested 100000 levels deep"),
    ("huge_classes", "'classes' metadata: more than 1048576 bytes"),
    ("huge_header", "header of 52428800 bytes"),
    ("list_config", "bad 'config' metadata (expected a JSON object, got list)"),
    ("alpha_500", "alpha"),  # refused by the config's bound, or else by the first tensor's shape
    ("alpha_1e308", "alpha"),
    ("classes_1e9", "1000000000"),  # refused by the config's bound, or else by the classifier's shape
    ("alpha_4_100k", "tensor 'features.0.conv.weight' has shape (8, 3, 3, 3), the config needs (128, 3, 3, 3)"),
    ("control_key", "bad 'config' metadata"),
    ("number_classes", "expected a list of 3 class names"),
    ("resolution_1e9", "resolution must be an integer in [1, 8192], got 1000000000"),
    ("std_0", "std must be 3 finite numbers > 0"),
    ("nan", "tensor 'features.0.conv.weight' holds 1 NaN or infinite values"),
    ("inf", "tensor 'features.0.conv.weight' holds 1 NaN or infinite values"),
    ("f64_overflow", "tensor 'features.0.conv.weight' holds"),
    ("negative_var", "tensor 'features.1.dw.bn.running_var' holds a negative variance"),
    ("int_weight", "tensor 'features.0.conv.weight' has dtype I32, expected a floating-point dtype"),
]


@pytest.mark.parametrize("name, needle", SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_load_safetensors_refuses_untrusted_content(f, name, needle):
    path = f.d / f"{name}.safetensors"
    with pytest.raises(ValueError) as info:
        load_safetensors(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and needle in message, message
    assert len(message.splitlines()) == 1 and message.isprintable(), message


@pytest.mark.parametrize("name, needle", SAFETENSORS_CASES, ids=[c[0] for c in SAFETENSORS_CASES])
def test_cli_untrusted_weights_one_line_exit_2(f, capsys, name, needle):
    before = sorted(p.name for p in f.d.iterdir())
    code = main(["predict", str(f.d / "good.jpg"), "--weights", str(f.d / f"{name}.safetensors")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], captured.err
    assert lines[0].startswith("mobilenet-v1: error: ") and lines[0].isprintable()
    assert sorted(p.name for p in f.d.iterdir()) == before


def test_shapes_are_checked_before_anything_is_allocated(f):
    """A 0.9 MB file whose config claims alpha 4 and 100000 classes (1.9 GB of float32),
    alpha 500 or 10**9 classes is refused with the peak memory of the process unchanged."""
    script = (
        "import resource, sys\n"
        "from mobilenet_v1.weights import load_safetensors\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        load_safetensors(p)\n"
        "    except ValueError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(p + ' loaded')\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    files = [str(f.d / f"{n}.safetensors") for n in ("alpha_4_100k", "classes_1e9", "alpha_500", "alpha_1e308")]
    out = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) < 64, f"peak RSS grew by {out.stdout.strip()} MiB"


def test_valid_file_still_loads_exactly_and_trains(f):
    model, info = load_safetensors(f.tiny)
    for (name, ours), theirs in zip(model.state_dict().items(), f.model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.requires_grad for p in model.parameters())
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()  # a loaded checkpoint can be fine-tuned
    assert info.classes == ["a", "b", "c"] and info.preprocessing == Preprocessing(32)


def test_class_names_from_a_file_are_kept_and_printed_printable(f, capsys):
    """Class names stay as they are (a folder's name that is not UTF-8 must match its
    folder); everything the CLI prints of them is made printable."""
    _, info = load_safetensors(f.d / "controls.safetensors")
    assert info.classes[0] == "red" + CONTROLS
    assert all(v.isprintable() for v in info.metadata.values())
    code = main(["predict", str(f.d / "good.jpg"), "--weights", str(f.d / "controls.safetensors"), "--topk", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "\\x1b[31m" in out
    assert not any(ch in out for ch in "\x1b\x07\r\x7f\x85\u2028\u202e")


# --------------------------------------------------------------------------------------
# Google's converted weights: the cache is not trusted on its own word


def test_substituted_cache_file_is_ignored_for_a_verifiable_record(shared_data, tmp_path, monkeypatch, f):
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data / "pretrained"))
    record = get_weights("mobilenet_v1_0.25_128_quant").value
    genuine, _ = load_weights(record.name, download=False)
    assert not (tmp_path / "cache" / f"{record.name}.safetensors").exists()  # only downloads are cached
    # a forged file: the right config and a metadata claim of the right source, other weights
    forged = type(genuine)(genuine.config)  # freshly initialised weights
    meta = {
        "resolution": 128,
        "classes": ["background", *("x" * 1000)],
        "preprocessing": record.preprocessing.to_dict(),
        "weights": record.name,
        "source_sha256": record.source_sha256,
    }
    save_safetensors(forged, tmp_path / "cache" / f"{record.name}.safetensors", meta)
    model, info = load_weights(record.name, download=False)
    for (name, ours), theirs in zip(model.state_dict().items(), genuine.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    assert info.classes[1] != "x" and info.record == record


def test_unverifiable_record_still_uses_its_converted_cache(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOBILENET_V1_DATA", str(shared_data / "pretrained"))
    record = get_weights("mobilenet_v1_0.25_128_quant").value
    unverified = dataclasses.replace(record, sources=tuple(dataclasses.replace(s, sha256=None) for s in record.sources))
    assert not unverified.verifiable
    first, _ = load_weights(unverified, download=False)
    assert (tmp_path / "cache" / f"{record.name}.safetensors").is_file()
    monkeypatch.setattr("mobilenet_v1.weights.google.load_tflite", lambda *a: pytest.fail("converted again"))
    again, info = load_weights(unverified, download=False)
    assert info.record == unverified
    for ours, theirs in zip(again.state_dict().values(), first.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)


def test_labels_file_is_made_printable(tmp_path, monkeypatch):
    from mobilenet_v1.weights import records
    from mobilenet_v1.weights.download import Source

    monkeypatch.setenv("MOBILENET_V1_CACHE", str(tmp_path))
    (tmp_path / "labels.txt").write_bytes(b"background\ntench\x1b]0;pwned\x07\n\xff\xfe bytes\n")
    monkeypatch.setattr(records, "LABELS", Source("file:///none", "labels.txt"))
    labels = records.read_labels(download=False)
    assert labels == ["background", "tench\\x1b]0;pwned\\x07", "\ufffd\ufffd bytes"]


# --------------------------------------------------------------------------------------
# TFLite: --int8-exact takes only Google's uint8 MobileNet V1 classifier


@pytest.fixture
def tflite_dir(shared_data, tmp_path) -> Path:
    shutil.copy(HEAD, tmp_path / "head_only.tflite")
    shutil.copy(EXTRACTOR, tmp_path / "extractor_only.tflite")  # no head beside it: the op list ends early
    Image.new("RGB", (40, 36), (100, 50, 0)).save(tmp_path / "good.jpg")
    return tmp_path


@pytest.mark.parametrize(
    "name, needle",
    [
        ("head_only", "not a MobileNet V1 classifier: it starts with CONV_2D on input (1, 1, 1, 1024)"),
        ("extractor_only", "expected the 31 ops of MobileNet V1, found 28"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_int8_exact_refuses_a_tflite_that_is_not_a_classifier(tflite_dir, capsys, monkeypatch, name, needle, command):
    from mobilenet_v1.weights.google_tflite.int8 import Int8MobileNetV1

    path = tflite_dir / f"{name}.tflite"
    with pytest.raises(ValueError, match="MobileNet V1"):
        Int8MobileNetV1.from_tflite(path)
    target = str(tflite_dir / "good.jpg") if command == "predict" else str(tflite_dir)
    before = sorted(p.name for p in tflite_dir.iterdir())
    code = main([command, target, "--weights", str(path), "--int8-exact"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and str(path) in lines[0], lines
    assert sorted(p.name for p in tflite_dir.iterdir()) == before


def test_int8_exact_still_runs_googles_files(shared_data):
    from mobilenet_v1.weights.google_tflite.int8 import load_int8

    model, info = load_int8(SMALL)
    assert model(torch.zeros(1, 128, 128, 3, dtype=torch.uint8)).shape == (1, 1001)
    joined, _ = load_int8(get_weights("mobilenet_v1_1.0_224_quant").value.name)  # extractor + head
    assert joined.input_shape == (224, 224, 3) and len(info.classes) == 1001


def test_oversized_tflite_is_refused_before_reading(tmp_path):
    from mobilenet_v1.weights.google_tflite.reader import MAX_TFLITE_BYTES, read_tflite

    big = tmp_path / "big.tflite"
    with open(big, "wb") as fh:  # sparse: no disk used
        fh.truncate(MAX_TFLITE_BYTES + 1)
    with pytest.raises(ValueError, match=r"big\.tflite: 268435457 bytes, more than the 268435456"):
        read_tflite(big)


# --------------------------------------------------------------------------------------
# ONNX metadata must agree with the graph


@pytest.fixture(scope="module")
def onnx_files(f, tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from mobilenet_v1.deploy.common import META_PREFIX
    from mobilenet_v1.deploy.onnx import export_onnx

    d = tmp_path_factory.mktemp("onnx-robust")
    good = d / "good.onnx"
    export_onnx(f.model.eval(), good, Preprocessing(32), labels=["a", "b", "c"])
    variants = {
        "two_labels": {"labels": json.dumps(["a", "b"])},
        "number_labels": {"labels": json.dumps([1, 2, 3])},
        "no_preprocessing": {"preprocessing": None},
        "garbled_preprocessing": {"preprocessing": "{not json"},
        "empty_preprocessing": {"preprocessing": "{}"},
        "list_config": {"config": "[1]"},
        "wrong_num_classes": {"config": json.dumps({"num_classes": 5})},
        "deep_labels": {"labels": DEEP},
        "huge_resolution": {"preprocessing": json.dumps({**Preprocessing(32).to_dict(), "resolution": 10**6})},
        "controls": {"labels": json.dumps(["a" + CONTROLS, "b", "c"]), "format": "fp32\x1b[2J"},
    }
    for name, changes in variants.items():
        proto = onnx.load(str(good))
        props = {p.key: p.value for p in proto.metadata_props}
        for key, value in changes.items():
            if value is None:
                props.pop(META_PREFIX + key)
            else:
                props[META_PREFIX + key] = value
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(d / f"{name}.onnx"))
    return d


ONNX_CASES = [
    ("two_labels", "2 labels in the metadata for the graph's 3 outputs"),
    ("number_labels", "bad 'labels' metadata (expected a list of strings)"),
    ("no_preprocessing", "no mobilenet_v1 metadata"),
    ("garbled_preprocessing", "'preprocessing' metadata: not valid JSON"),
    ("empty_preprocessing", "bad 'preprocessing' metadata"),
    ("list_config", "bad 'config' metadata (got a JSON list)"),
    ("wrong_num_classes", "the metadata says 5 classes, the graph has 3 outputs"),
    ("deep_labels", "'labels' metadata: JSON nested 100000 levels deep"),
    ("huge_resolution", "resolution must be an integer in [1, 8192]"),
]


@pytest.mark.parametrize("name, needle", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_metadata_disagreeing_with_the_graph(f, onnx_files, capsys, name, needle):
    from mobilenet_v1.deploy.onnx import load_onnx

    path = onnx_files / f"{name}.onnx"
    with pytest.raises(ValueError) as info:
        load_onnx(path)
    assert str(path) in str(info.value) and needle in str(info.value), str(info.value)
    before = sorted(p.name for p in onnx_files.iterdir())
    code = main(["eval", str(f.d / "data"), "--model", str(path), "--workers", "0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in lines[0], lines
    assert sorted(p.name for p in onnx_files.iterdir()) == before


def test_onnx_metadata_strings_are_printable(onnx_files):
    from mobilenet_v1.deploy.onnx import load_onnx, read_metadata

    _, info = load_onnx(onnx_files / "controls.onnx")
    assert info.classes[0] == "a" + CONTROLS  # kept as they are; printed through printable()
    meta = read_metadata(onnx_files / "controls.onnx")
    assert meta["format"] == "fp32\\x1b[2J"
    assert all(v.isprintable() for v in info.metadata.values())
    good = read_metadata(onnx_files / "good.onnx")
    assert good["labels"] == ["a", "b", "c"] and good["outputs"] == 3 and good["dynamic_size"] is False
