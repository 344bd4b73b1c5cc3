"""Bad arguments to the model, the builder and the CLI that used to escape as the wrong
exception (``RuntimeError``, ``AttributeError``, ``OverflowError``, a worker's traceback):
each is now a ``ValueError`` (or ``OSError``) naming the problem, and on the command line
one line on stderr with exit code 2, with nothing written.

Covers: the model's input check (type, layout, dtype, device, shape; autocast), the
builder's and config's arguments (numpy scalars, bounds on alpha, classes, input size),
errors raised in DataLoader workers during ``eval``, the CLI's handling of out-of-memory,
overflow and multi-line or control-character messages, a hand-edited ``tradeoff``
cache, the torchrun environment values, and ``export -o`` onto a FIFO.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_v1 import MobileNetV1Config, mobilenet_v1
from mobilenet_v1.cli import main, one_line
from mobilenet_v1.config import MAX_ALPHA, MAX_CLASSES, MAX_INPUT_SIZE, validate_alpha, validate_input_size
from mobilenet_v1.cost import model_cost
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.measure import tradeoff
from mobilenet_v1.measure.evaluate import evaluate, make_loader, worker_error
from mobilenet_v1.measure.tradeoff import Point, measure_grid
from mobilenet_v1.train import distributed, torchrun
from mobilenet_v1.train.torchrun import TIMEOUT_ENV, DistEnv, dist_timeout, read_env, restart_count
from mobilenet_v1.weights import get_weights, google_config, save_safetensors


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``mobilenet-v1 argv`` run in-process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def listing(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its type bits: a replaced FIFO would show."""
    return {str(p.relative_to(folder)): p.lstat().st_mode for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def model():
    return mobilenet_v1(alpha=0.25, num_classes=3).eval()


X = torch.zeros(1, 3, 64, 64)


# --------------------------------------------------------------------------------------
# The model's input check


BAD_INPUTS = {
    "numpy array": (lambda: np.zeros((1, 3, 64, 64), np.float32), "got numpy.ndarray"),
    "list": (lambda: [[0.0] * 64] * 3, "got list"),
    "None": (lambda: None, "got None"),
    "int": (lambda: 3, "got int"),
    "int64 tensor": (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.int64), "dtype torch.int64"),
    "uint8 tensor": (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "dtype torch.uint8"),
    "bool tensor": (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.bool), "dtype torch.bool"),
    "complex tensor": (lambda: torch.zeros(1, 3, 64, 64, dtype=torch.complex64), "dtype torch.complex64"),
    "half into float32": (lambda: X.half(), "input dtype torch.float16 differs from the model's parameters"),
    "float64 into float32": (lambda: X.double(), "input dtype torch.float64 differs"),
    "sparse COO": (lambda: X.to_sparse(), "layout torch.sparse_coo"),
    "sparse CSR": (lambda: torch.zeros(64, 64).to_sparse_csr(), "layout torch.sparse_csr"),
    "meta device": (lambda: torch.zeros(1, 3, 64, 64, device="meta"), "input is on the meta device"),
    "3-D": (lambda: torch.zeros(3, 64, 64), "(N, 3, H, W)"),
    "4 channels": (lambda: torch.zeros(1, 4, 64, 64), "(N, 3, H, W)"),
    "16 px": (lambda: torch.zeros(1, 3, 16, 64), "at least 32x32"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_wrong_input_is_a_value_error(model, case):
    make, needle = BAD_INPUTS[case]
    features = mobilenet_v1(alpha=0.25, features_only=True).eval()
    calls = {
        "forward": model,
        "forward_intermediates": model.forward_intermediates,
        "features_only": features,
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as info:
            call(make())
        message = str(info.value)
        assert needle in message and "\n" not in message, (name, message)


def test_input_on_another_device_than_the_parameters():
    meta_model = mobilenet_v1(alpha=0.25, num_classes=3).to("meta")
    with pytest.raises(ValueError, match="input is on cpu but the model's parameters are on meta"):
        meta_model(X)
    # all on the meta device (shape inference): consistent, so allowed
    assert meta_model(torch.zeros(2, 3, 64, 64, device="meta")).shape == (2, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_input_to_a_cuda_model():
    cuda_model = mobilenet_v1(alpha=0.25, num_classes=3).eval().cuda()
    with pytest.raises(ValueError, match="input is on cpu but the model's parameters are on cuda"):
        cuda_model(X)
    with torch.autocast("cuda", dtype=torch.float16):
        assert cuda_model(X.cuda()).dtype == torch.float16


@torch.no_grad()
def test_right_inputs_pass_the_check_autocast_included(model):
    assert model(X).shape == (1, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(X).dtype == torch.bfloat16  # float32 input, float32 model: autocast casts per layer
        assert model(X.bfloat16()).dtype == torch.bfloat16  # already in the autocast dtype
        with pytest.raises(ValueError, match="float64"):  # autocast never casts float64
            model(X.double())
    half = mobilenet_v1(alpha=0.25, num_classes=3).eval().bfloat16()
    assert half(X.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"torch.float32 differs from the model's parameters \(torch.bfloat16\)"):
        half(X)
    assert mobilenet_v1(alpha=0.25, num_classes=3).eval().double()(X.double()).dtype == torch.float64


@torch.no_grad()
def test_the_check_is_eager_only_a_traced_graph_is_the_network_alone(model):
    traced = torch.fx.symbolic_trace(model)
    ops = [(n.op, str(n.target)) for n in traced.graph.nodes][:2]
    assert ops == [("placeholder", "x"), ("call_module", "features.0.conv")]
    torch.testing.assert_close(traced(X), model(X), rtol=0, atol=0)
    with pytest.raises(ValueError, match="float16 differs"):
        model(X.half())
    with pytest.raises(ValueError, match=r"got numpy\.ndarray"):
        model(np.zeros((1, 3, 64, 64), np.float32))


@torch.no_grad()
def test_the_check_in_a_scripted_model(model):
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(X), model(X), rtol=0, atol=0)
    for bad in (X.half(), X.long(), torch.zeros(1, 3, 16, 64)):
        with pytest.raises(torch.jit.Error, match="ValueError"):
            scripted(bad)


# --------------------------------------------------------------------------------------
# The builder's and the config's arguments


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"weights": 123}, "weights must be None, a MobileNetV1Weights member"),
        ({"weights": True}, "got bool True"),
        ({"weights": 1.5}, "got float 1.5"),
        ({"weights": b"tiny.safetensors"}, "got bytes"),
        ({"weights": ["a"]}, "got list"),
        ({"alpha": 1e308}, f"alpha must be at most {MAX_ALPHA:g}"),
        ({"alpha": MAX_ALPHA * 1.01}, "alpha must be at most"),
        ({"alpha": True}, "alpha must be a number"),
        ({"alpha": "0.5"}, "alpha must be a number"),
        ({"alpha": np.float32("nan")}, "alpha must be a finite number"),
        ({"num_classes": 10**12}, f"num_classes must be an integer from 0 to {MAX_CLASSES}"),
        ({"num_classes": 3.0}, "num_classes must be an integer"),
        ({"num_classes": np.True_}, "num_classes must be an integer"),
        ({"dropout": "high"}, "dropout must be a number in [0, 1)"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
        ({"bn_eps": "small"}, "bn_eps must be a finite number > 0"),
        ({"bn_eps": math.inf}, "bn_eps must be a finite number > 0"),
        ({"folded_bn": "yes"}, "folded_bn must be True or False"),
        ({"features_only": "yes"}, "features_only must be True or False"),
        ({"features_only": True, "out_indices": "ab"}, "out_indices must be an int or a list/tuple of ints"),
        ({"features_only": True, "out_indices": (1.5,)}, "out_indices must be"),
    ],
)
def test_bad_builder_arguments_are_value_errors(kwargs, needle):
    with pytest.raises(ValueError) as info:
        mobilenet_v1(**kwargs)
    assert needle in str(info.value)


