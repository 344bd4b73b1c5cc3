"""Find or fetch a weight file: explicit path -> cache -> local data directory -> download.

The cache is ``~/.cache/mobilenet_v1`` (``MOBILENET_V1_CACHE`` overrides); the local data
directory is ``MOBILENET_V1_DATA`` (its ``pretrained/`` folder, or the folder itself),
when set. Downloads are checked against the recorded sha256 (when one
was recorded) and written atomically, so an interrupted download never leaves a file
that looks complete; with ``progress=True`` a tqdm bar on stderr shows a running download
(the ``progress`` flag of torchvision's ``load_state_dict_from_url``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..files import atomic_write

__all__ = ["Source", "cache_dir", "data_dir", "fetch", "sha256sum", "verify"]


@dataclass(frozen=True)
class Source:
    """One published file: where it is downloaded from and its name on disk.

    ``member`` names the file inside a ``.tgz`` archive (Google's release archives);
    ``sha256`` is the digest of ``filename`` and is ``None`` where it was never computed.
    """

    url: str
    filename: str
    sha256: str | None = None
    member: str | None = None


def cache_dir() -> Path:
    """Where downloads, converted weights and built kernels are kept: ``$MOBILENET_V1_CACHE``,
    else ``$XDG_CACHE_HOME/mobilenet_v1``, else ``~/.cache/mobilenet_v1``; a one-line
    ``ValueError`` when there is no home directory to find (``HOME`` unset and a user id
    without a passwd entry, as in some containers)."""
    if os.environ.get("MOBILENET_V1_CACHE"):
        return Path(os.environ["MOBILENET_V1_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "mobilenet_v1"
    try:
        return Path.home() / ".cache" / "mobilenet_v1"
    except RuntimeError:  # "Could not determine home directory"
        raise ValueError(
            "no home directory for the cache (HOME unset, no passwd entry): set MOBILENET_V1_CACHE to a folder"
        ) from None


def data_dir() -> Path | None:
    """``$MOBILENET_V1_DATA``: a folder holding Google's files, or their ``pretrained/``."""
    env = os.environ.get("MOBILENET_V1_DATA")
    return Path(env) if env else None


def _local_folders() -> list[Path]:
    """Where a file may already be: the cache (when there is one) and the data folder."""
    data = data_dir()
    try:
        cache = [cache_dir()]
    except ValueError:  # no home directory: the data folder may still hold the file
        cache = []
    return cache + ([data / "pretrained", data] if data is not None else [])


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str | None) -> Path:
    """Raise ``ValueError`` showing both digests when ``path`` does not hash to ``expected``."""
    if expected is not None:
        actual = sha256sum(path)
        if actual != expected:
            raise ValueError(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
    return path


def fetch(source: Source, *, download: bool = True, progress: bool = False) -> Path:
    """The local copy of ``source``: cache, then data directory, then a verified download
    (with a progress bar on stderr when ``progress``)."""
    for folder in _local_folders():
        if (folder / source.filename).is_file():
            return verify(folder / source.filename, source.sha256)
    if not download:
        raise FileNotFoundError(
            f"{source.filename} not found in {cache_dir()} or {data_dir() or '$MOBILENET_V1_DATA'} (download disabled)"
        )
    return _download(source, progress=progress)


def _download(source: Source, *, progress: bool = False) -> Path:
    target = cache_dir() / source.filename
    with atomic_write(target, make_parents=True) as out:  # the cache never holds a partial file
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            raw = Path(tmp) / "raw" if source.member is not None else out
            try:
                with urllib.request.urlopen(source.url, timeout=60) as response, open(raw, "wb") as f:
                    _copy(response, f, source.filename, progress)
            except OSError as exc:
                raise OSError(f"cannot download {source.url}: {exc}") from None
            if source.member is not None:
                _extract(raw, source.member, out, source.url)
        verify(out, source.sha256)
    return target


def _copy(response: Any, out: BinaryIO, name: str, progress: bool) -> None:
    """Copy the response body to ``out``, with a tqdm bar on stderr when ``progress``."""
    if not progress:
        shutil.copyfileobj(response, out)
        return
    from tqdm import tqdm

    length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
    total = int(length) if length and length.isdigit() else None
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr) as bar:
        for chunk in iter(lambda: response.read(1 << 16), b""):
            out.write(chunk)
            bar.update(len(chunk))


def _extract(archive: Path, member: str, out: Path, url: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if member not in names:
                raise ValueError(f"{url}: archive has no {member} (it holds {', '.join(sorted(names)) or 'nothing'})")
            src = tar.extractfile(names[member])
            with src, open(out, "wb") as f:
                shutil.copyfileobj(src, f)
    except tarfile.TarError as exc:
        raise ValueError(f"{url}: not a readable .tgz archive ({exc})") from None
