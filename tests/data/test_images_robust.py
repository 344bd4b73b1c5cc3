"""Real-world and hostile image files: phone photos with an EXIF orientation, animations,
headers that claim huge or extreme sizes, files too large to read, and data folders from
real machines (hidden files, macOS metadata, FIFOs). Each is decoded upright, first frame
only, or refused with one line naming the file and the number, before the file is read
whole or any pixel is allocated; through the CLI: exit code 2, one stderr line, nothing written.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.cli import main
from mobilenet_v1.data import images
from mobilenet_v1.data.folders import find_classes
from mobilenet_v1.data.images import MAX_ASPECT_RATIO, MAX_IMAGE_BYTES, MAX_PIXELS, list_images, load_image
from mobilenet_v1.data.transforms import Preprocessing, eval_transform
from mobilenet_v1.weights import save_safetensors

PIXELS = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # H 30, W 40: not square
SAVE = {"jpg": {"quality": 95}, "png": {}, "webp": {"lossless": True}, "tiff": {}}


def save_with_orientation(path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(PIXELS).save(path, exif=exif.tobytes(), **SAVE[path.suffix[1:]])
    return path


def pil_upright(path: Path) -> torch.Tensor:
    """What PIL's ``ImageOps.exif_transpose`` gives: the reference."""
    with Image.open(path) as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    return torch.from_numpy(upright.copy()).permute(2, 0, 1)


def png(width: int, height: int, rows: bytes = b"\x00") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid small JPEG whose frame header (SOF0) is patched to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def bytes_read(monkeypatch) -> list[int]:
    """Every read of ``load_image``, in bytes."""
    reads: list[int] = []
    real = images._read

    def counting(f, count):
        out = real(f, count)
        reads.append(len(out))
        return out

    monkeypatch.setattr(images, "_read", counting)
    return reads


@pytest.fixture
def warn_again(monkeypatch):
    """The first-frame warning is given once per process: make this test's call the first."""
    monkeypatch.setattr(images, "_frames_warned", False)


# --------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tiff"])
@pytest.mark.parametrize("orientation", range(10))  # 0 and 9 are invalid: left as they are
def test_exif_orientation_gives_the_upright_picture(tmp_path, ext, orientation):
    path = save_with_orientation(tmp_path / f"phone.{ext}", orientation)
    got, expected = load_image(path), pil_upright(path)
    assert torch.equal(got, expected)
    turned = orientation in (5, 6, 7, 8)
    assert got.shape == ((3, 40, 30) if turned else (3, 30, 40))
    if ext == "jpg" and orientation in range(2, 9):  # the fast path's layout is kept: (H, W, 3) underneath
        assert got.permute(1, 2, 0).is_contiguous()


def test_phone_photo_orientation_6_is_turned_clockwise(tmp_path):
    """Orientation 6 (how phones save a portrait photo): the stored picture is turned 90 degrees clockwise."""
    stored = torch.from_numpy(PIXELS.copy()).permute(2, 0, 1)
    got = load_image(save_with_orientation(tmp_path / "portrait.png", 6))
    assert torch.equal(got, torch.rot90(stored, k=-1, dims=(1, 2)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_through_the_pil_path_of_a_jpeg(tmp_path, monkeypatch, orientation):
    """A JPEG that simplejpeg refuses goes to PIL: turned the same way as by the fast path."""
    path = save_with_orientation(tmp_path / "photo.jpg", orientation)
    fast = load_image(path)
    monkeypatch.setattr(images, "_decode_jpeg", lambda data, width, height: None)
    assert torch.equal(load_image(path), fast)


def test_orientation_of_a_cmyk_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(PIXELS).convert("CMYK").save(tmp_path / "turned.jpg", exif=exif.tobytes())
    Image.fromarray(PIXELS).convert("CMYK").save(tmp_path / "stored.jpg")
    stored = load_image(tmp_path / "stored.jpg")
    assert torch.equal(load_image(tmp_path / "turned.jpg"), torch.rot90(stored, k=1, dims=(1, 2)))


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00",  # empty
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD0 offset far beyond the block
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",  # 65535 entries claimed, none there
        b"Exif\x00\x00XX*\x00\x08\x00\x00\x00",  # not a TIFF header
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x02\x00\x00\x00\x06\x00\x06\x00",  # count 2
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00",  # entry cut short
    ],
)
def test_broken_exif_is_ignored(tmp_path, exif):
    path = tmp_path / "broken_exif.jpg"
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG")
    data = buf.getvalue()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:])
    assert load_image(path).shape == (3, 30, 40)


