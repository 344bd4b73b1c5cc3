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
    "softmax_uint8",
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


# --- gemmlowp's fixed-point softmax (TFLite reference_ops::Softmax for uint8) ---------------
# FixedPoint<int32, I> holds raw / 2**(31 - I); a product of two is SRDHM of the raws.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def _mul(a: Tensor, b: Tensor | int) -> Tensor:
    if isinstance(b, int):
        return saturating_rounding_doubling_high_mul(a, b)
    return (a * b).add_(1 << 30).bitwise_right_shift_(31)  # raws never both INT32_MIN here


def _saturating_shift_left(x: Tensor, exponent: int) -> Tensor:
    """``SaturatingRoundingMultiplyByPOT<exponent>`` for exponent > 0."""
    return (x << exponent).clamp_(_INT32_MIN, _INT32_MAX)


def _exp_on_interval(a: Tensor) -> Tensor:
    """``exp_on_interval_between_negative_one_quarter_and_0_excl`` (Q0.31 in and out)."""
    constant_term, one_third = 1895147668, 715827883  # exp(-1/8), 1/3
    x = a + (1 << 28)  # x = a + 1/8: a Taylor expansion around -1/8
    x2 = _mul(x, x)
    x3, x4 = _mul(x2, x), _mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_mul(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + _mul(x + poly, constant_term)


def exp_on_negative_values(a: Tensor) -> Tensor:
    """gemmlowp's ``exp_on_negative_values``: Q5.26 input (≤ 0) -> Q0.31 ``exp``."""
    quarter = 1 << 24
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(_saturating_shift_left(a_mod_quarter_minus_quarter, 5))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        bit = (remainder & (1 << (26 + exponent))) != 0
        result = torch.where(bit, _mul(result, multiplier), result)
    return torch.where(a == 0, _INT32_MAX, result)


def _one_over_one_plus_x(a: Tensor) -> Tensor:
    """gemmlowp's ``one_over_one_plus_x_for_x_in_0_1`` (Q0.31 in and out): Newton-Raphson."""
    total = a + _INT32_MAX
    half_denominator = torch.div(total + torch.where(total >= 0, 1, -1), 2, rounding_mode="trunc")
    x = 1515870810 + _mul(half_denominator, -1010580540)  # Q2.29: 48/17 - 32/17 * d
    for _ in range(3):
        one_minus_dx = (1 << 29) - _mul(half_denominator, x)
        x = x + _saturating_shift_left(_mul(x, one_minus_dx), 2)
    return _saturating_shift_left(x >> 1, 2)


def softmax_uint8(x: Tensor, input_scale: float, beta: float = 1.0) -> Tensor:
    """TFLite's reference uint8 softmax (output scale 1/256) along the last dimension."""
    multiplier, left_shift = quantize_multiplier(min(beta * input_scale * 2.0**26, 2.0**31 - 1.0))
    diff_min = -math.floor(31.0 * 2**26 / 2**left_shift)  # CalculateInputRadius(5, left_shift)
    diff = x.long() - x.long().amax(dim=-1, keepdim=True)
    used = diff >= diff_min
    exps = exp_on_negative_values(saturating_rounding_doubling_high_mul(diff * (1 << left_shift), multiplier))
    sums = (rounding_divide_by_pot(exps, 12) * used).sum(-1, keepdim=True)  # Q12.19 accumulator
    headroom = 32 - sum((sums >= (1 << k)).long() for k in range(32))  # count leading zeros
    num_bits_over_unit = 12 - headroom
    scale = _one_over_one_plus_x(((sums << headroom) - (1 << 31)).clamp(_INT32_MIN, _INT32_MAX))
    out = _rounding_divide_by_pot_tensor(_mul(scale, exps), num_bits_over_unit + 23)
    return torch.where(used, out, 0).clamp(0, 255).to(torch.uint8)


def _rounding_divide_by_pot_tensor(x: Tensor, exponent: Tensor) -> Tensor:
    """``RoundingDivideByPOT`` with a per-element exponent (``>= 1``)."""
    return (x + torch.bitwise_left_shift(torch.ones_like(exponent), exponent - 1) - x.lt(0).long()) >> exponent
