"""The catalogue of bad inputs (docs/robustness.md): one clear line, exit code 2, nothing lost.

Each CLI entry runs ``mobilenet_v1.cli.main`` in-process (a few run as a subprocess to
prove no traceback reaches stderr); each API entry names the exception and a needle its
message must contain. Unusual but valid images (grayscale, CMYK, RGBA, 16-bit, 1x1,
large) must work.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, run_main
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import build_parser, main
from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.train import checkpoint
from mobilenet_v1.weights import save_safetensors

SHARED_TFLITE = SHARED_DATA / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite"
TINY_TRAIN = ["--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--workers", "0", "--epochs", "1"]


class Evil:
    """A pickle that would run code when loaded: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def png_bytes(width: int, height: int, rows: bytes, *, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A PNG written by hand (so a header can claim any size and a row any filter byte)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make_data(root: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(("ant", "bee")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = (torch.rand(36, 44, 3, generator=gen) * 60 + 80 * c).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> SimpleNamespace:
    """Every bad (and unusual but valid) input of the catalogue, made once."""
    d = tmp_path_factory.mktemp("catalogue")
    rng = np.random.default_rng(0)
    model = mobilenet_v1(alpha=0.25, num_classes=3)
    meta = {"resolution": 32, "classes": ["a", "b", "c"], "preprocessing": Preprocessing(32).to_dict()}
    tiny = save_safetensors(model, d / "tiny.safetensors", meta)
    state = load_file(tiny)
    names = list(model.state_dict())
    first, later = names[3], names[-2]
    wrong = {**state, first: state[first][:1].clone(), later: state[later][:1].clone()}
    with safe_open(tiny, framework="pt") as fh:  # keep the metadata (config), change two tensors' shapes
        metadata = fh.metadata()
    save_file(wrong, d / "wrong_shape.safetensors", metadata=metadata)
    save_file(state, d / "no_config.safetensors")
    save_safetensors(model, d / "short_classes.safetensors", {**meta, "classes": ["a", "b"]})
    (d / "trunc.safetensors").write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    for ext in ("safetensors", "tflite", "onnx"):
        (d / f"random.{ext}").write_bytes(rng.bytes(4096))
    (d / "zero.tflite").write_bytes(b"")
    if SHARED_TFLITE.is_file():  # Google's model cut short, and a real TFLite file that is not MobileNet V1
        (d / "trunc.tflite").write_bytes(SHARED_TFLITE.read_bytes()[:100_000])
        head = SHARED_TFLITE.with_name("mobilenet_v1_1.0_224_quant_head_layers.tflite")
        (d / "head_only.tflite").write_bytes(head.read_bytes())
    (d / "tfl3_garbage.tflite").write_bytes(b"\x10\x00\x00\x00TFL3" + rng.bytes(200))
    for ext in ("pt", "pth", "bin"):
        (d / f"evil.{ext}").write_bytes(pickle.dumps(Evil(d / f"pwned-{ext}")))
    # Images: bad ones ...
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "good.jpg")
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.png").write_text("not an image\n")
    (d / "trunc.jpg").write_bytes((d / "good.jpg").read_bytes()[:300])
    # A row with filter type 7 (invalid): torchvision's libpng binding crashed the process on this.
    (d / "bad_filter.png").write_bytes(png_bytes(8, 8, (b"\x07" + b"\x80" * 8) * 8))
    (d / "bomb.png").write_bytes(png_bytes(20000, 20000, b"\x00" * 100))  # 400 M pixels
    (d / "a_folder.jpg").mkdir()
    # ... and unusual but valid ones.
    ok = d / "ok"
    ok.mkdir()
    Image.new("L", (30, 20), 200).save(ok / "gray.png")
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(ok / "cmyk.jpg")
    Image.new("RGBA", (30, 20), (10, 20, 30, 0)).save(ok / "rgba.png")
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(ok / "gray16.png")
    (ok / "rgb16.png").write_bytes(
        png_bytes(5, 4, (b"\x00" + b"\xff\xff\x00\x00\x80\x00" * 5) * 4, bit_depth=16, color_type=2)
    )
    Image.new("RGB", (1, 1), (255, 0, 0)).save(ok / "one_pixel.png")
    Image.new("P", (30, 20)).save(ok / "palette.gif")
    Image.new("RGB", (30, 20), (1, 2, 3)).save(ok / "plain.bmp")
    Image.new("RGB", (4000, 3000), (0, 128, 255)).save(ok / "large.png")  # 12 M pixels
    # Folders and runs.
    data = make_data(d / "data")
    (d / "empty").mkdir()
    (d / "file.txt").write_text("a regular file where a folder is expected\n")
    for name, content in (("zero_ckpt", b""), ("evil_ckpt", pickle.dumps(Evil(d / "pwned-ckpt")))):
        (d / name).mkdir()
        (d / name / checkpoint.LAST).write_bytes(content)
    return SimpleNamespace(d=d, tiny=tiny, data=data, first=first, ok=ok)


def registered() -> set[str]:
    parser = build_parser()
    return next(set(a.choices) for a in parser._actions if isinstance(a, argparse._SubParsersAction))


W = ["--weights", "{tiny}"]
# (subcommand and arguments, a needle of the one-line message); {x} names a file of ``f``.
CLI_CASES = [
    (["cost", "--alpha", "0"], "alpha must be"),
    (["cost", "--alpha", "inf"], "alpha must be"),
    (["cost", "--resolution", "16"], "resolution must be"),  # rho: input >= 32
    (["cost", "--classes", "0"], "--classes"),
    (["train", "--data", "{data}", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", "{data}", "--lr", "-0.1"], "--lr"),
    (["train", "--data", "{data}", "--lr", "nan"], "--lr"),
    (["train", "--data", "{data}", "--epochs", "0"], "--epochs"),
    (["train", "--data", "{data}", "--workers", "-1"], "--workers"),
    (["train", "--data", "{d}/missing"], "not found"),
    (["train", "--data", "{d}/empty"], "no class folders"),
    (["train", "--data", "{d}/file.txt"], "file.txt"),
    (["train", "--data", "{data}", "--weights", "mobilenet_v1_0.25_128_qunt"], "did you mean"),
    (["train", "--resume", "{d}/missing"], "not found"),
    (["train", "--resume", "{d}/empty"], "no checkpoint"),
    (["train", "--resume", "{d}/zero_ckpt"], "empty or truncated file"),
    (["train", "--resume", "{d}/evil_ckpt"], "loading could run code"),
    (["predict", "{d}/missing.jpg", *W], "image not found"),
    (["predict", "{d}/a_folder.jpg", *W], "image not found"),
    (["predict", "{d}/zero.jpg", *W], "zero.jpg"),
    (["predict", "{d}/text.png", *W], "cannot decode image"),
    (["predict", "{d}/trunc.jpg", *W], "trunc.jpg"),
    (["predict", "{d}/bad_filter.png", *W], "cannot decode image"),
    (["predict", "{d}/bomb.png", *W], "decompression bomb"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/missing.safetensors"], "not found"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/random.safetensors"], "not a readable .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/trunc.safetensors"], "not a readable .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/wrong_shape.safetensors"], "{first}"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/no_config.safetensors"], "no 'config' metadata"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/short_classes.safetensors"], "expected a list of 3 class names"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/zero.tflite"], "not a TFLite flatbuffer"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/random.tflite"], "not a TFLite flatbuffer"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/tfl3_garbage.tflite"], "truncated or corrupt"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/trunc.tflite"], "truncated or corrupt"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/head_only.tflite"], "not a MobileNet V1 classifier"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/random.onnx"], "expected a .tflite or .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/evil.pt"], "expected a .tflite or .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/evil.pth"], "expected a .tflite or .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "{d}/evil.bin"], "expected a .tflite or .safetensors"),
    (["predict", "{d}/good.jpg", "--weights", "mobilenet_v1_0.25_128_qant"], "'mobilenet_v1_0.25_128_quant'"),
    (["predict", "{d}/good.jpg", *W, "--topk", "0"], "--topk"),
    (["eval", "{d}/missing", *W], "not found"),
    (["eval", "{d}/empty", *W], "no images"),
    (["eval", "{data}", *W, "--batch-size", "0"], "--batch-size"),
    (["eval", "{data}", *W, "--workers", "-1"], "--workers"),
    (["export", *W, "--output", "{d}/file.txt/out.onnx"], "file.txt"),
    (["export", *W, "--output", "{d}/empty"], "is a directory"),
    (["export", *W, "--output", "{d}/out.onnx", "--format", "onnx-int8"], "--calibration"),
    (["export", *W, "--output", "{d}/out.onnx", "--format", "onnx-int8", "--calibration", "{d}/empty"], "no images"),
    (["bench", "--calibration", "{data}", "--threads", "0"], "--threads"),
    (["bench", "--calibration", "{data}", "--runs", "5", *W], "at least 10"),
    (["bench", "--calibration", "{d}/missing", *W], "not found"),
    (["tradeoff", "--threads", "0"], "--threads"),
    (["tradeoff", "--budget-ms", "-1"], "--budget-ms"),
    (["tradeoff", "--data", "{d}/missing"], "not found"),
]


