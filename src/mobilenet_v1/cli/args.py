"""Argument types shared by the subcommands: each rejects a bad value in one line."""

from __future__ import annotations

import argparse

from ..config import MIN_INPUT_SIZE, validate_alpha, validate_input_size


def alpha(text: str) -> float:
    try:
        return validate_alpha(float(text))
    except ValueError as exc:  # float() or the validator
        raise argparse.ArgumentTypeError(
            _reason(exc, "alpha must be a finite number > 0") + f", got {text!r}"
        ) from None


def resolution(text: str) -> int:
    try:
        return validate_input_size(int(text))[0]
    except ValueError as exc:  # int() or the validator
        reason = _reason(exc, f"resolution must be an integer >= {MIN_INPUT_SIZE}")
        raise argparse.ArgumentTypeError(reason.replace("input size", "resolution") + f", got {text!r}") from None


def _reason(exc: ValueError, default: str) -> str:
    """The validator's reason without its ``, got <value>`` (the option's own text is
    quoted instead); ``default`` when the text was not a number at all."""
    message = str(exc)
    return message.rsplit(", got ", 1)[0] if ", got " in message else default


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value
