"""Integer-exact emulation of TFLite's uint8 kernels for Google's quantized MobileNet V1.

Google's quantized checkpoints (quantization-aware training, Jacob et al. 2018, which the
paper's Section 4 deployments build on) run on integer arithmetic: uint8 activations with
a scale and zero point per tensor, int32 accumulation, and a fixed-point requantization of
each accumulator to the next uint8 tensor. :class:`Int8MobileNetV1` runs the file's
operators with that arithmetic, batched on torch tensors, to match Google's interpreter
(LiteRT) byte for byte rather than approximately.

``kernels`` picks which of LiteRT's CPU kernels to match (each verified layer by layer
with ``Interpreter(..., experimental_preserve_all_tensors=True)`` on these four models):

- ``"reference"`` (``OpResolverType.BUILTIN_REF``): the multiplier ``s_in * s_w / s_out``
  as a Q31 integer and a power-of-two shift (``QuantizeMultiplier``), then gemmlowp's
  ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT`` (ties away from zero).
- ``"optimized"`` (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): the same, except that ruy's
  final shift rounds ties up; it differs only where a value below the zero point survives
  (the logits layer).
- ``"xnnpack"`` (LiteRT's default, ``AUTO``/``BUILTIN``): the XNNPACK delegate runs the
  convolutions and requantizes in float32, ``round_half_even(float(acc) * scale)``.

Average pooling (``(sum + count/2) / count``) and reshape are the same in all three. The
uint8 softmax of the optimized and XNNPACK paths is a float32 table of ``exp`` summed left
to right; the reference kernels use gemmlowp's fixed-point softmax (:mod:`.fixed_point`).

Our own int8 exports of a QAT run (TFLite's int8 scheme: int8 activations, weights int8
per output channel, between a QUANTIZE from the uint8 pixels and one back to uint8 before
the softmax) run here too: an int8 tensor on ``(s, z)`` is the uint8 tensor ``q + 128``
on ``(s, z + 128)``, the same arithmetic, and each channel is requantized with its own
``s_in * s_w[c] / s_out``.

Accumulators are exact integers (see :class:`_Conv` for how, without an integer
convolution in torch) and requantization runs on int64 tensors (:mod:`.fixed_point`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.transforms import Preprocessing
from ...model import same_padding
from ..io import LoadedWeights
from ..registry import get_weights, read_labels
from .convert import check_ops, import_table, infer_architecture
from .fixed_point import activation_range, multiply_by_quantized_multiplier, quantize_multiplier, softmax_uint8
from .reader import TFLiteOp, TFLiteTensor, read_tflite_files, with_head

__all__ = ["KERNELS", "Int8MobileNetV1", "compare_outputs", "load_int8"]

KERNELS = ("reference", "optimized", "xnnpack")


def _pad(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: str) -> Tensor:
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise ValueError(f"unsupported padding {padding!r} (expected SAME or VALID)")
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    return F.pad(x, (left, right, top, bottom))


def _per_tensor(tensor: TFLiteTensor) -> tuple[float, int]:
    """A tensor's (scale, zero point) as uint8: an int8 tensor's zero point moved by 128."""
    if tensor.dtype not in ("uint8", "int8") or tensor.scale.size != 1:
        raise ValueError(
            f"tensor {tensor.name!r}: expected a per-tensor quantized uint8 or int8 tensor, "
            f"got {tensor.dtype} with {tensor.scale.size} scales"
        )
    return float(tensor.scale[0]), int(tensor.zero_point[0]) + (128 if tensor.dtype == "int8" else 0)


def _weight(tensor: TFLiteTensor, channels: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A weight as uint8 values ``q``, its scales (one, or one per each of its ``channels``
    output channels: TFLite's int8 weights, zero points 0) and its zero point."""
    if tensor.dtype != "int8" or tensor.scale.size == 1:
        scale, zero_point = _per_tensor(tensor)
        return tensor.data.astype(np.int64) + (128 if tensor.dtype == "int8" else 0), np.float32([scale]), zero_point
    if tensor.scale.size != channels or tensor.zero_point.any():
        raise ValueError(
            f"tensor {tensor.name!r}: expected {channels} per-channel scales with zero points 0, "
            f"got {tensor.scale.size} scales"
        )
    return tensor.data.astype(np.int64) + 128, tensor.scale.astype(np.float32), 128