def test_config_bounds_hold_without_the_builder():
    with pytest.raises(ValueError, match="min_depth must be an integer from 1 to 4096"):
        MobileNetV1Config(min_depth=10**9)  # would make every layer 10**9 channels wide
    with pytest.raises(ValueError, match="num_classes"):
        mobilenet_v1(alpha=0.25).reset_classifier(10**12)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    model = mobilenet_v1(alpha=np.float32(0.25), num_classes=np.int64(3), dropout=np.float64(0.2))
    config = model.config
    assert (config.alpha, config.num_classes, config.dropout) == (0.25, 3, 0.2)
    assert (type(config.alpha), type(config.num_classes), type(config.dropout)) == (float, int, float)
    json.dumps(config.to_dict())  # serialisable (config.json, weights metadata)
    assert MobileNetV1Config(alpha=np.float32(0.25)) == MobileNetV1Config(alpha=0.25)
    assert validate_alpha(np.float64(0.5)) == 0.5 and validate_alpha(1) == 1.0
    assert validate_input_size(np.int64(128)) == (128, 128)
    with pytest.raises(ValueError, match=f"at most {MAX_INPUT_SIZE}"):
        validate_input_size(10**6)


def test_weights_arguments_are_checked_before_any_weights_are_read(tmp_path, monkeypatch):
    from mobilenet_v1 import builders

    monkeypatch.setattr(builders, "load_weights", lambda *a, **k: pytest.fail("weights read before the check"))
    for kwargs in ({"variant": "deep"}, {"alpha": 1e308}, {"dropout": 2.0}, {"num_classes": -1}):
        with pytest.raises(ValueError):
            mobilenet_v1(weights="mobilenet_v1_1.0_224", **kwargs)
    with pytest.raises(ValueError, match="features_only"):
        mobilenet_v1(weights="mobilenet_v1_1.0_224", features_only=1)


