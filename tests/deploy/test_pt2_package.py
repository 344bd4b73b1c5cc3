"""A ``.pt2`` package is native code: loading it is an explicit opt-in, and before PyTorch's
loader extracts anything the archive is checked (no entry escaping the extraction folder,
no link, no duplicate, every CRC, a bounded unpacked size); extraction goes to a private
folder that is gone afterwards, whether the load worked or not."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.data.transforms import Preprocessing
from mobilenet_v1.deploy import pt2
from mobilenet_v1.deploy.formats import load_exported
from mobilenet_v1.deploy.pt2 import Pt2Model, export_pt2

RES = 32


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    export_pt2(mobilenet_v1(alpha=0.25, num_classes=3).eval(), path, Preprocessing(RES), labels=["a", "b", "c"])
    return path


def _entries(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _rewrite(path: Path, out: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return out


def _library(path: Path) -> str:
    return next(i.filename for i, _ in _entries(path) if i.filename.endswith(".so"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary folder, watched: a load must leave nothing in it."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)
    return folder


def test_loading_needs_the_opt_in_and_then_runs(package: Path, private_tmp: Path):
    with pytest.raises(ValueError, match=r"native code that loading runs .* trust_native_code=True"):
        Pt2Model(package)
    with pytest.raises(ValueError, match="trust_native_code=True"):
        load_exported(package)
    model, info = load_exported(package, trust_native_code=True)
    assert info.classes == ["a", "b", "c"] and model(torch.randn(2, 3, RES, RES)).shape == (2, 3)
    assert list(private_tmp.iterdir()) == []  # the extraction folder is gone


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build the hostile library")
def test_a_library_with_a_constructor_does_not_run_without_the_opt_in(package: Path, tmp_path: Path):
    """The attack the opt-in stops: a package whose library runs code as it is loaded."""
    sentinel = tmp_path / "ran"
    source = tmp_path / "evil.c"
    source.write_text(
        "#include <stdio.h>\n"
        f'__attribute__((constructor)) static void run(void) {{ FILE *f = fopen("{sentinel}", "w"); '
        "if (f) fclose(f); }\n"
    )
    library = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(library)], check=True, timeout=60)
    name = _library(package)
    entries = [(info, library.read_bytes() if info.filename == name else data) for info, data in _entries(package)]
    evil = _rewrite(package, tmp_path / "evil.pt2", entries)
    with pytest.raises(ValueError, match="trust_native_code"):
        Pt2Model(evil)
    assert not sentinel.exists()


def _hostile(package: Path, tmp_path: Path, kind: str) -> Path:
    entries: list = _entries(package)
    prefix = entries[0][0].filename.split("/")[0]
    if kind == "zip-slip":
        entries.append((f"{prefix}/data/aotinductor/model/../../../../../../{tmp_path.name}/escaped", b"x"))
    elif kind == "absolute":
        entries.append((str(tmp_path / "absolute"), b"x"))
    elif kind == "symlink":
        link = zipfile.ZipInfo(f"{prefix}/data/aotinductor/model/link")
        link.external_attr = 0o120777 << 16
        entries.append((link, b"/etc/passwd"))
    elif kind == "duplicate":
        entries.append(entries[-1])
    return _rewrite(package, tmp_path / f"{kind}.pt2", entries)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("zip-slip", "would be written outside the extraction folder"),
        ("absolute", "would be written outside the extraction folder"),
        ("symlink", "is a symbolic link"),
        ("duplicate", "appears twice"),
    ],
)
def test_entries_that_extraction_must_not_write_are_refused_before_it(package, tmp_path, private_tmp, kind, needle):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        hostile = _hostile(package, tmp_path, kind)
    with pytest.raises(ValueError, match=needle) as info:
        Pt2Model(hostile, trust_native_code=True)
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "absolute").exists()
    assert list(private_tmp.iterdir()) == []


def test_a_flipped_bit_is_refused_by_its_crc(package: Path, tmp_path: Path):
    data = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as archive:
        info = archive.getinfo(_library(package))
    assert info.compress_type == zipfile.ZIP_STORED  # the library's bytes lie in the file as they are
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x10
    flipped = tmp_path / "flipped.pt2"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is corrupt \(its CRC does not match\)"):
        Pt2Model(flipped, trust_native_code=True)


def test_the_unpacked_size_is_bounded(package: Path, monkeypatch: pytest.MonkeyPatch):
    total = sum(info.file_size for info, _ in _entries(package))
    monkeypatch.setattr(pt2, "MAX_UNPACKED_BYTES", total - 1)
    with pytest.raises(ValueError, match="unpacks to more than"):
        Pt2Model(package, trust_native_code=True)


def test_a_failed_load_leaves_nothing_behind(package: Path, tmp_path: Path, private_tmp: Path):
    """A sound archive whose library is not one: PyTorch's loader fails after extracting."""
    name = _library(package)
    entries = [(info, b"\x7fELF not really" if info.filename == name else data) for info, data in _entries(package)]
    broken = _rewrite(package, tmp_path / "broken.pt2", entries)
    with pytest.raises(ValueError, match="cannot load pt2 package") as info:
        Pt2Model(broken, trust_native_code=True)
    assert len(str(info.value).splitlines()) == 1
    assert list(private_tmp.iterdir()) == []