class _Requantize(nn.Module):
    """int32 accumulator -> uint8 with the rounding of the chosen LiteRT kernels (see
    ``KERNELS``), one scale per tensor or per output channel."""

    def __init__(
        self, s_in: float, s_w: np.ndarray, out: TFLiteTensor, act: str, kernels: str, per_channel: bool = False
    ) -> None:
        super().__init__()
        s_out, self.zero_point = _per_tensor(out)
        self.kernels = kernels
        # reference/optimized: uint8 (GetQuantizedConvolutionMultipler) a float32 product, then a double
        # division; int8 weights (per channel, PopulateConvolutionQuantizationParams) all in double
        products = np.float64(np.float32(s_in)) * s_w.astype(np.float64) if per_channel else np.float32(s_in) * s_w
        self.multipliers = [quantize_multiplier(float(p) / s_out) for p in products]
        # XNNPACK: the same scale, computed in float32
        scales = np.float32(s_in) * s_w / np.float32(s_out)
        self.register_buffer("scale_f32", torch.from_numpy(scales.astype(np.float32)).view(-1, 1, 1))
        self.lo, self.hi = activation_range(act, s_out, self.zero_point)

    def forward(self, acc: Tensor) -> Tensor:
        if self.kernels == "xnnpack":  # (float) acc: one rounding, as int32 -> float32 in C
            out = acc.to(torch.float32).mul_(self.scale_f32).round_().add_(self.zero_point)
        else:
            ties_up = self.kernels == "optimized"
            acc = acc.long()
            channels = [
                multiply_by_quantized_multiplier(
                    acc[:, c : c + 1] if len(self.multipliers) > 1 else acc, m, shift, ties_up=ties_up
                )
                for c, (m, shift) in enumerate(self.multipliers)
            ]
            out = torch.cat(channels, 1).add_(self.zero_point)
        return out.clamp_(self.lo, self.hi).to(torch.uint8)


