"""Image decoding and the preprocessing presets of Google's models (torchvision v2).

Google's MobileNet V1 checkpoints take RGB scaled to [-1, 1] (``x / 127.5 - 1``); the
evaluation preset resizes the shorter side to ``resolution / crop_fraction`` and takes a
centre crop (TF-slim evaluates on a central 87.5% crop). Training follows the paper's
"less augmentation" (Section 3.2): a random resized crop that keeps small crops limited,
and horizontal flips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import simplejpeg
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

__all__ = ["IMAGE_EXTENSIONS", "Preprocessing", "eval_transform", "float_input", "load_image", "train_transform"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_INTERPOLATION = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its input: the ``transforms`` recipe of a weights entry."""

    resolution: int
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # (x - 0.5) / 0.5: [-1, 1]
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose from {', '.join(_INTERPOLATION)}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")

    @property
    def resize(self) -> int:
        return round(self.resolution / self.crop_fraction)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


def load_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor (3, H, W).

    Grayscale, CMYK, palette, RGBA and 16-bit images are converted to 8-bit RGB. A missing,
    corrupt or non-image file raises a one-line ``ValueError``/``FileNotFoundError`` naming it.
    JPEGs (most training sets) come as a (3, H, W) view of an (H, W, 3) array: the layout
    in which torchvision's uint8 resize takes its vectorized path (see :func:`_decode_jpeg`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = path.read_bytes()  # JPEG and torchvision decode these bytes; PIL (PNG, rarer formats) reopens
    image = _decode_jpeg(data)
    if image is not None:
        return image
    if _header_format(path) == "PNG":  # torchvision's libpng binding can crash on a corrupt PNG
        image = _load_with_pil(path)
    else:
        try:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError):
            image = _load_with_pil(path)  # BMP, TIFF and other formats torchvision does not decode
    if image.dtype != torch.uint8:  # 16-bit PNG
        image = (image.to(torch.float32) / 257.0).round().to(torch.uint8)
    if image.shape[-2] < 1 or image.shape[-1] < 1:
        raise ValueError(f"empty image: {path}")
    return image


def _decode_jpeg(data: bytes) -> torch.Tensor | None:
    """A JPEG file's bytes through libjpeg-turbo (simplejpeg), or ``None`` for anything else.

    The same pixels as torchvision's ``decode_image`` (both run libjpeg-turbo's default
    integer IDCT), in 0.2 instead of 0.4 ms at 224x224 with the header read, and as an
    (H, W, 3) array, which makes the training crop's resize twice as fast (docs/training.md).
    Files simplejpeg refuses (CMYK, corrupt, a bomb) go on to the general path and its errors.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    from PIL import Image

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if Image.MAX_IMAGE_PIXELS and height * width > 2 * Image.MAX_IMAGE_PIXELS:
            return None
        array = simplejpeg.decode_jpeg(data, "RGB")
    except ValueError:
        return None
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        return None
    return torch.from_numpy(array).permute(2, 0, 1)


def _header_format(path: Path) -> str | None:
    """The format named by the file's header (PIL reads only the header). An image of more
    than twice ``PIL.Image.MAX_IMAGE_PIXELS`` is refused here, before any decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.format
    except Image.DecompressionBombError as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        with path.open("rb") as f:  # a PNG with a broken header still goes to PIL, which names the problem
            return "PNG" if f.read(8) == b"\x89PNG\r\n\x1a\n" else None


def _load_with_pil(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                img = img.point(lambda v: v / 256).convert("L")
            rgb = img.convert("RGB")
            return v2.functional.pil_to_tensor(rgb)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from None


def eval_transform(preset: Preprocessing, *, to_float: bool = True) -> v2.Compose:
    """Resize the shorter side, centre-crop to the model's resolution, scale to [-1, 1].

    With ``to_float=False`` the result stays uint8 (what Google's uint8 TFLite models take).
    """
    steps: list[Any] = [
        v2.Resize(preset.resize, interpolation=_INTERPOLATION[preset.interpolation], antialias=True),
        v2.CenterCrop(preset.resolution),
    ]
    if to_float:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(preset.mean, preset.std)]
    return v2.Compose(steps)


def float_input(batch: torch.Tensor, preset: Preprocessing) -> torch.Tensor:
    """uint8 (N, 3, H, W) crops -> the float input of the preset (``x / 127.5 - 1`` for Google's).

    Elementwise, so the result keeps the batch's device and memory format: the training
    loop moves uint8 batches (a quarter of the bytes of float32) and normalizes them there.
    """
    mean = torch.tensor(preset.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preset.std, device=batch.device).view(1, 3, 1, 1)
    return batch.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)  # one new tensor, not three


def train_transform(
    preset: Preprocessing,
    *,
    min_scale: float = 0.35,
    hflip: bool = True,
    strong: bool = False,
    to_float: bool = True,
) -> v2.Compose:
    """Training augmentation. The paper uses less than Inception (Section 3.2): random
    resized crops limited to at least ``min_scale`` of the image, and flips. ``strong``
    adds TrivialAugment and random erasing (for the "modern" recipe). With
    ``to_float=False`` the result stays uint8, for :func:`float_input` on the whole batch;
    random erasing then fills with the preset's mean colour in uint8 (what 0 is after
    normalization)."""
    steps: list[Any] = [
        v2.RandomResizedCrop(
            preset.resolution,
            scale=(min_scale, 1.0),
            interpolation=_INTERPOLATION[preset.interpolation],
            antialias=True,
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if strong:
        steps.append(v2.TrivialAugmentWide(interpolation=_INTERPOLATION[preset.interpolation]))
    if to_float:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(preset.mean, preset.std)]
    if strong:
        steps.append(v2.RandomErasing(p=0.25, value=0 if to_float else [round(255 * m) for m in preset.mean]))
    return v2.Compose(steps)