def test_path_like_weights(tmp_path):
    class Where(os.PathLike):
        def __fspath__(self) -> str:
            return str(tmp_path / "tiny.safetensors")

    save_safetensors(mobilenet_v1(alpha=0.25, num_classes=2), tmp_path / "tiny.safetensors", {"resolution": 32})
    assert mobilenet_v1(weights=Where()).config.num_classes == 2


# --------------------------------------------------------------------------------------
# CLI: bounds, messages, out of memory, overflow


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["cost", "--alpha", "1e308"], "argument --alpha: alpha must be at most 4"),
        (["cost", "--alpha", "5"], "alpha must be at most 4"),
        (["cost", "--alpha", "nan"], "alpha must be a finite number > 0, got 'nan'"),
        (["cost", "--resolution", "100000"], "argument --resolution: resolution must be at most 8192 pixels"),
        (["cost", "--resolution", "2e3"], "resolution must be an integer >= 32, got '2e3'"),
        (["cost", "--classes", str(10**12)], "num_classes must be an integer from 0 to 100000"),
    ],
)
def test_cli_bounds_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines = run_cli(argv, capsys)
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert listing(tmp_path) == {}


def _raising(exc: BaseException):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize(
    "exc, code, needle",
    [
        (MemoryError(), 2, "mobilenet-v1: error: out of memory"),
        (MemoryError("Unable to allocate 93.1 GiB"), 2, "out of memory (Unable to allocate 93.1 GiB)"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"), 2, "out of memory (CUDA out"),
        (ValueError("bad name 'a\x1b[2J'\nsecond line"), 2, "error: bad name 'a\\x1b[2J' second line"),
        (OSError(errno.ENOSPC, "No space left on device", "run/x.json"), 2, "[Errno 28] No space left on device"),
        (OverflowError("int too large"), 1, "unexpected error: OverflowError: int too large"),
        (RecursionError("maximum recursion depth exceeded"), 1, "unexpected error: RecursionError"),
    ],
)
def test_cli_error_kinds(exc, code, needle, capsys, monkeypatch):
    """Out of memory is the user's to fix (exit 2); an overflow or a recursion means a
    missing bound, a bug (exit 1 with a traceback file); every message is one line."""
    from mobilenet_v1.cli import cost

    monkeypatch.setattr(cost, "run", _raising(exc))
    got, lines = run_cli(["cost"], capsys)
    assert got == code and len(lines) == 1 and needle in lines[0], lines
    assert "\x1b" not in lines[0]
    if code == 1:
        crash = Path(lines[0].rsplit("traceback in ", 1)[1].rstrip(")"))
        assert "Traceback (most recent call last)" in crash.read_text()
        crash.unlink()


def test_one_line_keeps_a_wrapped_traceback_s_last_line():
    wrapped = "Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
    wrapped += "  File \"x.py\", line 1, in f\n    g()\nOSError: [Errno 5] Input/output error: 'a.jpg'"
    assert one_line(wrapped) == "OSError: [Errno 5] Input/output error: 'a.jpg'"
    assert one_line("a\u202eb\r\nc") == "a\\u202eb c"


def test_cli_export_onto_a_fifo_leaves_it(tmp_path, capsys):
    save_safetensors(mobilenet_v1(alpha=0.25, num_classes=2), tmp_path / "tiny.safetensors", {"resolution": 32})
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    before = listing(tmp_path)
    code, lines = run_cli(["export", "--weights", tmp_path / "tiny.safetensors", "-o", fifo], capsys)
    assert code == 2 and len(lines) == 1 and f"not a regular file: {fifo}" in lines[0], lines
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------------------
# eval: errors in DataLoader workers


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("eval")
    save_safetensors(
        mobilenet_v1(alpha=0.25, num_classes=2),
        d / "tiny.safetensors",
        {"resolution": 32, "classes": ["ant", "bee"], "preprocessing": Preprocessing(32).to_dict()},
    )
    for name in ("ant", "bee"):
        (d / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (40 * i, 80, 120)).save(d / "data" / name / f"{i}.jpg")
    return d


def test_eval_skips_a_folder_and_a_fifo_named_like_images(eval_folder, tmp_path, capsys):
    data = tmp_path / "data"
    for name in ("ant", "bee"):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(data / name / "0.jpg")
    (data / "ant" / "x.jpg").mkdir()
    os.mkfifo(data / "bee" / "x.jpg")
    code, lines = run_cli(["eval", data, "--weights", eval_folder / "tiny.safetensors", "--workers", "2"], capsys)
    assert code == 0 and not any("Traceback" in line or "Error" in line for line in lines), lines


@pytest.mark.parametrize(
    "exc, code, needle",
    [
        (OSError(errno.EIO, "Input/output error", "{path}"), 2, "mobilenet-v1: error: [Errno 5] Input/output error"),
        (PermissionError(errno.EACCES, "Permission denied", "{path}"), 2, "[Errno 13] Permission denied"),
        (ValueError("cannot decode image {path}: broken"), 2, "mobilenet-v1: error: cannot decode image"),
        (RuntimeError("a bug in a worker"), 1, "unexpected error: RuntimeError: a bug in a worker"),
    ],
)
def test_eval_worker_errors_are_one_line(eval_folder, monkeypatch, capsys, exc, code, needle):
    """A worker's error reaches the user as its own one line (a user's error: exit 2),
    not as the loader's 18-line wrapped traceback."""
    from mobilenet_v1.data import folders

    broken = eval_folder / "data" / "bee" / "1.jpg"
    load = folders.load_image
    exc.args = tuple(str(a).replace("{path}", str(broken)) if isinstance(a, str) else a for a in exc.args)
    if isinstance(exc, OSError):
        exc.filename = str(broken)

    def load_image(path, *args, **kwargs):
        if Path(path) == broken:
            raise exc
        return load(path, *args, **kwargs)

    monkeypatch.setattr(folders, "load_image", load_image)  # the workers are forked: they see it
    before = listing(eval_folder)
    argv = ["eval", eval_folder / "data", "--weights", eval_folder / "tiny.safetensors", "--workers", "2"]
    got, lines = run_cli(argv, capsys)
    assert got == code and len(lines) == 1 and needle in lines[0], lines
    if code == 2:
        assert str(broken) in lines[0]
    else:
        Path(lines[0].rsplit("traceback in ", 1)[1].rstrip(")")).unlink()
    assert listing(eval_folder) == before


class _Failing(torch.utils.data.Dataset):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone/a.jpg"),
        OSError(errno.EIO, "Input/output error", "/disk/b.jpg"),
        ValueError("cannot decode image /x/c.jpg: bad"),
        MemoryError(),
    ],
)
def test_worker_error_keeps_type_errno_and_file(exc):
    with pytest.raises(type(exc)) as info:
        evaluate(lambda batch: batch, make_loader(_Failing(exc), 2, 2), {})
    got = info.value
    assert type(got) is type(exc) and str(got) == str(exc) and "\n" not in str(got)
    if isinstance(exc, OSError):
        assert (got.errno, got.filename) == (exc.errno, exc.filename)
    assert worker_error(ValueError("plain, not from a worker")) is None


