"""The ``mobilenet-v1`` command: each subcommand module registers its own parser.

Every known user error (``ValueError``, ``OSError``) becomes one line on stderr and exit
code 2; an unexpected error prints a short message and the path of a file holding the
full traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from collections.abc import Sequence

from . import bench, cost, evaluate, export, predict, tradeoff, train

PROG = "mobilenet-v1"
SUBCOMMANDS = (cost, train, export, bench, tradeoff, predict, evaluate)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="MobileNet V1: models, cost, weights, training, export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    except Exception as exc:
        return _unexpected(exc)


def _user_error(exc: BaseException) -> int:
    print(f"{PROG}: error: {exc}", file=sys.stderr)
    return 2


def _unexpected(exc: BaseException) -> int:
    """Last resort: keep the full traceback in a file, show one line."""
    with tempfile.NamedTemporaryFile("w", prefix="mobilenet-v1-crash-", suffix=".txt", delete=False) as f:
        traceback.print_exc(file=f)
    print(f"{PROG}: unexpected error: {type(exc).__name__}: {exc} (traceback in {f.name})", file=sys.stderr)
    return 1
