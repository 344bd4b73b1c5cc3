"""The optional dependencies (pyproject's extras), imported where first used.

A part of the package that needs one calls :func:`require`, which imports it or raises an
``ImportError`` whose message carries the install command (the CLI prints it as one line,
exit code 2).

May import: nothing of the project.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path
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
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display needed).

    Without a writable home (or XDG) folder matplotlib warns on stderr and picks a temporary
    cache itself: the CLI prints one line per error, so the temporary folder is chosen here,
    quietly, and matplotlib's own log is kept to errors."""
    if "MPLCONFIGDIR" not in os.environ and not _writable_config_home():
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mobilenet-v1-matplotlib-")
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    require("matplotlib", "plot", purpose).use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _writable_config_home() -> bool:
    """Whether matplotlib can keep its config and font cache where it looks for them."""
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        return False
    folders = [Path(os.environ.get(name) or home / default) for name, default in _XDG]
    return all(os.access(f if f.exists() else f.parent if f.parent.exists() else home, os.W_OK) for f in folders)


_XDG = (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"))