class _Conv(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D: exact accumulators ``sum (x - zp_x)(w - zp_w) + bias``.

    1x1 convolutions (95% of the mult-adds, Section 3) run as an int8 GEMM with zero-point
    corrections. Other convolutions run in floating point, which is exact while every
    partial sum is an integer below the mantissa's range: float32 when ``k * 255**2 < 2**24``
    (depthwise 3x3: k = 9; the first layer: k = 27), float64 otherwise.
    """

    def __init__(self, op: TFLiteOp, kernels: str) -> None:
        super().__init__()
        x, w, b = op.inputs
        s_in, self.in_zero_point = _per_tensor(x)
        values, s_w, w_zero_point = _weight(w, w.shape[3] if op.name == "DEPTHWISE_CONV_2D" else w.shape[0])
        opts = op.options
        if opts.get("dilation_h", 1) != 1 or opts.get("dilation_w", 1) != 1:
            raise ValueError(f"{op.name}: dilated convolutions are not supported")
        self.stride = (opts["stride_h"], opts["stride_w"])
        self.padding = opts["padding"]
        self.kernel = tuple(w.shape[1:3])
        weight = torch.from_numpy(values)  # OHWI, or 1HWC for depthwise
        bias = torch.from_numpy(b.data.astype(np.int64))
        self.pointwise = self.kernel == (1, 1) and self.stride == (1, 1) and op.name == "CONV_2D"
        if self.pointwise:
            # (x - zx)(w - zw) = (x' + 128 - zx)(w' + 128 - zw) with int8 x' = x - 128, w' = w - 128
            w8, zx = weight.flatten(1) - 128, self.in_zero_point
            bias = bias + (128 - zx) * w8.sum(1) + w8.shape[1] * (128 - zx) * (128 - w_zero_point)
            self.register_buffer("weight", w8.t().to(torch.int8).contiguous())
            self.x_sum_factor = 128 - w_zero_point
        else:
            depthwise = op.name == "DEPTHWISE_CONV_2D"
            self.groups = x.shape[-1] if depthwise else 1
            weight = weight - w_zero_point
            weight = weight.permute(3, 0, 1, 2) if depthwise else weight.permute(0, 3, 1, 2)  # -> OIHW
            exact_f32 = weight[0].numel() * 255**2 < 2**24
            self.register_buffer("weight", weight.to(torch.float32 if exact_f32 else torch.float64))
        self.register_buffer("bias", bias.to(torch.int32))  # TFLite accumulates in int32: no overflow
        act, int8 = opts["fused_activation"], w.dtype == "int8"
        self.requantize = _Requantize(s_in, s_w, op.outputs[0], act, kernels, per_channel=int8)

    def forward(self, x: Tensor) -> Tensor:
        return self.requantize(self._gemm(x) if self.pointwise else self._conv(x))

    def _gemm(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        x8 = (x.permute(0, 2, 3, 1).reshape(n * h * w, -1).to(torch.int16) - 128).to(torch.int8)
        acc = torch._int_mm(x8, self.weight)  # int8 x int8 -> exact int32
        acc += self.x_sum_factor * x8.sum(1, dtype=torch.int32, keepdim=True) + self.bias
        return acc.view(n, h, w, -1).permute(0, 3, 1, 2)  # NCHW view of channels-last memory

    def _conv(self, x: Tensor) -> Tensor:
        x = _pad(x.to(self.weight.dtype) - self.in_zero_point, self.kernel, self.stride, self.padding)
        acc = F.conv2d(x, self.weight, None, self.stride, groups=self.groups).to(torch.int32)
        return acc + self.bias[:, None, None]


class _AveragePool(nn.Module):
    """AVERAGE_POOL_2D: integer sum, ``(sum + count / 2) / count`` on uint8 (same scale in
    and out); on int8 the sum of the int8 values, its mean rounded half away from zero."""

    def __init__(self, op: TFLiteOp) -> None:
        super().__init__()
        (x,), (y,) = op.inputs, op.outputs
        if _per_tensor(x) != _per_tensor(y):
            raise ValueError(f"{op.name}: input and output quantization differ ({x.name!r})")
        opts = op.options
        self.kernel = (opts["filter_h"], opts["filter_w"])
        self.stride = (opts["stride_h"], opts["stride_w"])
        self.padding = opts["padding"]
        self.lo, self.hi = activation_range(opts["fused_activation"], *_per_tensor(y))
        self.int8 = x.dtype == "int8"

    def forward(self, x: Tensor) -> Tensor:
        total = self._window_sum(x.to(torch.float64)).to(torch.int64)
        count = self._window_sum(torch.ones_like(x[:1, :1], dtype=torch.float64)).to(torch.int64)  # in-image taps
        if self.int8:  # TFLite's int8 kernel: the int8 sum's mean rounded half away from zero
            total = total - 128 * count
            mean = torch.div(total.abs() + count // 2, count, rounding_mode="floor") * total.sign() + 128
        else:
            mean = torch.div(total + count // 2, count, rounding_mode="floor")
        return mean.clamp(self.lo, self.hi).to(torch.uint8)

    def _window_sum(self, x: Tensor) -> Tensor:
        x = _pad(x, self.kernel, self.stride, self.padding)
        return F.avg_pool2d(x, self.kernel, self.stride, divisor_override=1)


class _Softmax(nn.Module):
    """SOFTMAX uint8 -> uint8 (scale 1/256): LiteRT's float32 lookup table of ``exp``."""

    def __init__(self, op: TFLiteOp, kernels: str) -> None:
        super().__init__()
        s_in, _ = _per_tensor(op.inputs[0])
        self.fixed_point = kernels == "reference"  # BUILTIN_REF: gemmlowp's fixed-point softmax
        self.s_in, self.beta = s_in, float(np.float32(op.options.get("beta", 1.0)))
        s_out, self.zero_point = _per_tensor(op.outputs[0])
        scale = np.float32(-s_in) * np.float32(self.beta)
        # table[d] = expf(scale * d) for d = max - x in 0..255, as PopulateSoftmaxLookupTable
        products = scale * np.arange(256, dtype=np.float32)
        self.register_buffer("table", torch.from_numpy(np.exp(products.astype(np.float64)).astype(np.float32)))
        self.out_scale = float(np.float32(s_out))

    def forward(self, x: Tensor) -> Tensor:
        if self.fixed_point:
            return softmax_uint8(x, self.s_in, self.beta)
        x = x.long()
        exps = self.table[x.amax(dim=-1, keepdim=True) - x]
        total = torch.zeros(exps.shape[:-1], dtype=torch.float32)
        for j in range(exps.shape[-1]):  # float32, summed left to right as the kernel does
            total = total + exps[..., j]
        inv = 1.0 / (total * torch.tensor(self.out_scale, dtype=torch.float32))
        prob = exps * inv.unsqueeze(-1) + torch.tensor(0.5, dtype=torch.float32)
        return (prob.to(torch.int64) + self.zero_point).clamp(0, 255).to(torch.uint8)


class _Pad(nn.Module):
    """PAD of the NHWC spatial axes with the tensor's zero point (real 0), before a ``VALID``
    convolution (symmetric padding where TensorFlow's SAME would put the extra pixel after)."""

    def __init__(self, op: TFLiteOp) -> None:
        super().__init__()
        x, pads = op.inputs
        if _per_tensor(x) != _per_tensor(op.outputs[0]):
            raise ValueError(f"{op.name}: input and output quantization differ ({x.name!r})")
        if pads.data is None or pads.data.shape != (4, 2) or pads.data[[0, 3]].any() or (pads.data < 0).any():
            raise ValueError(f"{op.name} {op.outputs[0].name!r}: only constant spatial paddings are supported")
        (top, bottom), (left, right) = pads.data[1:3].tolist()
        self.pads, self.value = (left, right, top, bottom), _per_tensor(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pads, value=self.value)


class _Quantize(nn.Module):
    """QUANTIZE between uint8 and int8 on the same grid: the values move by 128, the
    identity on their uint8 form (the only requantization our int8 files have)."""

    def __init__(self, op: TFLiteOp) -> None:
        super().__init__()
        if _per_tensor(op.inputs[0]) != _per_tensor(op.outputs[0]):
            raise ValueError(f"{op.name} {op.outputs[0].name!r}: a requantization to another grid is not supported")

    def forward(self, x: Tensor) -> Tensor:
        return x


class _Reshape(nn.Module):
    """RESHAPE of the NHWC tensor to the file's output shape (batch kept)."""

    def __init__(self, op: TFLiteOp) -> None:
        super().__init__()
        if _per_tensor(op.inputs[0]) != _per_tensor(op.outputs[0]):
            raise ValueError(f"{op.name}: input and output quantization differ ({op.inputs[0].name!r})")
        self.shape = op.outputs[0].shape[1:]

    def forward(self, x: Tensor) -> Tensor:
        return _to_tflite_layout(x).reshape(x.shape[0], *self.shape)


def _to_tflite_layout(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


class Int8MobileNetV1(nn.Module):
    """Google's uint8 MobileNet V1, run with TFLite's integer arithmetic (see the module doc).

    Input: a uint8 batch, NHWC ``(N, H, W, 3)`` as TFLite takes it or NCHW ``(N, 3, H, W)``,
    already resized and centre-cropped (``eval_transform(preset, to_float=False)``).
    Output: the file's uint8 output, ``(N, 1001)`` softmax bytes (probability ``q / 256``).
    """

    def __init__(self, ops: Sequence[TFLiteOp], *, kernels: str = "reference") -> None:
        super().__init__()
        if kernels not in KERNELS:
            raise ValueError(f"unknown kernels {kernels!r}; choose from {', '.join(KERNELS)}")
        if not ops:
            raise ValueError("empty TFLite graph")
        self.kernels = kernels
        self.input_shape = ops[0].inputs[0].shape[1:]  # (H, W, C)
        self.input_quantization = _per_tensor(ops[0].inputs[0])
        self.names = [op.outputs[0].name for op in ops]
        self.layers = nn.ModuleList(_build(op, prev, kernels) for op, prev in zip(ops, [None, *ops[:-1]], strict=True))

    @classmethod
    def from_tflite(cls, paths: str | Path | Sequence[str | Path], *, kernels: str = "reference") -> Int8MobileNetV1:
        """Load one ``.tflite`` file, or Google's 1.0/224 extractor + head-layers files (joined).

        The file must be Google's quantized MobileNet V1 classifier: its graph is checked
        op by op against the import table (:func:`~.convert.check_ops`, as the float import
        does) and its input must be uint8, else a one-line ``ValueError`` naming the file."""
        source = str(paths) if isinstance(paths, str | Path) else " + ".join(map(str, paths))
        ops = read_tflite_files(paths)
        alpha, resolution, num_classes = infer_architecture(ops, source)
        check_ops(ops, import_table(alpha, resolution, num_classes), source)
        x = ops[0].inputs[0]
        if x.dtype != "uint8" or x.scale.size != 1:
            raise ValueError(
                f"{source}: not a quantized (uint8) model (its input is {x.dtype}); "
                "int8-exact runs Google's uint8 MobileNet V1 files, use it without int8-exact"
            )
        return cls(ops, kernels=kernels)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[-1][1]

    def forward_intermediates(self, x: Tensor) -> list[tuple[str, Tensor]]:
        """Every operator's output, named as in the file, in TFLite's layout (NHWC), as
        uint8 (an int8 tensor's values plus 128)."""
        x = self._check_input(x)
        outs = []
        for name, layer in zip(self.names, self.layers, strict=True):
            x = layer(x)
            outs.append((name, _to_tflite_layout(x)))
        return outs

    def _check_input(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 image batch, got dtype {x.dtype}")
        h, w, c = self.input_shape
        if x.dim() == 4 and tuple(x.shape[1:]) == (h, w, c):
            return x.permute(0, 3, 1, 2)
        if x.dim() == 4 and tuple(x.shape[1:]) == (c, h, w):
            return x
        raise ValueError(
            f"expected a uint8 batch of shape (N, {h}, {w}, {c}) or (N, {c}, {h}, {w}), got {tuple(x.shape)}"
        )


def _build(op: TFLiteOp, prev: TFLiteOp | None, kernels: str) -> nn.Module:
    if prev is not None and op.inputs[0] is not prev.outputs[0]:
        raise ValueError(f"{op.name} {op.outputs[0].name!r}: the graph is not a single chain of operators")
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _Conv(op, kernels)
    if op.name == "AVERAGE_POOL_2D":
        return _AveragePool(op)
    if op.name == "RESHAPE":
        return _Reshape(op)
    if op.name == "SOFTMAX":
        return _Softmax(op, kernels)
    if op.name == "QUANTIZE":
        return _Quantize(op)
    if op.name == "PAD":
        return _Pad(op)
    raise ValueError(
        f"unsupported operator {op.name} "
        "(expected CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, RESHAPE, SOFTMAX, QUANTIZE, PAD)"
    )


def compare_outputs(ours: Tensor, reference: Tensor) -> dict[str, float]:
    """Agreement of two (N, 1001) uint8 outputs: same 1000-way top-1 (output 0, background,
    excluded; ties go to the lowest index in both), bytes within ±1 and exact, in percent."""
    if ours.shape != reference.shape:
        raise ValueError(f"output shapes differ: {tuple(ours.shape)} vs {tuple(reference.shape)}")
    diff = (ours.to(torch.int16) - reference.to(torch.int16)).abs()
    same_top1 = ours[:, 1:].argmax(1) == reference[:, 1:].argmax(1)
    return {
        "top1_agreement": 100.0 * same_top1.double().mean().item(),
        "bytes_within_1": 100.0 * (diff <= 1).double().mean().item(),
        "bytes_exact": 100.0 * (diff == 0).double().mean().item(),
        "max_byte_diff": int(diff.max().item()),
    }


def load_int8(spec: str | Path, *, kernels: str = "xnnpack") -> tuple[Int8MobileNetV1, LoadedWeights]:
    """The integer model of Google's quantized weights (a name as ``load_weights`` takes
    it, or a ``.tflite`` path; an embedding extractor is joined with the head beside it)."""
    path = Path(spec)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        files = with_head(path)
        model = Int8MobileNetV1.from_tflite(files, kernels=kernels)
        preset = Preprocessing(model.input_shape[0])
        return model, LoadedWeights(read_labels(download=False), preset, {"source": str(path)}, None, tuple(files))
    record = get_weights(str(spec)).value
    if not record.quantized:
        raise ValueError(f"int8-exact needs one of Google's quantized (uint8) models, got {record.name!r}")
    files = record.files()
    model = Int8MobileNetV1.from_tflite(files, kernels=kernels)
    return model, LoadedWeights(read_labels(), record.preprocessing, {"weights": record.name}, record, tuple(files))
