"""Export to LiteRT (``.tflite``): float32, or uint8 computed exactly as the int8 emulation.

The flatbuffer is written here (:mod:`.schema`, :mod:`.graph`) rather than by a
converter, so that the uint8 file is Google's own form (per-tensor uint8 activations
and weights, int32 biases, fused ReLU6) with exactly the grids chosen
(:mod:`.grids`), which is what the int8-exact emulation of
:mod:`mobilenet_v1.weights.google_tflite.int8` runs: the written file is checked against it
byte for byte on LiteRT's default (XNNPACK) path, and the float file against PyTorch.
docs/deployment.md measures this choice against Google's PyTorch converter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ...data.transforms import Preprocessing
from ...files import atomic_write
from ...fold import fuse_bn
from ...model import MobileNetV1
from ...weights.google_tflite.int8 import Int8MobileNetV1
from ...weights.google_tflite.reader import read_tflite
from ...weights.grids import Int8Grids, correct_biases, layers_on_grids
from ..common import FP32_TOLERANCE, ExportReport, compare_with_torch, metadata_props, random_inputs
from ..int8 import check_qat_grids, grids_used, per_channel_int8, per_tensor_uint8
from ..qat import qat_finetune
from .graph import build_graph, conv_layers
from .grids import calibrated_grids, kept_grids
from .runtime import METADATA_NAME, LiteRTModel
from .schema import write_model

__all__ = ["MAX_BYTE_DIFF", "export_tflite"]

MAX_BYTE_DIFF = 0  # LiteRT's uint8 output must equal the int8-exact emulation's, byte for byte
CHECK_IMAGES = 8  # random inputs when no calibration images are given


def export_tflite(
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str] | None,
    int8: bool = False,
    calibration: torch.Tensor | None = None,
    grids: Int8Grids | None = None,
    qat_steps: int = 0,
) -> ExportReport:
    """``model`` to a LiteRT ``.tflite`` at ``path`` (batch 1, NHWC input), checked before
    it is renamed into place (nothing is left behind on failure).

    float32 (``int8=False``): the logits, checked against PyTorch on ``calibration`` or
    random inputs (max |logit diff| <= ``FP32_TOLERANCE``). uint8 (``int8=True``): uint8
    pixels in, Google's uint8 softmax out; the layers that lie on ``grids`` (Google's own
    or a QAT checkpoint's, :func:`~mobilenet_v1.weights.grids.int8_grids`) keep them, the
    rest are calibrated on ``calibration`` (a preprocessed float batch,
    :func:`~mobilenet_v1.deploy.quantize.load_batch`),
    after ``qat_steps`` of quantization-aware fine-tuning on it; LiteRT's output must equal
    the int8-exact emulation's byte for byte, and is compared with the float model.
    """
    if qat_steps and not int8:
        raise ValueError(f"qat_steps={qat_steps} needs fmt='tflite-int8'")
    check_qat_grids(model, grids, qat_steps)
    res = preprocessing.resolution
    folded = fuse_bn(model)
    layers = conv_layers(folded, res)
    grid_map, channels = None, False
    if int8:
        source = folded
        if qat_steps:
            if calibration is None:
                raise ValueError(f"qat_steps={qat_steps} needs calibration images")
            source = qat_finetune(model, calibration, steps=qat_steps, float_layers=0)
            layers = conv_layers(source, res)
        keep = layers_on_grids(source, grids) if grids is not None else [False] * len(layers)
        if not all(keep) and calibration is None:
            raise ValueError(
                "fmt='tflite-int8' needs calibration images for the layers without Google's int8 grids "
                f"({len(keep) - sum(keep)} of {len(keep)})"
            )
        # TFLite's int8 scheme (per-channel weights) for a QAT run's per-channel grids and after the
        # export's own QAT steps (per-channel weights too, deploy.qat), else Google's uint8 form
        channels = bool(qat_steps) or (grids is not None and grids.per_channel and any(keep))
        if not all(keep):  # the calibrated layers' biases corrected for their weight grids
            rounding = per_channel_int8 if channels else per_tensor_uint8
            source = correct_biases(source, calibration, rounding, [not kept for kept in keep])
            layers = conv_layers(source, res)
        grid_map = calibrated_grids(source, layers, calibration, preprocessing, channels) if not all(keep) else {}
        if any(keep):
            grid_map |= kept_grids(layers, grids, keep)
    fmt = "tflite-int8" if int8 else "tflite"
    props = metadata_props(preprocessing, labels, folded.config, fmt)
    if int8:
        props["mobilenet_v1.quantization"] = grids_used(keep)
    tensors, ops = build_graph(layers, res, grid_map, int8=channels)
    data = write_model(tensors, ops, metadata={METADATA_NAME: json.dumps(props).encode()}, description=fmt)
    inputs = calibration if calibration is not None else _random_inputs(preprocessing, int8)
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        exported = LiteRTModel(tmp)  # also checks the metadata it carries
        if int8:
            return _check_int8(exported, folded, inputs, Path(path), calibration is not None)
        diff, agree = compare_with_torch(exported, folded, inputs.float())
        if not diff <= FP32_TOLERANCE:
            raise ValueError(f"exported model differs from PyTorch: max |logit diff| {diff:.3g} > {FP32_TOLERANCE:g}")
    given = "calibration" if calibration is not None else "random"
    return ExportReport(Path(path), fmt, diff, agree, f"{len(inputs)} {given} inputs under LiteRT (XNNPACK)")


def _random_inputs(preprocessing: Preprocessing, int8: bool) -> torch.Tensor:
    res = preprocessing.resolution
    generator = torch.Generator().manual_seed(0)
    if not int8:
        return random_inputs(res)
    # random pixels, as the float input of the preset
    pixels = torch.randint(0, 256, (CHECK_IMAGES, 3, res, res), generator=generator, dtype=torch.uint8)
    mean, std = torch.tensor(preprocessing.mean).view(1, 3, 1, 1), torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    return (pixels / 255.0 - mean) / std


@torch.no_grad()
def _check_int8(
    exported: LiteRTModel, folded: MobileNetV1, inputs: torch.Tensor, path: Path, given: bool
) -> ExportReport:
    """LiteRT vs the int8-exact emulation of the same file (bytes), and vs float PyTorch."""
    pixels = exported.to_pixels(inputs)  # the uint8 images the float inputs were normalized from
    nhwc = pixels.permute(0, 2, 3, 1).contiguous()
    litert = torch.from_numpy(exported.run(nhwc.numpy()))
    emulation = Int8MobileNetV1(read_tflite(exported.path), kernels="xnnpack")(nhwc)
    bytes_diff = (litert.to(torch.int16) - emulation.to(torch.int16)).abs()
    if int(bytes_diff.max()) > MAX_BYTE_DIFF:
        raise ValueError(
            f"LiteRT's output differs from the int8-exact emulation by up to {int(bytes_diff.max())} "
            f"(on {100 * float((bytes_diff == 0).double().mean()):.2f}% of the bytes equal)"
        )
    reference = torch.softmax(folded(inputs.float()), dim=1)
    probs = litert.float() / 256
    agree = float((probs.argmax(1) == reference.argmax(1)).float().mean())
    diff = float((probs - reference).abs().max())
    given_text = "calibration" if given else "random"
    checked = (
        f"{len(inputs)} {given_text} images: LiteRT (XNNPACK) bytes equal to the int8-exact emulation on "
        f"{100 * float((bytes_diff == 0).double().mean()):.2f}%; max |probability diff| and top-1 vs float PyTorch"
    )
    return ExportReport(path, "tflite-int8", diff, agree, checked, compared="probability")