# --------------------------------------------------------------------------------------
# tradeoff: a hand-edited cache


GRID = ((0.25, 128),)
SETTINGS = tradeoff.cache_settings("onnx", 1, 5, None, None)
VERSION = tradeoff.CACHE_VERSION


def _point(alpha: float, resolution: int, latency: float = 1.0) -> Point:
    cost = model_cost(google_config(alpha), resolution)
    quant, float_ = (get_weights(f"mobilenet_v1_{alpha}_{resolution}{s}").value for s in ("_quant", ""))
    return Point(
        alpha, resolution, cost.mult_adds, cost.params, latency, latency, float_.google_top1, quant.google_top1
    )


GOOD = _point(0.25, 128).to_dict()
BAD_CACHES = {
    "points is a list": {"version": VERSION, "points": [1, 2]},
    "entry is a list": {"version": VERSION, "points": {"KEY": [1]}},
    "missing field": {"version": VERSION, "points": {"KEY": {k: v for k, v in GOOD.items() if k != "params"}}},
    "extra field": {"version": VERSION, "points": {"KEY": {**GOOD, "evil": 1}}},
    "latency is text": {"version": VERSION, "points": {"KEY": {**GOOD, "latency_ms": "fast"}}},
    "latency NaN": {"version": VERSION, "points": {"KEY": {**GOOD, "latency_ms": math.nan}}},
    "latency negative": {"version": VERSION, "points": {"KEY": {**GOOD, "latency_ms": -1}}},
    "accuracy 500": {"version": VERSION, "points": {"KEY": {**GOOD, "google_top1_float": 500}}},
    "resolution true": {"version": VERSION, "points": {"KEY": {**GOOD, "resolution": True}}},
    "cost edited": {"version": VERSION, "points": {"KEY": {**GOOD, "mult_adds": 1}}},
    "other alpha": {"version": VERSION, "points": {"KEY": {**GOOD, "alpha": 1.0}}},
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
    "not JSON": "{nope",
}


