"""Shared fixtures: the read-only ../shared/data beside the checkout (skip if absent) and
an isolated weights cache."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


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
