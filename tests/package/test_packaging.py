"""The package as a user installs it: a wheel built from the checkout, installed
non-editable into a folder of its own, with every file it reads at run time, dependency
ranges rather than pins, and the fused training kernels built from the wheel's sources."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

PACKAGE = ROOT / "src" / "mobilenet_v1"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")  # keep the checkout's build/ untouched
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    env = {**os.environ, "PIP_BUILD_DIR": str(build), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, env=env)
    (found,) = out.glob("mobilenet_v1-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return target


def _run_installed(target: Path, code: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``python ARGS`` importing the installed wheel (not the checkout's editable install)."""
    full_env = {**os.environ, "PYTHONPATH": str(target), "MOBILENET_V1_CACHE": str(tmp_path / "cache"), **env}
    full_env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, *code], capture_output=True, text=True, timeout=600, env=full_env, cwd=tmp_path
    )


def test_wheel_holds_every_file_of_the_package(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    assert any(s.endswith("csrc/bn_act.c") for s in sources)  # the scan sees the C sources
    missing = [s for s in sources if s not in names]
    assert not missing, f"files of src/ not in the wheel: {missing}"


def test_wheel_declares_ranges_not_pins(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        (meta_name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in core} >= {"torch", "torchvision"}
    pinned = [r for r in requires if "==" in r.split(";")[0]]
    assert not pinned, f"exact pins in the wheel's requirements: {pinned}"
    torch_req = next(r for r in core if r.lower().startswith("torch") and not r.lower().startswith("torchvision"))
    assert "<" in torch_req and ">=" in torch_req, torch_req


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler to build the kernels")
def test_installed_wheel_builds_the_fused_kernels_and_says_so(installed: Path, tmp_path: Path):
    code = (
        "import mobilenet_v1; print(mobilenet_v1.__file__); "
        "from mobilenet_v1.train.accel.native import bn_act_kernels, kernels_summary; "
        "assert bn_act_kernels() is not None; print(kernels_summary())"
    )
    out = _run_installed(installed, ["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    where, summary = out.stdout.splitlines()
    assert Path(where).is_relative_to(installed)  # the wheel's copy, not the checkout
    assert summary.startswith("CPU training kernels: fused C")
    assert any((tmp_path / "cache" / "kernels").glob("bn_act-*.so"))


def _tiny_folder(root: Path) -> Path:
    for c, name in enumerate(("ant", "bee")):
        for split in ("train", "val"):
            (root / split / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 36), (60 + 90 * c, 20 * i, 100)).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("native", ["1", "0"])
def test_installed_wheel_trains_and_names_its_kernels(installed: Path, tmp_path: Path, native: str):
    if native == "1" and shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler to build the kernels")
    data = _tiny_folder(tmp_path / "data")
    args = ["-m", "mobilenet_v1", "train", "--data", str(data), "--output", str(tmp_path / "run"), "--scratch"]
    args += ["--alpha", "0.25", "--resolution", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0"]
    out = _run_installed(installed, args, tmp_path, MOBILENET_V1_NATIVE=native)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("CPU training kernels")]
    assert len(lines) == 1, out.stderr  # said once, among the first lines
    expected = "fused C batch norm + ReLU" if native == "1" else "PyTorch's (MOBILENET_V1_NATIVE=0"
    assert expected in lines[0]
    assert (tmp_path / "run" / "model-final.safetensors").is_file()