# --------------------------------------------------------------------------------------
# Animations: the first frame, one warning per process


def _frames() -> list[Image.Image]:
    return [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(5)]


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.png", "pages.tiff"])
def test_animation_gives_its_first_frame_and_warns_once(tmp_path, warn_again, name):
    first, *rest = _frames()
    first.save(tmp_path / name, save_all=True, append_images=rest, duration=50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            image = load_image(tmp_path / name)
            assert image.shape == (3, 20, 30) and int(image.max()) == 0  # 3-D, the first (black) frame
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert messages == [f"{tmp_path / name} has 5 frames; using the first"]


def test_animation_with_a_broken_later_frame(tmp_path, warn_again):
    first, *rest = _frames()
    first.save(tmp_path / "anim.gif", save_all=True, append_images=rest, duration=50)
    data = (tmp_path / "anim.gif").read_bytes()
    (tmp_path / "broken.gif").write_bytes(data[: len(data) * 2 // 3])  # frames 3-5 cut off
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert load_image(tmp_path / "broken.gif").shape == (3, 20, 30)


def test_animated_gif_in_training_data_is_one_image(tmp_path):
    """The dataset stacks (3, H, W) crops: a 4-D tensor from an animation crashed the epoch."""
    from mobilenet_v1.data.folders import ImageFolder
    from mobilenet_v1.data.transforms import train_transform

    first, *rest = _frames()
    first.save(tmp_path / "anim.gif", save_all=True, append_images=rest, duration=50)
    dataset = ImageFolder([(tmp_path / "anim.gif", 0)], train_transform(Preprocessing(32)))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        crop, label = dataset[0]
    assert crop.shape == (3, 32, 32) and label == 0


# --------------------------------------------------------------------------------------
# Sizes: checked from the header, before the file is read whole or decoded


def test_wide_jpeg_65000x1_is_refused_from_its_header(tmp_path, bytes_read):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (65000, 1)).save(path)
    assert path.stat().st_size < 100_000  # a small file ...
    with pytest.raises(ValueError, match=r"wide\.jpg: 65000x1 has an aspect ratio of 65000:1, beyond the 50:1"):
        load_image(path)  # ... that made predict use 12.8 GB at 1.0/224
    assert sum(bytes_read) <= images.HEAD_BYTES


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("bomb.png", png(100_000, 100_000), "100000x100000 is 10000000000 pixels, more than the 178956970"),
        ("bomb.jpg", jpeg_claiming(60_000, 60_000), "60000x60000 is 3600000000 pixels"),
        ("bomb.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00" * 40, "65535x65535"),
        ("bomb.bmp", b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 30000, -30000) + b"\x00" * 40, "30000x30000"),
        ("bomb.webp", b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\x00" * 8 + b"\xff\x3f\x00\xff\x3f\x00", "16384x16384"),
        ("tall.png", png(1, 51), "1x51 has an aspect ratio of 51:1"),
        ("wide.gif", b"GIF89a" + struct.pack("<HH", 5000, 2) + b"\x00" * 40, "5000x2 has an aspect ratio of 2500:1"),
    ],
)
def test_header_claiming_too_much_is_refused_before_reading_on(tmp_path, bytes_read, name, data, needle):
    """The claim is refused from the first read even with 100 MB after the header (sparse)."""
    path = tmp_path / name
    with path.open("wb") as fh:
        fh.write(data)
        fh.truncate(100 * 2**20)
    with pytest.raises(ValueError, match=re.escape(needle)) as info:
        load_image(path)
    assert name in str(info.value) and len(str(info.value).splitlines()) == 1
    assert sum(bytes_read) <= images.HEAD_BYTES


