"""Reading images: the one lister of image files and the one decoder.

Every folder the project reads (training classes, evaluation folders, calibration
images) is listed by :func:`list_images`, and every file decoded by :func:`load_image`.

Image files come from outside and are untrusted. :func:`load_image` opens a file once,
refuses anything but a regular file of at most :data:`MAX_IMAGE_BYTES`, reads the
header from the first bytes and checks its width and height (at most
:data:`MAX_PIXELS` pixels, an aspect ratio of at most :data:`MAX_ASPECT_RATIO`:1)
before reading the rest or decoding anything, then decodes from memory. Like every
mainstream loader it turns the picture upright by its EXIF orientation (phones save
photos rotated, with orientation 6) and takes the first frame of an animation.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import stat
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import simplejpeg
import torch
from torchvision.transforms import v2

from ..untrusted import printable

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_ASPECT_RATIO",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "decode_image",
    "image_folder",
    "is_skipped_name",
    "list_images",
    "load_image",
    "to_image",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif")
# The formats PIL may open: those of IMAGE_EXTENSIONS (PIL's JPEG opens cameras' multi-picture
# MPO files too). PIL's rarer plugins are not offered untrusted files (EPS, for one, runs Ghostscript).
# HEIF/HEIC (phones' photos) through pillow-heif, AVIF through Pillow's own plugin
PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "HEIF", "AVIF")

MAX_IMAGE_BYTES = 256 * 2**20
"""Larger files are refused from their size alone (a 24-megapixel JPEG is ~10 MB, a 100-megapixel PNG ~300 MB
at worst; a training set's images are ~100 kB)."""
MAX_PIXELS = 178_956_970
"""Twice PIL's ``MAX_IMAGE_PIXELS``, where PIL raises ``DecompressionBombError`` (a 13,377 x 13,377 image;
537 MB as uint8 RGB): more is a decompression bomb. Between the two PIL only warns; that warning is silenced."""
MAX_ASPECT_RATIO = 50
"""Longer side / shorter side. Phone panoramas are 4:1 to 10:1; at 50:1 the centre crop of the evaluation
preset already sees 2% of the picture. The bound keeps the preset's resize of the shorter side small: its
output has at most ``resize`` x ``50 * resize`` pixels (256 x 12,800, 9.8 MB as uint8, at 1.0/224), where a
65,000 x 1 image would make it 256 x 16.6 M (12.8 GB)."""

HEAD_BYTES = 64 * 2**10  # the first read: the whole of most files, the header of every other
MAX_JPEG_SEGMENTS = 4096  # markers before the frame header; real files have < 300 (ICC profiles in many APP2)
# libjpeg's progressive script has 10 scans for colour images, mozjpeg's optimized ones up to ~20
MAX_JPEG_SCANS = 64
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_ORIENTATION_TAG = 0x0112
_frames_warned = False  # the first-frame warning is given once per process
# PIL logs what it refuses (e.g. "More samples per pixel than can be decoded") and raises; the raised
# error is our one line. Without a handler, Python's last resort would print the log record on stderr too.
logging.getLogger("PIL").addHandler(logging.NullHandler())


def is_skipped_name(name: str) -> bool:
    """Whether a file or folder name is never data: hidden names (``.*``, which covers the
    ``._*`` AppleDouble files macOS writes beside each file on foreign disks and in zips)
    and the ``__MACOSX`` folder of zips made on macOS."""
    return name.startswith(".") or name == "__MACOSX"


def list_images(folder: Path, others: Counter[str] | None = None) -> list[Path]:
    """The image files below ``folder`` (any depth), by extension, sorted.

    Only regular files (or links to them): a folder or FIFO named ``x.jpg`` is not an
    image. Hidden files and folders and ``__MACOSX`` folders are skipped at any depth
    (:func:`is_skipped_name`); links to folders are not followed. A sub-folder that
    cannot be listed is skipped; ``folder`` itself raises its ``OSError``.
    ``others``, when given, counts the other regular files by extension (what is left out).
    """
    found: list[Path] = []
    pending = [str(folder)]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if is_skipped_name(entry.name):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and _is_regular(entry):
                        found.append(Path(entry.path))
                    elif others is not None and _is_regular(entry):
                        others[os.path.splitext(entry.name)[1].lower() or "(no extension)"] += 1
        except PermissionError:
            if current == str(folder):
                raise
    return sorted(found)


def image_folder(folder: str | Path, what: str) -> list[Path]:
    """:func:`list_images` of a folder a user named as the ``what`` folder (``"calibration"``,
    ``"unlabeled"``), every way it can be unusable one error naming it:
    ``FileNotFoundError``/``NotADirectoryError`` for a missing folder or a file,
    ``PermissionError`` for one that cannot be listed, ``ValueError`` for one without images."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} path is not a folder: {folder}")
    try:
        images = list_images(folder)
    except PermissionError:
        raise PermissionError(f"{what} folder is not readable: {folder}") from None
    if not images:
        raise ValueError(f"no images in {what} folder {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return images


def _is_regular(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()  # follows a link; the directory entry's type answers without a stat
    except OSError:
        return False


def load_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3, H, W), upright.

    Grayscale, CMYK, palette, RGBA and 16-bit images are converted to 8-bit RGB; the EXIF
    orientation is applied (PIL's ``ImageOps.exif_transpose`` for all 8 values; invalid
    values and broken EXIF blocks are ignored); an animated GIF/WebP/PNG or a multi-page
    TIFF gives its first frame (a ``RuntimeWarning`` says so once per process). A missing
    file, one that is not a regular file, too large (:data:`MAX_IMAGE_BYTES`), claims too
    many pixels (:data:`MAX_PIXELS`) or too extreme a shape (:data:`MAX_ASPECT_RATIO`), is
    corrupt or not an image raises a one-line ``ValueError``/``FileNotFoundError`` naming
    it and the number; the sizes are checked from the header, before the rest of the file
    is read. JPEGs (most training sets) come as a (3, H, W) view of an (H, W, 3) array: the
    layout in which torchvision's uint8 resize takes its vectorized path (see :func:`_decode_jpeg`).
    """
    path = Path(path)
    with _open_regular(path) as f:
        data, jpeg = _read_checked(f, os.fstat(f.fileno()).st_size, path)
    return _decode(data, jpeg, path)


def decode_image(data: bytes, name: str = "upload") -> torch.Tensor:
    """:func:`load_image` for an image already in memory (an upload): the same checks, in
    the same order, and the same pixels; ``name`` stands for the file in its errors."""
    return _decode(*_read_checked(io.BytesIO(data), len(data), name), name)


def _read_checked(f: BinaryIO, size: int, name: str | Path) -> tuple[bytearray, tuple[int, int, int, int] | None]:
    """The bytes of ``f`` and its JPEG header (:func:`_jpeg_header`, ``None`` for other
    formats), the sizes checked from the header before the rest is read."""
    if size > MAX_IMAGE_BYTES:
        raise ValueError(
            f"cannot decode image {printable(name)}: {size} bytes, more than the {MAX_IMAGE_BYTES} allowed"
        )
    data = bytearray(_read(f, min(size, HEAD_BYTES)))
    jpeg = None
    if data.startswith(b"\xff\xd8"):
        jpeg = _jpeg_header(data, f, size, name)  # reads on as far as the scan, checks the size
    elif (claimed := _header_size(data)) is not None:
        _check_size(name, *claimed)
    data += _read(f, size - len(data))
    return data, jpeg


def _decode(data: bytearray, jpeg: tuple[int, int, int, int] | None, name: str | Path) -> torch.Tensor:
    if jpeg is not None:
        _check_scans(name, data, jpeg[3])
        image = _decode_jpeg(data, jpeg[0], jpeg[1])
        if image is not None:
            return _upright(image, jpeg[2])
    return _load_with_pil(bytes(data), name)


def _open_regular(path: Path) -> io.FileIO:
    """The file, opened once for reading; a FIFO is opened without blocking, then refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"image not found: {printable(path)}") from None
    except IsADirectoryError:  # the platforms that do not open folders
        raise FileNotFoundError(f"image not found: {printable(path)} (a folder, not a file)") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {printable(path)}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        raise FileNotFoundError(f"image not found: {printable(path)} ({kind}, not a file)")
    return io.FileIO(fd, "rb", closefd=True)


def _read(f: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes (fewer only at the end of the file)."""
    chunks, left = [], count
    while left > 0:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _check_size(path: str | Path, width: int, height: int) -> None:
    """Refuse a claimed size before any pixel is allocated (zero sizes are left to the decoder)."""
    if width < 1 or height < 1:
        return
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"cannot decode image {printable(path)}: {width}x{height} is {width * height} pixels, "
            f"more than the {MAX_PIXELS} allowed (a decompression bomb?)"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        ratio = max(width, height) / min(width, height)
        raise ValueError(
            f"cannot decode image {printable(path)}: {width}x{height} has an aspect ratio of {ratio:.0f}:1, "
            f"beyond the {MAX_ASPECT_RATIO}:1 allowed"
        )


def _header_size(head: bytes | bytearray) -> tuple[int, int] | None:
    """(width, height) from the fixed-place header of a PNG, GIF, BMP or WebP; ``None`` for
    other formats (TIFF keeps its size anywhere in the file: PIL reads it, from memory)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head.startswith(b"BM") and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER
            return int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
        width = int.from_bytes(head[18:22], "little", signed=True)
        return abs(width), abs(int.from_bytes(head[22:26], "little", signed=True))  # < 0: top-down rows
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]  # the canvas size, as PIL's WebP plugin reads it before decoding
        if chunk == b"VP8X":
            return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_header(data: bytearray, f: BinaryIO, size: int, path: str | Path) -> tuple[int, int, int, int]:
    """(width, height, EXIF orientation, offset of the first scan) of a JPEG, reading on from ``f`` into ``data`` only
    as far as the start of the scan; the size is checked as soon as the frame header is
    read. The walk over the markers is libjpeg's (fill bytes and stray bytes between
    segments are skipped); the orientation is that of the first Exif APP1 segment before
    the scan, as PIL reads it (1 when there is none or it is broken)."""
    pos, orientation, frame, exif_seen = 2, 1, None, False
    for _ in range(MAX_JPEG_SEGMENTS):
        while True:  # the next marker: 0xFF, any fill 0xFF bytes, then the marker code
            if pos + 2 > len(data) and not _read_more(data, f, size, pos + 2):
                break
            if data[pos] == 0xFF and data[pos + 1] not in (0xFF, 0x00):
                break
            pos += 1
        if pos + 2 > len(data):
            break
        marker = data[pos + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI, or the scan: the header ends
            break
        if pos + 4 > len(data) and not _read_more(data, f, size, pos + 4):
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if length < 2 or (end > len(data) and not _read_more(data, f, size, end)):
            break
        if marker in _SOF_MARKERS and length >= 8 and frame is None:
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            frame = int.from_bytes(data[pos + 7 : pos + 9], "big"), height
            _check_size(path, *frame)
        elif marker == 0xE1 and not exif_seen and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            exif_seen, orientation = True, _exif_orientation(bytes(data[pos + 10 : end])) or 1
        pos = end
    if frame is None:
        raise ValueError(f"cannot decode image {printable(path)}: truncated or corrupt JPEG (no frame header)")
    return frame[0], frame[1], orientation, pos


def _check_scans(path: str | Path, data: bytearray, start: int) -> None:
    """Refuse a JPEG of more scans than :data:`MAX_JPEG_SCANS`: each progressive scan is a
    pass over the whole image, so a small file of a thousand scans takes minutes to decode.
    Scan headers (0xFF 0xDA) cannot appear inside entropy-coded data (a 0xFF there is
    followed by 0x00 or a restart marker), so counting them from the first scan is exact."""
    scans = data.count(b"\xff\xda", start)
    if scans > MAX_JPEG_SCANS:
        raise ValueError(
            f"cannot decode image {printable(path)}: {scans} scans, more than the {MAX_JPEG_SCANS} "
            "a JPEG needs (each is a pass over the whole image)"
        )


def _read_more(data: bytearray, f: BinaryIO, size: int, needed: int) -> bool:
    """Extend ``data`` from ``f`` to at least ``needed`` bytes (in 64 KiB steps); False at the end."""
    if needed > size:
        return False
    data += _read(f, min(size, max(needed, len(data) + HEAD_BYTES)) - len(data))
    return len(data) >= needed


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 in an EXIF block (a TIFF header and IFDs), or
    ``None``; every offset is checked against the block."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "little" if tiff[0] == 0x49 else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        if int.from_bytes(tiff[entry : entry + 2], order) != _ORIENTATION_TAG:
            continue
        kind, n = int.from_bytes(tiff[entry + 2 : entry + 4], order), int.from_bytes(tiff[entry + 4 : entry + 8], order)
        width = {1: 1, 3: 2, 4: 4, 6: 1, 8: 2, 9: 4}.get(kind)  # the integer types (PIL reads any of them)
        if width is None or n != 1:
            return None
        return int.from_bytes(tiff[entry + 8 : entry + 8 + width], order, signed=kind in (6, 8, 9))
    return None


def _upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a (3, H, W) image by its EXIF orientation, as ``PIL.ImageOps.exif_transpose``
    does (2: mirror, 3: 180 degrees, 4: flip, 5: transpose, 6: 90 degrees clockwise,
    7: transverse, 8: 90 degrees counter-clockwise; anything else: as it is). A turned
    image is laid out as (H, W, 3), like the JPEG decoder's."""
    if orientation == 2:
        image = image.flip(-1)
    elif orientation == 3:
        image = image.flip(-2, -1)
    elif orientation == 4:
        image = image.flip(-2)
    elif orientation == 5:
        image = image.transpose(-2, -1)
    elif orientation == 6:
        image = image.transpose(-2, -1).flip(-1)
    elif orientation == 7:
        image = image.transpose(-2, -1).flip(-2, -1)
    elif orientation == 8:
        image = image.transpose(-2, -1).flip(-2)
    else:
        return image
    return image.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def _decode_jpeg(data: bytearray, width: int, height: int) -> torch.Tensor | None:
    """A JPEG file's bytes through libjpeg-turbo (simplejpeg), or ``None`` when it refuses them.

    The same pixels as torchvision's ``decode_image`` (both run libjpeg-turbo's default
    integer IDCT), in 0.2 instead of 0.4 ms at 224x224, and as an (H, W, 3) array, which
    makes the training crop's resize twice as fast (docs/training.md). Files simplejpeg
    refuses (CMYK, corrupt) go on to PIL and its errors; the size was checked from the header.
    """
    try:
        array = simplejpeg.decode_jpeg(data, "RGB")
    except ValueError:
        return None
    if array.shape != (height, width, 3):
        return None
    return torch.from_numpy(array).permute(2, 0, 1)


