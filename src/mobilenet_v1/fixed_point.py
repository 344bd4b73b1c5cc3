"""TFLite's fixed-point requantization (gemmlowp), on int64 tensors holding int32 values.

A uint8 kernel turns its int32 accumulator into the next uint8 tensor by multiplying with
``s_in * s_w / s_out`` (< 1), stored as a Q31 integer and a power-of-two shift
(Jacob et al. 2018, Section 2.2). These are the exact integer functions of TFLite's
``quantization_util.cc`` and gemmlowp's ``fixedpoint.h``, vectorised for torch; the tests
check them against a literal scalar transcription of the C++.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "activation_range",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``real ≈ multiplier * 2**(shift - 31)``, Q31 multiplier."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = math.floor(q * 2**31 + 0.5)  # TfLiteRound: half away from zero (q > 0 here)
    if q_fixed == 2**31:
        q_fixed, shift = q_fixed // 2, shift + 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), shift


def saturating_rounding_doubling_high_mul(a: Tensor, b: int) -> Tensor:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int64 tensors holding int32 values.

    The C++ form ``(a*b + (a*b >= 0 ? 2**30 : 1 - 2**30)) / 2**31`` (truncating) equals
    ``(a*b + 2**30) >> 31`` for every product, which takes fewer passes over big tensors.
    """
    out = (a * b).add_(1 << 30).bitwise_right_shift_(31)
    if b == _INT32_MIN:  # the one overflow: INT32_MIN * INT32_MIN saturates
        out = torch.where(a == _INT32_MIN, _INT32_MAX, out)
    return out


def rounding_divide_by_pot(x: Tensor, exponent: int, *, ties_up: bool = False) -> Tensor:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    Its ``(x >> e) + ((x & mask) > (mask >> 1) + (x < 0))`` equals
    ``(x + 2**(e-1) - (x < 0)) >> e``. ``ties_up=True`` rounds half towards +inf instead,
    as ruy's x86 kernels (LiteRT's optimized GEMM) do.
    """
    if exponent == 0:
        return x
    out = x + (1 << (exponent - 1))
    if not ties_up:
        out.sub_(x.lt(0).to(x.dtype))
    return out.bitwise_right_shift_(exponent)


def multiply_by_quantized_multiplier(acc: Tensor, multiplier: int, shift: int, *, ties_up: bool = False) -> Tensor:
    """TFLite's ``MultiplyByQuantizedMultiplier``: ``acc * multiplier * 2**(shift - 31)``, rounded."""
    left, right = max(shift, 0), max(-shift, 0)
    scaled = (acc * (1 << left)).clamp_(_INT32_MIN, _INT32_MAX) if left else acc
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right, ties_up=ties_up)


def _round_away(x: float) -> int:
    """``std::round``: half away from zero (Python's ``round`` is half to even)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def activation_range(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for a uint8 output."""
    if act not in ("NONE", "RELU", "RELU6"):
        raise ValueError(f"unsupported fused activation {act!r} (expected NONE, RELU or RELU6)")
    six_over_scale = float(np.float32(6.0) / np.float32(scale))  # TFLite divides in float32
    lo = max(0, zero_point) if act != "NONE" else 0
    hi = min(255, zero_point + _round_away(six_over_scale)) if act == "RELU6" else 255
    return lo, hi