def test_aspect_ratio_bound(tmp_path):
    Image.new("RGB", (MAX_ASPECT_RATIO, 1), (9, 9, 9)).save(tmp_path / "ok.png")
    Image.new("RGB", (1, MAX_ASPECT_RATIO + 1)).save(tmp_path / "tall.png")
    assert load_image(tmp_path / "ok.png").shape == (3, 1, MAX_ASPECT_RATIO)
    with pytest.raises(ValueError, match=r"tall\.png: 1x51 has an aspect ratio of 51:1, beyond the 50:1 allowed"):
        load_image(tmp_path / "tall.png")


def test_file_larger_than_the_bound_is_refused_from_its_size(tmp_path, bytes_read):
    """A 1 GiB (sparse) file with a valid small JPEG at its start: nothing is read."""
    path = tmp_path / "huge.jpg"
    with path.open("wb") as fh:
        fh.write(jpeg_claiming(40, 30))
        fh.truncate(2**30)
    with pytest.raises(ValueError, match=f"huge.jpg: {2**30} bytes, more than the {MAX_IMAGE_BYTES} allowed"):
        load_image(path)
    assert bytes_read == []


@pytest.mark.parametrize("ext", ["jpg", "png", "gif", "webp", "bmp", "tiff"])
def test_a_file_is_read_once(tmp_path, bytes_read, ext):
    path = tmp_path / f"photo.{ext}"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    assert load_image(path).shape == (3, 300, 400)
    assert sum(bytes_read) == path.stat().st_size


def test_jpeg_with_a_large_header_is_read_on_to_its_frame_header(tmp_path, bytes_read):
    """An ICC profile of 200 kB in APP2 segments before the frame header: read on, once."""
    path = tmp_path / "icc.jpg"
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "JPEG")
    data = buf.getvalue()
    app2 = b"".join(b"\xff\xe2" + struct.pack(">H", 65000) + bytes(64998) for _ in range(3))
    path.write_bytes(data[:2] + app2 + data[2:])
    assert load_image(path).shape == (3, 30, 40)
    assert sum(bytes_read) == path.stat().st_size


def test_pixel_cap_is_pils(tmp_path):
    """The cap is where PIL raises DecompressionBombError (twice its MAX_IMAGE_PIXELS, 179 M pixels): one more
    is refused in one line, and below it PIL's DecompressionBombWarning is not shown."""
    assert 2 * Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    side = int(MAX_PIXELS**0.5) + 1
    (tmp_path / "big.png").write_bytes(png(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning
        with pytest.raises(ValueError, match=f"{side}x{side} is {side * side} pixels, more than the {MAX_PIXELS}"):
            load_image(tmp_path / "big.png")


def tiff_with(tags: dict[int, int]) -> bytes:
    """A small TIFF with the values of some tags patched (TIFF keeps them anywhere: PIL reads them)."""
    buf = io.BytesIO()
    Image.fromarray(PIXELS).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = int.from_bytes(data[4:8], "little")
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], "little"), 12):
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in tags:
            data[entry + 8 : entry + 12] = struct.pack("<I" if kind == 4 else "<HH", tags[tag], *[0][: kind != 4])
    return bytes(data)


def tiff_claiming(width: int, height: int) -> bytes:
    return tiff_with({256: width, 257: height})


@pytest.mark.parametrize(
    "claim, needle",
    [((60000, 60000), "3600000000 pixels"), ((5000, 20), "5000x20 has an aspect ratio of 250:1")],
)
def test_tiff_claiming_too_much_is_refused_before_decoding(tmp_path, claim, needle):
    (tmp_path / "bomb.tiff").write_bytes(tiff_claiming(*claim))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=re.escape(needle)):
            load_image(tmp_path / "bomb.tiff")


