"""Property-based fuzzing of the readers: a mutated input is read, or refused with one of
our clear one-line errors naming the file; never another exception, a crash or a hang.

Mutations (bit flips, byte overwrites, insertions, truncations) of a real shared TFLite
model, of a ``.safetensors`` checkpoint and of JPEG/PNG/BMP/GIF/WebP images, plus random
bytes; a few run through the CLI (exit code 0 or 2, never a traceback). Examples are
derandomized (reproducible) and few; benchmarks/robustness/fuzz.py runs thousands.
"""

from __future__ import annotations

import contextlib
import io
import random
import signal
import warnings
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
    """1-8 mutations drawn from ``rng`` (benchmarks/robustness/fuzz.py: case ``i`` of a target
    seeds it with "target-i")."""
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


# Image decoder: EXIF, animation and header mutations. Each case is drawn from an ``rng``
# (benchmarks/robustness/fuzz.py: case ``i`` of a target seeds it with "target-i"; here hypothesis draws the seed).
ORIENTATIONS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 65535)
EXIF_FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tiff": "TIFF"}
ANIMATED_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG", ".tiff": "TIFF"}
# claimed widths/heights: the edges of the bounds (50:1, 13377^2 pixels), field limits, zero
HEADER_VALUES = (0, 1, 2, 49, 50, 51, 255, 256, 13377, 32767, 65535, 65536, 2**24 - 1, 2**31 - 1, 2**32 - 1)


def _encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **options)
    return buf.getvalue()


def _pixels(rng: random.Random, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (height, width, 3), dtype=np.uint8)


def exif_case(rng: random.Random) -> tuple[str, bytes]:
    """A JPEG/PNG/WebP/TIFF with an EXIF block: any orientation value (valid, invalid, random),
    then edits inside the block, a truncated block (JPEG: its segment length kept consistent)
    or edits anywhere."""
    ext = rng.choice(sorted(EXIF_FORMATS))
    exif = Image.Exif()
    exif[0x0112] = rng.choice([*ORIENTATIONS, rng.randrange(65536)])
    exif[0x010F] = "Phone"  # Make
    exif[0x0132] = "2024:01:01 12:00:00"  # DateTime
    block = exif.tobytes()
    data = _encode(_pixels(rng, rng.randint(1, 40), rng.randint(1, 40)), EXIF_FORMATS[ext], exif=block)
    start = data.find(block[6:])  # the TIFF structure inside (a TIFF file: its own first IFD)
    span = range(start, start + len(block) - 6) if start >= 0 else range(len(data))
    choice = rng.random()
    if choice < 0.5:
        data = mutate(data, [e for e in random_edits(rng) if e[0] != "truncate"], span)
    elif choice < 0.7 and ext == ".jpg":
        app1 = data.index(b"\xff\xe1")
        length = int.from_bytes(data[app1 + 2 : app1 + 4], "big")
        payload = data[app1 + 4 : app1 + 2 + length][: rng.randrange(length - 1)]
        segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        data = data[:app1] + segment + data[app1 + 2 + length :]
    elif choice < 0.85:
        data = mutate(data, random_edits(rng))
    if ext == ".png" and rng.random() < 0.7:
        data = fix_png_crcs(data)
    return ext, data


