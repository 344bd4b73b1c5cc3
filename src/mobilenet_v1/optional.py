"""The optional dependencies (pyproject's extras), imported where first used.

A part of the package that needs one calls :func:`require`, which imports it or raises an
``ImportError`` whose message carries the install command (the CLI prints it as one line,
exit code 2).

May import: nothing of the project.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["pyplot", "require"]


def require(module: str, extra: str, purpose: str | None = None) -> Any:
    """``module``, imported; else an ``ImportError`` naming the extra that installs it,
    e.g. ``onnxruntime is needed for ONNX export: pip install 'mobilenet-v1[export]'``."""
    try:
        return __import__(module, fromlist=["_"])  # the submodule itself, as import_module gives
    except ImportError:
        what = f" for {purpose}" if purpose else ""
        raise ImportError(f"{module} is needed{what}: pip install 'mobilenet-v1[{extra}]'") from None


def pyplot(purpose: str) -> Any:
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display needed)."""
    require("matplotlib", "plot", purpose).use("Agg")
    return importlib.import_module("matplotlib.pyplot")