def test_eval_transform_refuses_extreme_aspect_before_resizing():
    """A 65,000 x 1 tensor given directly would be resized to 256 x 16.6 M pixels (12.8 GB)."""
    transform = eval_transform(Preprocessing(224))
    assert transform(torch.zeros(3, 1, MAX_ASPECT_RATIO, dtype=torch.uint8)).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="image of 65000x1 pixels: aspect ratio 65000:1 is beyond the 50:1"):
        transform(torch.zeros(3, 1, 65000, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1x51 pixels"):
        transform(Image.new("RGB", (1, 51)))


def test_resize_of_the_most_extreme_allowed_image_stays_small():
    """Within the bound the preset's resize output is at most 256 x 12,800 pixels (1.0/224)."""
    resize = eval_transform(Preprocessing(224), to_float=False).transforms[2]
    assert tuple(resize(torch.zeros(3, 1, MAX_ASPECT_RATIO, dtype=torch.uint8)).shape) == (3, 256, 12800)


# --------------------------------------------------------------------------------------
# Files that are not regular files; names that are not one line


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(FileNotFoundError, match=r"image not found: .*x\.jpg \(a FIFO, not a file\)"):
        load_image(fifo)  # opening a FIFO for reading would wait for a writer forever


def test_folder_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(FileNotFoundError, match=r"image not found: .*x\.jpg \(a folder, not a file\)"):
        load_image(tmp_path / "x.jpg")


def test_control_characters_in_a_file_name_stay_on_one_line(tmp_path):
    path = tmp_path / "evil\nname\x1b[31m.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError) as info:
        load_image(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "\x1b" not in message and "evil\\x0aname\\x1b[31m.jpg" in message


# --------------------------------------------------------------------------------------
# Data folders from real machines


def _folder_from_a_mac(root: Path) -> Path:
    """A class folder as unzipped from a macOS zip: AppleDouble files, __MACOSX, hidden folders."""
    for name in ("ant", "bee"):
        (root / name / "sub").mkdir(parents=True)
        Image.fromarray(PIXELS).save(root / name / "1.jpg")
        Image.fromarray(PIXELS).save(root / name / "sub" / "2.png")
        (root / name / "._1.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (root / name / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (root / name / ".thumbnails").mkdir()
        Image.fromarray(PIXELS).save(root / name / ".thumbnails" / "1.jpg")
        (root / name / "__MACOSX").mkdir()
        Image.fromarray(PIXELS).save(root / name / "__MACOSX" / "3.jpg")
    (root / "__MACOSX" / "ant").mkdir(parents=True)
    (root / "__MACOSX" / "ant" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    os.mkfifo(root / "ant" / "fifo.jpg")
    (root / "ant" / "folder.jpg").mkdir()
    return root


def test_list_images_skips_hidden_macos_metadata_and_non_files(tmp_path):
    root = _folder_from_a_mac(tmp_path / "data")
    (root / "ant" / "link.jpg").symlink_to(root / "bee" / "1.jpg")
    listed = [p.relative_to(root).as_posix() for p in list_images(root)]
    assert listed == ["ant/1.jpg", "ant/link.jpg", "ant/sub/2.png", "bee/1.jpg", "bee/sub/2.png"]
    assert list_images(root / "__MACOSX") == []


def test_list_images_keeps_the_order_of_a_sorted_rglob(tmp_path):
    """The order decides the train/val split: the same as the lister it replaces."""
    for name in ("b", "a", "a/z", "a b", "A", "a-1"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        for file in ("x.jpg", "X.JPG", "y.png", "_1.jpg", "a b.jpg"):
            (tmp_path / name / file).write_bytes(b"")
    expected = sorted(p for p in tmp_path.rglob("*") if p.suffix.lower() in images.IMAGE_EXTENSIONS and p.is_file())
    assert list_images(tmp_path) == expected


def test_find_classes_ignores_macos_metadata(tmp_path):
    """``__MACOSX`` holds only ``._*`` files, which the lister skips: it never becomes a class."""
    root = _folder_from_a_mac(tmp_path / "data")
    classes = find_classes(root)
    assert list(classes) == ["ant", "bee"]
    assert all(len(files) == 2 for files in classes.values())


def test_list_images_of_an_unreadable_folder_raises(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads folders without read permission")
    (tmp_path / "locked").mkdir(mode=0o000)
    try:
        with pytest.raises(PermissionError):
            list_images(tmp_path / "locked")
    finally:
        (tmp_path / "locked").chmod(0o700)


# --------------------------------------------------------------------------------------
# Through the CLI: one line, exit code 2, nothing written


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_images")
    meta = {"resolution": 32, "classes": ["a", "b", "c"], "preprocessing": Preprocessing(32).to_dict()}
    tiny = save_safetensors(mobilenet_v1(alpha=0.25, num_classes=3), d / "tiny.safetensors", meta)
    Image.new("RGB", (65000, 1)).save(d / "wide.jpg")
    (d / "bomb.jpg").write_bytes(jpeg_claiming(60000, 60000))
    (d / "bomb.png").write_bytes(png(100_000, 100_000))
    (d / "tall.png").write_bytes(png(1, 51))
    with (d / "huge.jpg").open("wb") as fh:
        fh.write(jpeg_claiming(40, 30))
        fh.truncate(2**30)
    (d / "samples.tiff").write_bytes(tiff_with({277: 19}))  # PIL logs its refusal: no second line
    os.mkfifo(d / "fifo.jpg")
    (d / "folder.jpg").mkdir()
    (d / "nameless_frame.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    first, *rest = _frames()
    first.save(d / "anim.gif", save_all=True, append_images=rest, duration=50)
    save_with_orientation(d / "phone.jpg", 6)
    return d, tiny


@pytest.mark.parametrize(
    "name, needle",
    [
        ("wide.jpg", "65000x1 has an aspect ratio of 65000:1, beyond the 50:1 allowed"),
        ("bomb.jpg", "60000x60000 is 3600000000 pixels, more than the 178956970 allowed"),
        ("bomb.png", "100000x100000 is 10000000000 pixels"),
        ("tall.png", "1x51 has an aspect ratio of 51:1"),
        ("huge.jpg", "1073741824 bytes, more than the 268435456 allowed"),
        ("samples.tiff", "not a JPEG/PNG/GIF/BMP/WebP/TIFF/HEIC/AVIF file (unknown format or corrupt header)"),
        ("fifo.jpg", "(a FIFO, not a file)"),
        ("folder.jpg", "(a folder, not a file)"),
        ("nameless_frame.jpg", "truncated or corrupt JPEG (no frame header)"),
    ],
)
def test_cli_predict_bad_image_one_line_exit_2(cli, capsys, name, needle):
    d, tiny = cli
    before = sorted(p.name for p in d.iterdir())
    code = main(["predict", str(d / name), "--weights", str(tiny)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and needle in lines[0], err
    assert lines[0].startswith("mobilenet-v1: error: ")
    assert sorted(p.name for p in d.iterdir()) == before


def test_cli_predict_phone_photo_and_animation(cli, capsys, warn_again):
    d, tiny = cli
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["predict", str(d / "phone.jpg"), str(d / "anim.gif"), "--weights", str(tiny), "--json"])
    assert code == 0, capsys.readouterr().err
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [
        f"{d / 'anim.gif'} has 5 frames; using the first"
    ]


def test_no_second_line_from_pil_logging_in_a_subprocess(cli):
    """PIL logs what it refuses in a TIFF; outside pytest (no logging handlers) that record
    must not reach stderr beside the one error line."""
    import subprocess
    import sys

    d, tiny = cli
    cmd = [sys.executable, "-m", "mobilenet_v1", "predict", str(d / "samples.tiff"), "--weights", str(tiny)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "samples.tiff" in proc.stderr, proc.stderr