def case_id(case: tuple[list[str], str]) -> str:
    return " ".join(case[0]).replace("{d}/", "").replace("{", "").replace("}", "")


@pytest.mark.parametrize("argv, needle", CLI_CASES, ids=[case_id(c) for c in CLI_CASES])
def test_cli_bad_input_one_line_exit_2(f, capsys, argv, needle):
    if argv[0] not in registered():
        pytest.skip(f"subcommand {argv[0]!r} is not registered")
    values = {"d": f.d, "tiny": f.tiny, "data": f.data, "first": f.first}
    argv = [a.format(**values) for a in argv]
    if any(a.endswith(("trunc.tflite", "head_only.tflite")) for a in argv) and not SHARED_TFLITE.is_file():
        pytest.skip(f"shared TFLite model not found at {SHARED_TFLITE}")
    if argv[0] == "train" and "--resume" not in argv:  # the case's own values come last and win
        argv = ["train", *TINY_TRAIN, "--output", str(f.d / "run-never-written"), *argv[1:]]
    before = sorted(p.name for p in f.d.iterdir())
    code, err = run_main(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle.format(**values) in lines[0] and "Traceback" not in err, err
    assert sorted(p.name for p in f.d.iterdir()) == before  # nothing written, nothing removed
    assert not list(f.d.glob("pwned-*"))  # no pickle was ever loaded


def _model_input(shape):
    return lambda f: mobilenet_v1(alpha=0.25, num_classes=3)(torch.zeros(shape))


def _train_config(**bad):
    from mobilenet_v1.train.config import TrainConfig

    return lambda f: TrainConfig(data=str(f.data), output=str(f.d / "run"), **bad)


def _call(module: str, name: str, *args, **kwargs):
    """``module.name(*args)`` with ``{x}`` in string arguments filled from ``f``, imported lazily."""

    def run(f):
        import importlib

        fill = {"d": f.d, "tiny": f.tiny, "data": f.data}
        func = getattr(importlib.import_module(f"mobilenet_v1.{module}"), name)
        return func(*(a.format(**fill) if isinstance(a, str) else a for a in args), **kwargs)

    return run


# (what, call, exception type, needle of the message)
API_CASES = [
    ("alpha 0", lambda f: mobilenet_v1(alpha=0), ValueError, "alpha must be"),
    ("alpha nan", lambda f: mobilenet_v1(alpha=float("nan")), ValueError, "alpha must be"),
    ("alpha as text", lambda f: mobilenet_v1(alpha="wide"), ValueError, "alpha must be"),
    ("-1 classes", lambda f: mobilenet_v1(num_classes=-1), ValueError, "num_classes"),
    ("unknown variant", lambda f: mobilenet_v1(variant="deep"), ValueError, "variant"),
    ("input 16x16 (rho too small)", _model_input((1, 3, 16, 16)), ValueError, "at least 32"),
    ("input with 4 channels", _model_input((1, 4, 64, 64)), ValueError, "(N, 3, H, W)"),
    ("classes conflict with weights", lambda f: mobilenet_v1(weights=f.tiny, num_classes=5), ValueError, "conflicts"),
    ("missing image", _call("data.images", "load_image", "{d}/missing.jpg"), FileNotFoundError, "missing.jpg"),
    ("zero-byte image", _call("data.images", "load_image", "{d}/zero.jpg"), ValueError, "zero.jpg"),
    ("PNG with a bad row filter", _call("data.images", "load_image", "{d}/bad_filter.png"), ValueError, "bad_filter"),
    ("decompression bomb", _call("data.images", "load_image", "{d}/bomb.png"), ValueError, "decompression bomb"),
    ("crop fraction 0", lambda f: Preprocessing(224, crop_fraction=0), ValueError, "crop_fraction"),
    (
        "missing .tflite",
        _call("weights.google_tflite.reader", "read_tflite", "{d}/no.tflite"),
        FileNotFoundError,
        "no.tflite",
    ),
    ("random .tflite", _call("weights.google_tflite.reader", "read_tflite", "{d}/random.tflite"), ValueError, "TFL3"),
    (
        "TFL3 + garbage",
        _call("weights.google_tflite.reader", "read_tflite", "{d}/tfl3_garbage.tflite"),
        ValueError,
        "corrupt",
    ),
    (
        "3 .tflite files",
        _call("weights.google_tflite.reader", "read_tflite_files", ["a", "b", "c"]),
        ValueError,
        "3 paths",
    ),
    ("wrong shapes", _call("weights", "load_safetensors", "{d}/wrong_shape.safetensors"), ValueError, "shape"),
    ("random .safetensors", _call("weights", "load_safetensors", "{d}/random.safetensors"), ValueError, "random"),
    (
        "pickle as weights",
        _call("weights", "load_weights", "{d}/evil.pt"),
        ValueError,
        "unsupported weights file",
    ),
    (
        "unknown weights name",
        _call("weights", "get_weights", "ALPHA_0_25_128_QUNT"),
        ValueError,
        "'ALPHA_0_25_128_QUANT'",
    ),
    (
        "pickle as checkpoint",
        _call("train.checkpoint", "load_checkpoint", "{d}/evil_ckpt/checkpoint-last.pt"),
        ValueError,
        "cannot read",
    ),
    ("no checkpoint", _call("train.checkpoint", "find_checkpoint", "{d}/empty"), FileNotFoundError, "no checkpoint"),
    (
        "images but no class folders",
        _call("data.folders", "find_classes", "{data}/ant"),
        ValueError,
        "no class folders",
    ),
    ("batch size 0", _train_config(batch_size=0), ValueError, "batch_size"),
    ("lr -1", _train_config(lr=-1.0), ValueError, "lr"),
    ("epochs 0", _train_config(epochs=0), ValueError, "epochs"),
    ("unknown recipe", _train_config(recipe="fancy"), ValueError, "recipe"),
    ("random .onnx", _call("deploy.onnx", "onnx_session", "{d}/random.onnx"), ValueError, "cannot load ONNX model"),
    (
        "empty calibration folder",
        _call("deploy.quantize", "calibration_files", "{d}/empty", 10),
        ValueError,
        "no images",
    ),
    (
        "export under a file",
        _call("files", "check_writable", "{d}/file.txt/out.onnx"),
        FileNotFoundError,
        "file.txt",
    ),
]


@pytest.mark.parametrize("what, call, exc_type, needle", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_clear_exception(f, what, call, exc_type, needle):
    with pytest.raises(exc_type) as info:
        call(f)
    message = str(info.value)
    assert needle in message and len(message.splitlines()) == 1, message
    assert not list(f.d.glob("pwned-*"))


def test_wrong_shapes_name_the_first_mismatching_tensor(f):
    from mobilenet_v1.weights import load_safetensors

    with pytest.raises(ValueError, match=f"tensor '{f.first}' has shape"):
        load_safetensors(f.d / "wrong_shape.safetensors")


@pytest.mark.parametrize("ext", ["pt", "pth", "bin"])
def test_pickles_are_refused_never_unpickled(f, ext):
    from mobilenet_v1.weights import load_weights

    with pytest.raises(ValueError, match=r"expected a \.tflite or \.safetensors file"):
        load_weights(f.d / f"evil.{ext}")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoint.load_checkpoint(f.d / f"evil.{ext}")
    assert not (f.d / f"pwned-{ext}").exists()
    pickle.loads((f.d / f"evil.{ext}").read_bytes())  # the file would indeed have run code
    assert (f.d / f"pwned-{ext}").exists()
    (f.d / f"pwned-{ext}").unlink()


def test_every_torch_load_is_weights_only():
    src = Path(__file__).resolve().parents[2] / "src"
    for path in src.rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"


def test_unusual_images_work(f, capsys):
    """Grayscale, CMYK, RGBA, 16-bit, palette, BMP, 1x1 and 4000x3000: RGB uint8, and predict runs."""
    paths = sorted(f.ok.iterdir())
    assert len(paths) == 9
    for path in paths:
        image = load_image(path)
        assert image.dtype == torch.uint8 and image.shape[0] == 3, path
    assert load_image(f.ok / "one_pixel.png").shape == (3, 1, 1)
    assert load_image(f.ok / "large.png").shape == (3, 3000, 4000)
    assert load_image(f.ok / "rgb16.png")[:, 0, 0].tolist() == [255, 0, 128]
    assert load_image(f.ok / "gray16.png").max() == 255
    assert load_image(f.ok / "cmyk.jpg")[:, 0, 0].tolist() == pytest.approx([255, 0, 255], abs=2)
    if "predict" not in registered():
        pytest.skip("predict is not registered")
    assert main(["predict", *map(str, paths), "--weights", str(f.tiny), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["predictions"]
    assert sorted(out) == sorted(map(str, paths)) and all(len(v) == 3 for v in out.values())


def test_full_disk_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.LAST
    checkpoint.atomic_save({"step": 1, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_then_fill_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half a file made it to disk, then the disk was full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_then_fill_disk)
    with pytest.raises(OSError, match="no space left on device while writing"):
        checkpoint.atomic_save({"step": 2, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [checkpoint.LAST]
    assert checkpoint.load_checkpoint(path)["step"] == 1


def test_full_disk_during_training_one_line_and_resumable(f, tmp_path, monkeypatch, capsys):
    """The second checkpoint write hits ENOSPC: exit 2, one line, the first checkpoint is
    intact, and the run resumes from it once there is space again."""
    real_save, calls = torch.save, []

    def fill_disk_on_second_save(obj, fh, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_disk_on_second_save)
    run = tmp_path / "run"
    argv = ["train", "--data", str(f.data), *TINY_TRAIN, "--epochs", "2", "--checkpoint-steps", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, err = run_main([*argv, "--output", str(run)], capsys)
        # Training reports progress on stderr; the error is the one last line, with no traceback.
        assert code == 2 and "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert last == f"mobilenet-v1: error: no space left on device while writing {run / checkpoint.BEST}", last
        assert checkpoint.load_checkpoint(run / checkpoint.LAST)["progress"]["global_step"] == 1
        assert not list(run.glob(".*.partial*"))
        monkeypatch.setattr(torch, "save", real_save)
        code, err = run_main(["train", "--resume", str(run)], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert checkpoint.load_checkpoint(run / checkpoint.LAST)["progress"]["epoch"] == 2


def test_unwritable_output_folder(f, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod; the file.txt/out.onnx entry covers this case as root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_main(["export", "--weights", str(f.tiny), "--output", str(locked / "m.onnx")], capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


def test_unexpected_error_one_line_and_traceback_file(capsys, monkeypatch):
    from mobilenet_v1.cli import cost

    def boom(args):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(cost, "run", boom)
    code, err = run_main(["cost"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unexpected error: RuntimeError: something nobody foresaw" in lines[0], err
    crash = Path(lines[0].rsplit("traceback in ", 1)[1].rstrip(")"))
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "something nobody foresaw" in text
    crash.unlink()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["predict", "{d}/bad_filter.png", "--weights", "{tiny}"], "cannot decode image"),
        (["train", "--resume", "{d}/evil_ckpt"], "cannot read checkpoint"),
    ],
)
def test_no_traceback_reaches_stderr_in_a_subprocess(f, argv, needle):
    """The real process: exit code 2, one line, no traceback, and no crash (a signal)."""
    if argv[0] not in registered():
        pytest.skip(f"subcommand {argv[0]!r} is not registered")
    argv = [a.format(d=f.d, tiny=f.tiny) for a in argv]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "mobilenet_v1", *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not list(f.d.glob("pwned-*"))
