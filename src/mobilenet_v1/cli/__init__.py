"""The ``mobilenet-v1`` command: each subcommand module registers its own parser.

Every known user error (``ValueError``, ``OSError``) becomes one line on stderr and exit
code 2; an unexpected error prints a short message and the path of a file holding the
full traceback (exit code 1).

Running out of memory (``MemoryError``, ``torch.OutOfMemoryError``) is the user's to fix
(a smaller batch, resolution or number of workers), so it is one line and exit code 2 as
well. ``OverflowError`` and ``RecursionError`` are not: every value from the command line
or a file is bounded before use, so either one means a missing check, a bug (exit code 1,
with the traceback file). Every line printed is one line, whatever the message holds:
line breaks are joined, a worker's wrapped traceback is reduced to its last line, and
control characters (a file name or class name with an escape sequence) are escaped.

The library's errors name its parameters (``qat_steps=100``, ``fmt='tflite-int8'``);
the CLI says the flags that set them instead (``--qat-steps 100``, ``--format
tflite-int8``): :data:`FLAGS`, applied by :func:`as_flags`.

May import: ``config``, ``cost``, ``classify``, ``data``, ``weights``, ``train``, ``deploy``, ``measure``,
``serve``, ``files``, ``untrusted``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence

import torch

from ..untrusted import printable
from . import bench, cost, evaluate, export, predict, serve, tradeoff, train

PROG = "mobilenet-v1"
SUBCOMMANDS = (cost, train, export, bench, tradeoff, predict, evaluate, serve)
# library parameter -> the flag that sets it
FLAGS = {
    "fmt": "--format",
    "qat_steps": "--qat-steps",
    "qat_epochs": "--qat-epochs",
    "unlabeled": "--unlabeled",
    "teacher_labels": "--teacher-labels",
    "teacher_views": "--teacher-views",
    "epochs": "--epochs",
    "ema": "--ema",
    "float_layers": "--float-layers",
    "quantization": "--quantization",
    "sync_bn": "--sync-bn",
    "freeze_backbone": "--freeze-backbone",
    "train_backbone": "--train-backbone",
    "device": "--device",
    "resume": "--resume",
    "trust_native_code": "--trust-native-code",
    "force": "--force",
    "max_batch": "--max-batch",
    "max_delay_ms": "--max-delay-ms",
    "max_queue": "--max-queue",
    "max_body_mb": "--max-body-mb",
    "timeout_ms": "--timeout-ms",
    "name": "--name",
}
_PARAMETER = re.compile(r"\b(" + "|".join(FLAGS) + r")=('[^']*'|[^\s,;:)]+)")


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {one_line(message)}\n")
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="MobileNet V1: models, cost, weights, training, export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # PyTorch logs "No CUDA runtime is found" as it imports its extension tools (compiling
    # and loading packages): not ours to print beside the CLI's lines
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        return _user_error(exc)
    except ImportError as exc:
        # An optional extra that is not installed (our messages carry the pip hint) is the
        # user's to fix; any other ImportError is a bug and keeps its traceback.
        return _user_error(exc) if "pip install" in str(exc) else _unexpected(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, torch.OutOfMemoryError) as exc:
        return _out_of_memory(exc)
    except RuntimeError as exc:
        # PyTorch's CPU allocator reports a failed allocation as a RuntimeError
        return _out_of_memory(exc) if "can't allocate memory" in str(exc) else _unexpected(exc)
    except Exception as exc:
        return _unexpected(exc)


def _out_of_memory(exc: BaseException) -> int:
    detail = one_line(exc)
    print(f"{PROG}: error: out of memory{f' ({detail})' if detail else ''}", file=sys.stderr)
    return 2


def one_line(message: object) -> str:
    """``message`` as one printable line: a wrapped traceback (a DataLoader worker's)
    gives its last line, other line breaks become spaces, control characters escapes."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if any("Traceback (most recent call last)" in line for line in lines):
        lines = lines[-1:]
    return printable(" ".join(lines))


def as_flags(message: str) -> str:
    """``message`` with each ``parameter=value`` of :data:`FLAGS` as the flag that sets it
    (``--flag value``, a flag alone for ``True``)."""

    def flag(match: re.Match[str]) -> str:
        value = match[2].strip("'")
        return FLAGS[match[1]] if value == "True" else f"{FLAGS[match[1]]} {value}"

    return _PARAMETER.sub(flag, message)


def _user_error(exc: BaseException) -> int:
    print(f"{PROG}: error: {as_flags(one_line(exc))}", file=sys.stderr)
    return 2


def _unexpected(exc: BaseException) -> int:
    """Last resort: keep the full traceback in a file, show one line."""
    with tempfile.NamedTemporaryFile("w", prefix="mobilenet-v1-crash-", suffix=".txt", delete=False) as f:
        traceback.print_exc(file=f)
    print(f"{PROG}: unexpected error: {type(exc).__name__}: {one_line(exc)} (traceback in {f.name})", file=sys.stderr)
    return 1
