"""Property-based fuzzing of the readers: a mutated input is read, or refused with one of
our clear one-line errors naming the file; never another exception, a crash or a hang.

Mutations (bit flips, byte overwrites, insertions, truncations) of a real shared TFLite
model, of a ``.safetensors`` checkpoint and of JPEG/PNG/BMP/GIF/WebP images, plus random
bytes; a few run through the CLI (exit code 0 or 2, never a traceback). Examples are
derandomized (reproducible) and few; benchmarks/fuzz.py runs thousands.
"""

from __future__ import annotations

import contextlib
import io
import random
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.images import load_image
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.weights import load_safetensors, save_safetensors

TFLITE = SHARED_DATA / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite"
CLEAR_ERRORS = (ValueError, FileNotFoundError)
TIMEOUT_S = 20  # far above any single read; a hang fails instead of stalling CI
IMAGE_FORMATS = {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
KINDS = ("flip", "set", "insert", "truncate")

# One mutation: (kind, where, byte); ``where`` is scaled to the input (or its structure).
mutation = st.tuples(st.sampled_from(KINDS), st.floats(0, 1, exclude_max=True), st.integers(0, 255))
mutations = st.lists(mutation, min_size=1, max_size=6)


def mutate(data: bytes, edits: Sequence[tuple[str, float, int]], positions: Sequence[int] | None = None) -> bytes:
    """Apply ``edits`` to ``data``; ``positions`` restricts where (e.g. the flatbuffer tables)."""
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            break
        pos = positions[int(where * len(positions))] if positions else int(where * len(out))
        pos = min(pos, len(out) - 1)
        if kind == "flip":
            out[pos] ^= 1 << (value % 8)
        elif kind == "set":
            out[pos] = value
        elif kind == "insert":
            out[pos:pos] = bytes([value]) * (1 + value % 16)
        else:
            del out[pos:]
    return bytes(out)


def random_edits(rng: random.Random) -> list[tuple[str, float, int]]:
    """1-8 mutations drawn from ``rng`` (benchmarks/fuzz.py: case ``i`` of a target seeds it with "target-i")."""
    return [(rng.choice(KINDS), rng.random(), rng.randrange(256)) for _ in range(rng.randint(1, 8))]


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute each chunk's CRC so that a mutation reaches the decoder, not just the CRC check."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        end = pos + 8 + int.from_bytes(out[pos : pos + 4], "big")
        if end + 4 > len(out):
            break
        out[end : end + 4] = zlib.crc32(out[pos + 4 : end]).to_bytes(4, "big")
        pos = end + 4
    return bytes(out)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in a call that runs longer than ``seconds`` (main thread, POSIX)."""

    def expire(signum, frame):
        raise TimeoutError(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(read: Callable[[Path], object], path: Path, data: bytes) -> str:
    """``"ok"`` or ``"clear error"``; anything else (another exception, a hang) fails."""
    path.write_bytes(data)
    try:
        with time_limit(TIMEOUT_S):
            read(path)
    except CLEAR_ERRORS as exc:
        message = str(exc)
        assert path.name in message and len(message.splitlines()) == 1, message
        event("clear error")  # counts shown by pytest --hypothesis-show-statistics
        return "clear error"
    event("ok")
    return "ok"


def tflite_structure(data: bytes) -> list[int]:
    """Offsets outside the constant buffers (tables, vtables, strings, the appended zip)."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    base = np.frombuffer(data, np.uint8).ctypes.data
    spans = []
    for i in range(model.BuffersLength()):
        view = model.Buffers(i).DataAsNumpy()
        if isinstance(view, np.ndarray) and view.size:
            spans.append((view.ctypes.data - base, view.ctypes.data - base + view.nbytes))
    inside = np.zeros(len(data), bool)
    for start, end in spans:
        inside[start:end] = True
    return np.flatnonzero(~inside).tolist()


def safetensors_seed(folder: Path) -> bytes:
    """A tiny checkpoint, the same bytes in every process: seeded weights, sorted header keys
    (safetensors writes its metadata in hash order, which changes from run to run)."""
    import json

    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mobilenet_v1(alpha=0.25, num_classes=3)
    meta = {"resolution": 32, "classes": ["a", "b", "c"], "preprocessing": Preprocessing(32).to_dict()}
    data = save_safetensors(model, folder / "seed.safetensors", meta).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + size :]


def image_seeds() -> dict[str, bytes]:
    pixels = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    seeds = {}
    for ext, fmt in IMAGE_FORMATS.items():
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        seeds[ext] = buf.getvalue()
    return seeds


