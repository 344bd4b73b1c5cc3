"""Every file the project writes goes through :func:`atomic_write`.

A crash, a kill or a full disk at any moment leaves either the old file or the complete
new one under the real name, never a partial one: the data goes to a temporary file
beside the target, is flushed to disk (fsync), gets the permissions of the file it
replaces (or, for a new file, those the umask gives), and is renamed over the target;
the folder is then synced so the rename itself survives a power cut.

An ``OSError`` while writing (a full disk, a quota, a file size limit, an I/O error)
comes out as one ``OSError`` line naming the target, e.g. ``no space left on device while
writing run/summary.json``, with the original ``errno``; the previous file is left intact.
:func:`create_exclusive` writes a file that must not exist yet (a lock file): it appears
whole, or not at all if another process created it first.

May import: nothing of the project.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "check_not_input",
    "check_writable",
    "create_exclusive",
    "save_figure",
    "write_error",
    "write_text",
]


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


def check_not_input(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse, before any work, an ``output`` that is one of ``inputs`` (the same file under
    any name: a link, ``..``, a hard link) or lies inside an input folder: writing it would
    destroy the input, or add a file that the next read of the folder takes for data.
    Inputs that do not exist as paths (a weights name, ``None``) are skipped."""
    out = Path(output)
    resolved = out.resolve()
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if resolved == source or (out.exists() and os.path.samefile(out, source)):
            raise ValueError(f"output {out} is the input {item}: writing it would destroy the input")
        if source.is_dir() and source in resolved.parents:
            raise ValueError(f"output {out} is inside the input folder {item}: choose a path outside it")


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


def write_error(exc: OSError, path: str | Path) -> OSError:
    """``exc`` (raised while writing ``path``) as one line naming ``path``, of the same
    ``OSError`` subclass and ``errno``: ``no space left on device while writing PATH``."""
    if getattr(exc, "written_path", None) is not None:
        return exc  # already names the file being written
    code = exc.errno
    reason = os.strerror(code) if code else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = f"{reason[:1].lower()}{reason[1:]} while writing {path}"
    try:
        error = type(exc)(message)
    except Exception:  # an OSError subclass with another signature
        error = OSError(message)
    error.errno = code  # (setting strerror too would make str() "[Errno N] ..." again)
    error.written_path = str(path)  # type: ignore[attr-defined]
    return error


@contextlib.contextmanager
def atomic_write(path: str | Path, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success it
    replaces ``path`` whole, on any error it is removed and ``path`` is left as it was.

    An ``OSError`` while writing (also inside the ``with`` block, and also when a writer
    such as ``torch.save`` wraps it in another exception) is re-raised by :func:`write_error`
    as one line naming ``path``; other exceptions pass unchanged."""
    path = Path(path)
    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, path) from exc
    check_writable(path)
    tmp: Path | None = None
    try:
        # a short prefix: the temporary name must fit where any valid target name fits (255 bytes)
        stem = os.fsdecode(os.fsencode(path.stem)[:64])
        fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{path.suffix[:16]}", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as exc:
        cause = _os_error_in(exc)
        if cause is None:
            raise
        raise write_error(cause, path) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` if it is an ``OSError``, else the ``OSError`` it was raised from or while
    handling: ``torch.save`` turns a full disk into ``RuntimeError("unexpected pos ...")``
    raised while handling the ``OSError``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def create_exclusive(path: str | Path, text: str) -> Path:
    """Create ``path`` holding ``text`` (UTF-8) only if it does not exist yet, atomically.

    As exclusive as ``open(O_CREAT | O_EXCL)`` (``FileExistsError`` if the file exists,
    also when another process wins a race) and whole when it appears: the text is written
    and synced to a temporary file that is then hard-linked to ``path``. Where the file
    system has no hard links, ``O_CREAT | O_EXCL`` itself is used.
    """
    path = Path(path)
    data = text.encode("utf-8")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        try:
            os.write(fd, data)
            os.fchmod(fd, 0o666 & ~_umask())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(name, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
    except FileExistsError:
        raise
    except OSError as exc:
        raise write_error(exc, path) from exc
    finally:
        Path(name).unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


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
