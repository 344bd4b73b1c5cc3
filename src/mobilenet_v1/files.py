"""Every file the project writes goes through :func:`atomic_write`.

A crash, a kill or a full disk at any moment leaves either the old file or the complete
new one under the real name, never a partial one: the data goes to a temporary file
beside the target, is flushed to disk (fsync), gets the permissions of the file it
replaces (or, for a new file, those the umask gives), and is renamed over the target;
the folder is then synced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "check_writable", "save_figure", "write_text"]


def check_writable(path: str | Path) -> Path:
    """Fail early (one line) when ``path`` cannot be written, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output path is a directory: {path}")
    if path.exists() and not path.is_file():
        raise ValueError(f"output path exists and is not a regular file: {path}")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"output path is not writable: {path}")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success it
    replaces ``path`` whole, on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    check_writable(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str, *, make_parents: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, make_parents=make_parents) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    with atomic_write(path, make_parents=True) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)
