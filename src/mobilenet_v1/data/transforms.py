"""The preprocessing presets of Google's models and the training augmentation (torchvision v2).

Google's MobileNet V1 checkpoints take RGB scaled to [-1, 1] (``x / 127.5 - 1``); the
evaluation preset resizes the shorter side to ``resolution / crop_fraction`` and takes a
centre crop (TF-slim evaluates on a central 87.5% crop). Training follows the paper's
"less augmentation" (Section 3.2): a random resized crop that keeps small crops limited,
and horizontal flips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from .images import MAX_ASPECT_RATIO

__all__ = ["LimitAspectRatio", "Preprocessing", "eval_transform", "float_input", "train_transform"]
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


def eval_transform(preset: Preprocessing, *, to_float: bool = True) -> v2.Compose:
    """Resize the shorter side, centre-crop to the model's resolution, scale to [-1, 1].

    Takes a PIL image, a NumPy HWC array or a uint8 (3, H, W) tensor, and returns a plain
    tensor (torchvision's ``ImageClassification`` preset contract); a PIL image is read into
    a uint8 tensor first, so it gives exactly what its tensor gives. With
    ``to_float=False`` the result stays uint8 (what Google's uint8 TFLite models take).
    An image longer than :data:`~.images.MAX_ASPECT_RATIO` times its width (or the
    reverse) raises ``ValueError`` before the resize (:class:`LimitAspectRatio`).
    """
    steps: list[Any] = [
        v2.ToImage(),
        LimitAspectRatio(),
        v2.Resize(preset.resize, interpolation=_INTERPOLATION[preset.interpolation], antialias=True),
        v2.CenterCrop(preset.resolution),
    ]
    if to_float:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(preset.mean, preset.std)]
    return v2.Compose([*steps, v2.ToPureTensor()])


class LimitAspectRatio:
    """Refuse an image whose aspect ratio is beyond :data:`~.images.MAX_ASPECT_RATIO` (a
    ``ValueError`` naming its size), and pass any other through unchanged.

    The evaluation preset resizes the shorter side to ``resize``, so the longer one becomes
    ``resize`` times the aspect ratio: 256 x 16.6 M pixels (12.8 GB) for a 65,000 x 1 image
    at 1.0/224, at most 256 x 12,800 (9.8 MB as uint8) within the bound. :func:`~.images.load_image`
    refuses such files from their header; this step guards images given directly (PIL
    images, arrays, tensors). The training crop needs no guard: it crops before resizing.
    """

    def __call__(self, image: Any) -> Any:
        height, width = v2.functional.get_size(image)
        if min(height, width) >= 1 and max(height, width) > MAX_ASPECT_RATIO * min(height, width):
            raise ValueError(
                f"image of {width}x{height} pixels: aspect ratio {max(height, width) / min(height, width):.0f}:1 "
                f"is beyond the {MAX_ASPECT_RATIO}:1 allowed (its resized shorter side would make the longer one huge)"
            )
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max={MAX_ASPECT_RATIO})"


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
