"""The fused C kernels of ``csrc/``, compiled for this CPU on first use.

``bn_act_kernels()`` builds ``csrc/bn_act.c`` with the system C compiler (``$CC``, else
``cc``) at ``-O3 -march=native -fopenmp`` into the cache (``~/.cache/mobilenet_v1/kernels``,
``MOBILENET_V1_CACHE`` overrides), keyed by the source, the flags and the CPU, and loads it
with ctypes. The build takes about a second, once per machine; concurrent processes (e.g.
torchrun's) each write their own temporary file and rename it into place. Where there is no
compiler, or ``MOBILENET_V1_NATIVE=0``, it returns ``None`` and the layers keep PyTorch's
kernels: same results, slower training; :func:`kernels_summary` says which, and why, in
one line that a training run prints among its first.
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

__all__ = ["bn_act_kernels", "kernels_summary"]

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
def _load() -> tuple[ctypes.CDLL | None, str]:
    """The kernels (or ``None``) and what was used, said once."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"{DISABLE_ENV}=0"
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None, f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    try:
        target = _library_path(compiler)
        if not target.exists():
            _build(compiler, target)
        return _declare(ctypes.CDLL(str(target))), f"built with {compiler}, cached in {target.parent}"
    except (OSError, ValueError, subprocess.SubprocessError) as err:  # ValueError: no cache folder
        detail = getattr(err, "stderr", None) or err
        reason = " ".join(str(detail).split())[:200]
        log.debug("building the fused kernels failed: %s", detail)
        return None, f"could not build them: {reason}"


def bn_act_kernels() -> ctypes.CDLL | None:
    """The compiled BN + activation kernels, or ``None`` where they cannot be had."""
    return _load()[0]


def kernels_summary() -> str:
    """Which batch norm + ReLU kernels CPU training uses, and why, in one line."""
    lib, how = _load()
    if lib is not None:
        return f"CPU training kernels: fused C batch norm + ReLU ({how})"
    return f"CPU training kernels: PyTorch's ({how}; the fused C kernels train 1.2-1.5x faster)"