@pytest.mark.parametrize("case", list(BAD_CACHES))
def test_hand_edited_tradeoff_cache_is_measured_again(case, tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    content = BAD_CACHES[case]
    key = tradeoff._cache_key(0.25, 128, SETTINGS)
    cache.write_text(content if isinstance(content, str) else json.dumps(content).replace("KEY", key))
    measured = []
    monkeypatch.setattr(tradeoff, "_measure_one", lambda a, r, *_: measured.append(a) or _point(a, r, 9.0))
    with pytest.warns(RuntimeWarning, match="tradeoff cache"):
        (point,) = measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=GRID)
    assert measured == [0.25] and point == _point(0.25, 128, 9.0)
    # the cache now holds the good entry, used as is
    monkeypatch.setattr(tradeoff, "_measure_one", lambda *a: pytest.fail("cache not used"))
    assert measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=GRID) == [point]


def test_a_good_cache_entry_is_used(tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"version": VERSION, "points": {tradeoff._cache_key(0.25, 128, SETTINGS): GOOD}}))
    monkeypatch.setattr(tradeoff, "_measure_one", lambda *a: pytest.fail("cache not used"))
    assert measure_grid(runtime="onnx", threads=1, runs=5, cache_file=cache, progress=False, grid=GRID) == [
        Point.from_dict(GOOD)
    ]


