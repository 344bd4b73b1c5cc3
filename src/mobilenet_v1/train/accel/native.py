"""The fused C kernels of ``csrc/``, compiled for this CPU on first use.

``bn_act_kernels()`` builds ``csrc/bn_act.c`` with the system C compiler (``$CC``, else
``cc``) at ``-O3 -march=native -fopenmp`` into the cache (``~/.cache/mobilenet_v1/kernels``,
``MOBILENET_V1_CACHE`` overrides), keyed by the source, the flags and the CPU, and loads it
with ctypes. The build takes about a second, once per machine; concurrent processes (e.g.
torchrun's) each write their own temporary file and rename it into place. Where there is no
compiler, or ``MOBILENET_V1_NATIVE=0``, it returns ``None`` and the layers keep PyTorch's
kernels: same results, slower training.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

from ...files import atomic_write
from ...weights.download import cache_dir

__all__ = ["bn_act_kernels"]

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("bn_act.c", "bn_act_kernels.h")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC")
DISABLE_ENV = "MOBILENET_V1_NATIVE"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _library_path(compiler: str) -> Path:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((CSRC / name).read_bytes())
    digest.update(" ".join((compiler, *FLAGS, platform.machine(), _cpu_id())).encode())
    return cache_dir() / "kernels" / f"bn_act-{digest.hexdigest()[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    with atomic_write(target, make_parents=True) as tmp:
        cmd = [compiler, *FLAGS, str(CSRC / "bn_act.c"), "-o", str(tmp)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    for suffix, scalar in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        kernels = {
            "bn_act_sums": (ctypes.c_int, [ptr, ptr, i64, i64, ptr, ptr, ptr, scalar, ptr]),
            "bn_act_forward": (None, [ptr, ptr, i64, i64, ptr, ptr, scalar]),
            "bn_act_backward_input": (None, [ptr, ptr, ptr, i64, i64, ptr, scalar]),
        }
        for name, (restype, argtypes) in kernels.items():
            fn = getattr(lib, f"{name}_{suffix}")
            fn.restype, fn.argtypes = restype, argtypes
    return lib


@functools.cache
def bn_act_kernels() -> ctypes.CDLL | None:
    """The compiled BN + activation kernels, or ``None`` where they cannot be had."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        log.warning("no C compiler (cc): batch norm + ReLU trains with PyTorch's slower kernels")
        return None
    target = _library_path(compiler)
    try:
        if not target.exists():
            _build(compiler, target)
        return _declare(ctypes.CDLL(str(target)))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        log.warning("could not build %s (%s): batch norm + ReLU trains with PyTorch's kernels", target.name, detail)
        return None
