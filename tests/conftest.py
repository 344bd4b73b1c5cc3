"""Shared fixtures: the read-only shared data (``$MOBILENET_V1_DATA``, which the Makefile
sets to ../shared/data beside the checkout; skip if absent) and an isolated weights cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOBILENET_V1_DATA") or ROOT.parent / "shared" / "data")
os.environ["MOBILENET_V1_DATA"] = str(SHARED_DATA)  # where the library finds Google's files


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def isolated_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never read or write the user's ~/.cache/mobilenet_v1: one fresh cache per run
    (tests that need their own set MOBILENET_V1_CACHE with monkeypatch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILENET_V1_CACHE", str(tmp_path_factory.mktemp("weights-cache")))
        yield
