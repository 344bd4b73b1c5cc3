"""Argument types shared by the subcommands: each rejects a bad value in one line."""

from __future__ import annotations

import argparse

from ..model import validate_alpha, validate_input_size


def alpha(text: str) -> float:
    try:
        return validate_alpha(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a finite number > 0, got {text!r}") from None


def resolution(text: str) -> int:
    try:
        return validate_input_size(int(text))[0]
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be an integer >= 32, got {text!r}") from None


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