def _load_with_pil(data: bytes, path: str | Path) -> torch.Tensor:
    """Decode with PIL from memory: the size is checked from the header before decoding. The
    result is a (3, H, W) view of PIL's (H, W, 3) pixels, the layout of the JPEG fast path."""
    from PIL import Image, UnidentifiedImageError

    errors = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
    try:
        with warnings.catch_warnings():  # more than MAX_PIXELS is refused below, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _register_heif()
            img = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
        with img:
            image = _from_pil(img, path)
            _warn_first_frame(img, path)
    except UnidentifiedImageError:
        known = "JPEG/PNG/GIF/BMP/WebP/TIFF/HEIC/AVIF"
        raise ValueError(
            f"cannot decode image {printable(path)}: not a {known} file (unknown format or corrupt header)"
        ) from None
    except errors as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("cannot decode image"):
            raise  # our own check's line, already naming the file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot decode image {printable(path)}: {printable(message)}") from None
    return image


def _eight_bit(img: Any, name: str | Path) -> Any:
    """An image whose pixels are not 8-bit as one of 8 bits per channel, on its own scale:
    16-bit integers / 256, 32-bit (signed) integers / 2**23 (so a 32-bit TIFF does not saturate),
    floats in [0, 1] x 255 (a float TIFF is not black) or already in [0, 255], CIELAB
    through an ICC transform to sRGB. A range with no known scale is refused."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        low, high = img.getextrema() if img.mode == "I" else (0, 65535)
        if low < 0:
            raise ValueError(f"cannot decode image {printable(name)}: signed integer pixels (from {low})")
        scale = 2**23 if high > 65535 else 256
        return img.point(lambda v: v / scale).convert("L")
    if img.mode == "F":
        low, high = img.getextrema()
        if not (math.isfinite(low) and math.isfinite(high) and low >= 0 and high <= 255):
            span = f"from {low:g} to {high:g}"
            raise ValueError(f"cannot decode image {printable(name)}: float pixels {span} (known: [0, 1] or [0, 255])")
        return img.point(lambda v: v * 255 if high <= 1 else v).convert("L")
    if img.mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(img, transform)
    return img


@functools.cache
def _register_heif() -> None:
    """Let PIL open HEIF/HEIC files (pillow-heif's opener), once per process."""
    import pillow_heif

    pillow_heif.register_heif_opener()


def _from_pil(img: Any, name: str | Path) -> torch.Tensor:
    """A PIL image as 8-bit RGB (3, H, W), upright: any mode converted, 16-bit scaled down."""
    _check_size(Path(name), *img.size)
    img.load()
    frame = _eight_bit(img, name)
    if frame.mode != "RGB":  # (convert would copy an RGB image: 537 MB at the pixel cap)
        with warnings.catch_warnings():  # a palette's transparency is dropped with the alpha
            warnings.simplefilter("ignore", UserWarning)
            frame = frame.convert("RGB")
    image = _upright(v2.functional.pil_to_tensor(frame), _pil_orientation(img))  # (3, H, W) view of HWC
    if image.shape[-2] < 1 or image.shape[-1] < 1:
        raise ValueError(f"empty image: {printable(name)}")
    return image


def to_image(image: Any) -> torch.Tensor:
    """Any single image as a uint8 RGB tensor (3, H, W), as :func:`load_image` decodes a file.

    Takes a path (decoded by :func:`load_image`), a PIL image (converted like a decoded
    file, EXIF orientation applied), a tensor (C, H, W) or a NumPy array (H, W, C) with 1
    or 3 channels: uint8, or floating point in [0, 1] (torchvision's convention, rounded to
    8 bits like a photo). Anything else is a ``ValueError`` naming what it got.
    """
    from PIL import Image

    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return _from_pil(image, "PIL image")
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"expected a NumPy image of shape (H, W, C), got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"expected an image path, PIL image, tensor or NumPy array, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor of shape (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    if min(image.shape[1:]) < 1:
        raise ValueError(f"empty image tensor of shape {tuple(image.shape)}")
    _check_size(Path("image tensor"), image.shape[2], image.shape[1])
    if image.is_floating_point():
        if not (bool(torch.isfinite(image).all()) and 0 <= float(image.min()) <= float(image.max()) <= 1):
            raise ValueError("a floating-point image must hold finite values in [0, 1]")
        image = image.mul(255).round_().to(torch.uint8)
    elif image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 or floating-point image tensor, got {image.dtype}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _pil_orientation(img) -> int:
    """The EXIF orientation PIL reads (``getexif`` after decoding, as ``exif_transpose``); 1 when broken."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block is ignored, as by every mainstream loader
        return 1
    return value if isinstance(value, int) else 1


def _warn_first_frame(img, path: Path) -> None:
    """Warn, once per process, that an animation or multi-page file gives its first frame."""
    global _frames_warned
    if _frames_warned or img.format == "MPO":  # MPO's second picture is a preview, not a frame
        return
    try:
        if not getattr(img, "is_animated", False):
            return
        frames = img.n_frames
    except Exception:  # a broken later frame: the first one was decoded
        frames = "several"
    _frames_warned = True
    warnings.warn(f"{printable(path)} has {frames} frames; using the first", RuntimeWarning, stacklevel=4)
