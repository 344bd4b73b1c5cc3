"""files.py, the one writer: atomic replacement, umask permissions, early checks, figures."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from mobilenet_v1.files import atomic_write, check_writable, save_figure, write_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def umask():
    """Set the umask for one test and restore the previous one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_new_file_gets_umask_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_text(tmp_path / "out.txt", "hello")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    with atomic_write(tmp_path / "raw.bin") as tmp:
        tmp.write_bytes(b"\x00\x01")
    assert stat.S_IMODE((tmp_path / "raw.bin").stat().st_mode) == mode
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01"


def test_temporary_path_is_beside_target_with_its_suffix(tmp_path):
    target = tmp_path / "model.safetensors"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.suffix == ".safetensors"
        assert tmp != target and tmp.exists()
        assert not target.exists()  # nothing under the real name until the end
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_error_inside_atomic_write_keeps_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old content")
    seen = []
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        seen.append(tmp)
        tmp.write_text("new, partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old content"
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_error_before_writing_a_new_file_leaves_nothing(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(KeyError), atomic_write(target):
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_write_text_replaces_content_whole(tmp_path):
    path = tmp_path / "notes.txt"
    assert write_text(path, "a much longer first version\n" * 50) == path
    write_text(path, "short é")
    assert path.read_bytes() == "short é".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_write_text_make_parents(tmp_path):
    nested = tmp_path / "a" / "b" / "c.txt"
    with pytest.raises(FileNotFoundError):
        write_text(nested, "x")
    assert not (tmp_path / "a").exists()
    write_text(nested, "x", make_parents=True)
    assert nested.read_text() == "x"


def test_check_writable(tmp_path):
    ok = tmp_path / "fine.txt"
    assert check_writable(ok) == ok
    assert check_writable(str(ok)) == ok
    ok.write_text("existing")
    assert check_writable(ok) == ok
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        check_writable(tmp_path / "missing" / "out.txt")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_check_writable_rejects_dev_null():
    with pytest.raises(ValueError, match="not a regular file"):
        check_writable("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_atomic_write_does_not_replace_a_special_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"), atomic_write(fifo) as tmp:
        tmp.write_text("should never be written")
    with pytest.raises(ValueError):
        write_text(fifo, "nope")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_atomic_write_into_a_folder_path_fails_early(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(IsADirectoryError), atomic_write(folder):
        pytest.fail("the body must not run")
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_save_figure_writes_png_and_closes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1, 2], [1, 0, 1])
    number = fig.number
    assert plt.fignum_exists(number)
    path = tmp_path / "plots" / "curve.png"  # save_figure makes the folder
    assert save_figure(fig, path, dpi=50) == path
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (100, 50)  # figsize x dpi
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    assert not plt.fignum_exists(number)
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]