def fuzz(examples: int) -> settings:
    """Reproducible (derandomized), no deadline (CI machines vary), no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def tflite_seed() -> tuple[bytes, list[int]]:
    if not TFLITE.is_file():
        pytest.skip(f"shared TFLite model not found at {TFLITE}")
    data = TFLITE.read_bytes()
    return data, tflite_structure(data)


@pytest.fixture(scope="module")
def st_seed(tmp_path_factory) -> bytes:
    return safetensors_seed(tmp_path_factory.mktemp("seed"))


@fuzz(150)
@given(edits=mutations, structural=st.booleans())
def test_tflite_reader(tflite_seed, tmp_path, edits, structural):
    from mobilenet_v1.weights.tflite.reader import read_tflite

    data, structure = tflite_seed
    outcome(read_tflite, tmp_path / "m.tflite", mutate(data, edits, structure if structural else None))


@fuzz(25)
@given(edits=mutations)
def test_tflite_import(tflite_seed, tmp_path, edits):
    """Reader and converter together: a mutation the reader accepts must still convert or be refused."""
    from mobilenet_v1.weights import load_weights

    data, structure = tflite_seed
    outcome(load_weights, tmp_path / "m.tflite", mutate(data, edits, structure))


@fuzz(80)
@given(edits=mutations, header=st.booleans())
def test_safetensors_loader(st_seed, tmp_path, edits, header):
    header_len = 8 + int.from_bytes(st_seed[:8], "little")
    positions = range(header_len) if header else None  # the JSON header, or anywhere
    outcome(load_safetensors, tmp_path / "w.safetensors", mutate(st_seed, edits, positions))


@fuzz(40)
@given(data=st.binary(max_size=2048), ext=st.sampled_from([".safetensors", ".tflite", *IMAGE_FORMATS]))
def test_random_bytes(tmp_path, data, ext):
    from mobilenet_v1.weights import load_weights

    outcome(load_image if ext in IMAGE_FORMATS else load_weights, tmp_path / f"x{ext}", data)


@fuzz(150)
@given(ext=st.sampled_from(sorted(IMAGE_FORMATS)), edits=mutations, fix_crc=st.booleans())
def test_image_loader(tmp_path, ext, edits, fix_crc):
    data = mutate(image_seeds()[ext], edits)
    outcome(load_image, tmp_path / f"x{ext}", fix_png_crcs(data) if ext == ".png" and fix_crc else data)


@fuzz(20)
@given(ext=st.sampled_from(sorted(IMAGE_FORMATS)), edits=mutations, weights_edits=st.lists(mutation, max_size=2))
def test_cli_predict_exit_0_or_2(st_seed, tmp_path, capsys, ext, edits, weights_edits):
    """Mutated image and weights through ``mobilenet-v1 predict``: never exit 1 (a traceback)."""
    from mobilenet_v1.cli import main

    image, weights = tmp_path / f"x{ext}", tmp_path / "w.safetensors"
    image.write_bytes(mutate(image_seeds()[ext], edits))
    weights.write_bytes(mutate(st_seed, weights_edits, range(8 + int.from_bytes(st_seed[:8], "little"))))
    with time_limit(TIMEOUT_S):
        code = main(["predict", str(image), "--weights", str(weights)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    event(f"exit {code}")
    assert code == 0 or (len(err.strip().splitlines()) == 1 and "Traceback" not in err), err


@pytest.mark.parametrize(
    "case, needle",
    [
        ("tflite_import-331", "276 scales, 1 zero points"),  # numpy reshape error escaped the converter
        ("tflite_import-347", "1 scales, 257 zero points"),  # numpy broadcast error escaped the converter
    ],
)
def test_regressions_found_by_the_fuzz_benchmark(tflite_seed, tmp_path, case, needle):
    from mobilenet_v1.weights import load_weights

    data, structure = tflite_seed
    path = tmp_path / "m.tflite"
    path.write_bytes(mutate(data, random_edits(random.Random(case)), structure))
    with pytest.raises(ValueError, match=needle) as info:
        load_weights(path)
    assert path.name in str(info.value) and len(str(info.value).splitlines()) == 1


def test_regression_unknown_preprocessing_key(st_seed, tmp_path):
    """Benchmark case safetensors-674 changed a metadata key to "rusolution": a TypeError escaped."""
    path = tmp_path / "w.safetensors"
    mutated = st_seed.replace(b'\\"resolution\\": 32', b'\\"rusolution\\": 32', 1)
    assert mutated != st_seed
    path.write_bytes(mutated)
    with pytest.raises(ValueError, match="bad 'classes' or 'preprocessing' metadata") as info:
        load_safetensors(path)
    assert path.name in str(info.value) and len(str(info.value).splitlines()) == 1