def animation_case(rng: random.Random) -> tuple[str, bytes]:
    """An animated GIF/WebP/PNG or multi-page TIFF of 1-64 frames, then broken later frames
    (edits in the second half), edits anywhere or a cut."""
    ext = rng.choice(sorted(ANIMATED_FORMATS))
    height, width = rng.randint(1, 32), rng.randint(1, 32)
    frames = [Image.fromarray(_pixels(rng, height, width)) for _ in range(rng.choice([1, 2, 3, 5, 17, 64]))]
    options = {"save_all": True, "append_images": frames[1:], "duration": rng.choice([0, 10, 100]), "loop": 0}
    if ext == ".gif":
        options["disposal"] = rng.randrange(4)
    buf = io.BytesIO()
    frames[0].save(buf, ANIMATED_FORMATS[ext], **options)
    data = buf.getvalue()
    choice = rng.random()
    if choice < 0.4:
        data = mutate(data, random_edits(rng), range(len(data) // 2, len(data)))
    elif choice < 0.7:
        data = mutate(data, random_edits(rng))
    elif choice < 0.85:
        data = data[: rng.randrange(len(data) // 2, len(data))]
    if ext == ".png" and rng.random() < 0.7:
        data = fix_png_crcs(data)
    return ext, data


def _claim(rng: random.Random) -> int:
    return rng.choice(HEADER_VALUES) if rng.random() < 0.8 else rng.randrange(2 ** rng.choice([8, 16, 32]))


def _field(value: int, size: int, order: str) -> bytes:
    return (value % 2 ** (8 * size)).to_bytes(size, order)  # type: ignore[arg-type]


def header_case(rng: random.Random) -> tuple[str, bytes]:
    """A small JPEG/PNG/GIF/BMP/WebP (lossy, lossless, extended)/TIFF whose header claims
    another width and height (zero, the bounds' edges, the fields' limits, random), now
    and then with edits anywhere."""
    kind = rng.choice(["jpg", "png", "gif", "bmp", "webp-vp8", "webp-vp8l", "webp-vp8x", "tiff"])
    pixels = _pixels(rng, rng.randint(1, 24), rng.randint(1, 24))
    width, height = _claim(rng), _claim(rng)
    if kind == "jpg":
        data = bytearray(_encode(pixels, "JPEG"))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = (height & 0xFFFF).to_bytes(2, "big") + (width & 0xFFFF).to_bytes(2, "big")
    elif kind == "png":
        data = bytearray(_encode(pixels, "PNG"))
        data[16:24] = (width & 0xFFFFFFFF).to_bytes(4, "big") + (height & 0xFFFFFFFF).to_bytes(4, "big")
        if rng.random() < 0.8:
            data = bytearray(fix_png_crcs(bytes(data)))
    elif kind == "gif":
        data = bytearray(_encode(pixels, "GIF"))
        data[6:10] = (width & 0xFFFF).to_bytes(2, "little") + (height & 0xFFFF).to_bytes(2, "little")
        frame = data.find(b"\x2c\x00\x00\x00\x00", 13)  # the first image descriptor at (0, 0)
        if frame > 0 and rng.random() < 0.5:
            size = (_claim(rng) & 0xFFFF).to_bytes(2, "little") + (_claim(rng) & 0xFFFF).to_bytes(2, "little")
            data[frame + 5 : frame + 9] = size
    elif kind == "bmp":
        data = bytearray(_encode(pixels, "BMP"))
        signed_width = -(width & 0x7FFFFFFF) if rng.random() < 0.1 else width & 0x7FFFFFFF
        signed_height = -(height & 0x7FFFFFFF) if rng.random() < 0.3 else height & 0x7FFFFFFF  # < 0: top-down
        data[18:26] = signed_width.to_bytes(4, "little", signed=True) + signed_height.to_bytes(4, "little", signed=True)
    elif kind == "tiff":
        data = bytearray(_encode(pixels, "TIFF"))
        ifd = int.from_bytes(data[4:8], "little")
        for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], "little"), 12):
            tag = int.from_bytes(data[entry : entry + 2], "little")
            size = 4 if int.from_bytes(data[entry + 2 : entry + 4], "little") == 4 else 2  # LONG or SHORT
            if tag in (256, 257):
                data[entry + 8 : entry + 8 + size] = _field(width if tag == 256 else height, size, "little")
    else:
        options = {"lossless": kind == "webp-vp8l"}
        if kind == "webp-vp8x":
            options["exif"] = b"Exif\x00\x00"  # an EXIF chunk makes the file extended (VP8X)
        data = bytearray(_encode(pixels, "WEBP", **options))
        chunk = bytes(data[12:16])
        if chunk == b"VP8X":
            data[24:30] = _field(width - 1, 3, "little") + _field(height - 1, 3, "little")
        elif chunk == b"VP8 ":
            data[26:30] = _field(width, 2, "little") + _field(height, 2, "little")
        elif chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little") & ~0xFFFFFFF
            bits |= ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
            data[21:25] = bits.to_bytes(4, "little")
    data = bytes(data)
    if rng.random() < 0.3:
        data = mutate(data, random_edits(rng))
    return "." + kind.split("-")[0], data


def metadata_case(rng: random.Random, seed: bytes) -> bytes:
    """The JSON header of a ``.safetensors`` checkpoint (its metadata: config, classes,
    preprocessing), with byte edits and hostile structures spliced in: deep nesting, long
    numbers and strings, escapes of control characters and lone surrogates."""
    text = seed[8 : 8 + int.from_bytes(seed[:8], "little")]
    if rng.random() < 0.6:
        text = mutate(text, random_edits(rng))
    if rng.random() < 0.5:
        depth = rng.choice([1, 15, 16, 17, 100, 1000, 100_000])
        hostile = rng.choice(
            [
                b"[" * depth + b"]" * depth,
                b'{"a":' * depth + b"1" + b"}" * depth,
                b"[" * depth,
                b"1" * rng.choice([10, 4300, 4301, 100_000]),
                b"1e" + b"9" * rng.choice([3, 400]),
                b'"' + b"\\u" + rng.choice([b"d800", b"0000", b"001b", b"202e"]) + b'"',
                b'"' + b"x" * rng.choice([10, 2**20]) + b'"',
                b'"\xff\xfe"',
            ]
        )
        pos = rng.randrange(len(text) + 1)
        text = text[:pos] + hostile + text[pos:]
    return text


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
    from mobilenet_v1.weights.google_tflite.reader import read_tflite

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


@pytest.mark.parametrize("mutate", [exif_case, header_case], ids=["exif", "header"])
@fuzz(60)
@given(seed=st.integers(0, 2**32 - 1))
def test_image_exif_and_header(tmp_path, mutate, seed):
    """EXIF blocks (any orientation, cut or edited) and image headers (sizes 0 to 2**32-1)."""
    ext, data = mutate(random.Random(seed))
    outcome(load_image, tmp_path / f"x{ext}", data)


@fuzz(40)
@given(seed=st.integers(0, 2**32 - 1))
def test_image_animation(tmp_path, seed):
    ext, data = animation_case(random.Random(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "... has N frames; using the first"
        result = outcome(load_image, tmp_path / f"x{ext}", data)
        if result == "ok":
            assert load_image(tmp_path / f"x{ext}").dim() == 3  # never the 4-D stack of all frames


@fuzz(60)
@given(seed=st.integers(0, 2**32 - 1))
def test_metadata_parser(st_seed, tmp_path, seed):
    untrusted = pytest.importorskip("mobilenet_v1.untrusted")
    path = tmp_path / "metadata.json"
    outcome(
        lambda p: untrusted.parse_json(p.read_bytes(), what=p.name), path, metadata_case(random.Random(seed), st_seed)
    )


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