def test_a_cache_that_is_a_fifo_or_too_large_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "cache.json")
    before = listing(tmp_path)

    def hung(signum, frame):
        raise TimeoutError("the cache was opened as if it were a file: reading a FIFO blocks")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code, lines = run_cli(["tradeoff", "--output", out, "--runtime", "onnx"], capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2 and len(lines) == 1 and "cache.json is not a regular file" in lines[0], lines
    assert listing(tmp_path) == before
    (out / "cache.json").unlink()
    with open(out / "cache.json", "wb") as f:
        f.truncate(tradeoff.MAX_CACHE_BYTES + 1)  # sparse: nothing is really written
    with pytest.raises(ValueError, match="more than a cache can be"):
        measure_grid(runtime="onnx", threads=1, runs=5, cache_file=out / "cache.json", progress=False, grid=GRID)


def test_cli_tradeoff_with_a_broken_cache_entry(tmp_path, monkeypatch, capsys):
    """Before: a text latency in the cache crashed the report (exit 1)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    out.mkdir()
    settings = tradeoff.cache_settings("onnx", 2, 100, None, None)
    entries = {tradeoff._cache_key(a, r, settings): _point(a, r).to_dict() for a, r in tradeoff.GRID}
    entries[tradeoff._cache_key(0.25, 128, settings)]["latency_ms"] = "fast"
    (out / "cache.json").write_text(json.dumps({"version": VERSION, "points": entries}))
    monkeypatch.setattr(tradeoff, "_measure_one", lambda a, r, *_: _point(a, r, 2.0))
    with pytest.warns(RuntimeWarning, match="1 malformed entries are measured again"):
        code, lines = run_cli(["tradeoff", "--output", out, "--runtime", "onnx"], capsys)
    assert code == 0, lines


# --------------------------------------------------------------------------------------
# Environment values (torchrun)


@pytest.mark.parametrize(
    "value, needle",
    [
        ("1e300", f"{TIMEOUT_ENV} must be at most 604800 seconds (a week), got '1e300'"),
        ("nan", "must be a positive number of seconds, got 'nan'"),
        ("-5", "must be a positive number of seconds, got '-5'"),
        ("abc", "must be a positive number of seconds, got 'abc'"),
        ("9" * 5000, "got '9999999999999999999999999999999999999999...'"),
    ],
)
def test_bad_timeout(value, needle):
    with pytest.raises(ValueError) as info:
        dist_timeout({TIMEOUT_ENV: value})
    assert needle in str(info.value) and len(str(info.value)) < 200


def test_timeout_within_bounds():
    assert dist_timeout({TIMEOUT_ENV: "3600"}).total_seconds() == 3600


@pytest.mark.parametrize(
    "environ, needle",
    [
        ({"RANK": "9" * 5000, "WORLD_SIZE": "2"}, "RANK must be an integer, got '99999"),
        ({"RANK": "0", "WORLD_SIZE": str(2**40)}, "WORLD_SIZE must be an integer <= 2147483647"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "\x1b[2J"}, "got '\\x1b[2J'"),
    ],
)
def test_bad_rank_variables(environ, needle):
    with pytest.raises(ValueError) as info:
        read_env(environ)
    assert needle in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", str(2**40)])
def test_bad_restart_count(value, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", value)
    with pytest.raises(ValueError, match="TORCHELASTIC_RESTART_COUNT must be an integer"):
        distributed.restarted_by_torchrun(DistEnv())
    assert restart_count({"TORCHELASTIC_RESTART_COUNT": "3"}) == 3 and restart_count({}) == 0


@pytest.mark.parametrize(
    "variables, needle",
    [
        ({"MASTER_PORT": "70000"}, "MASTER_PORT must be an integer >= 1 and <= 65535, got '70000'"),
        ({"MASTER_PORT": "http"}, "MASTER_PORT must be an integer, got 'http'"),
        ({"MASTER_ADDR": " "}, "MASTER_ADDR is empty"),
        ({TIMEOUT_ENV: "1e300"}, f"{TIMEOUT_ENV} must be at most"),
    ],
)
def test_bad_rendezvous_variables_fail_before_any_wait(variables, needle, monkeypatch):
    environ = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", **variables}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torchrun.socket, "create_connection", lambda *a, **k: pytest.fail("waited"))
    monkeypatch.setattr(distributed, "wait_for_endpoint", lambda *a, **k: pytest.fail("waited"))
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        distributed.init_distributed("cpu")


def test_cli_train_with_a_huge_timeout_writes_nothing(tmp_path, monkeypatch, capsys):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", TIMEOUT_ENV: "1e300"}.items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "data"
    for name in ("ant", "bee"):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(data / name / "0.jpg")
    before = listing(tmp_path)
    code, lines = run_cli(["train", "--data", data, "--output", tmp_path / "run", "--alpha", "0.25"], capsys)
    assert code == 2 and len(lines) == 1 and f"{TIMEOUT_ENV} must be at most" in lines[0], lines
    assert listing(tmp_path) == before
