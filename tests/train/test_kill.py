"""Kill tests: SIGKILL at random points of a tiny training run, including during a
checkpoint write; ``--resume`` always succeeds and ends with the same weights as an
uninterrupted run (benchmarks/robustness/kill.py does many more kills, at random times).

Reuses test_train's data folder, subprocess runner and the ``MOBILENET_V1_TEST_SIGNAL``
hook of ``checkpoint.py`` (a signal right after a given step); a kill in the middle of
a checkpoint write comes from a driver that replaces ``torch.save`` in the child.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import TINY, make_folder, run_cli

from mobilenet_v1.train.checkpoint import LAST, load_checkpoint

# 21 training images, batch 4: 5 steps an epoch, 10 in all; checkpoints at steps 3, 5 (+ best), 6, 9, 10.
COMMON = [*TINY, "--epochs", "2", "--recipe", "modern", "--ema", "--checkpoint-steps", "3"]
KILL_IN_SAVE_ENV = "MOBILENET_V1_KILL_IN_SAVE"
# Writes half of the Nth checkpoint to its temporary file, then SIGKILLs itself.
DRIVER = f"""
import io, os, signal, sys, torch
real_save, calls, nth = torch.save, [0], int(os.environ.pop({KILL_IN_SAVE_ENV!r}, "0"))
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: buf.tell() // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, f, *args, **kwargs)
torch.save = save
from mobilenet_v1.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_killed_in_save(args: list, nth: int) -> subprocess.CompletedProcess:
    """Train, SIGKILLed half-way through its ``nth`` checkpoint write."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", KILL_IN_SAVE_ENV: str(nth)}
    env.pop("MOBILENET_V1_TEST_SIGNAL", None)
    cmd = [sys.executable, "-c", DRIVER, "train", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def run_killed_after(args: list, seconds: float) -> int:
    """Train, SIGKILLed ``seconds`` after its run folder gets its config.json (a random moment)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MOBILENET_V1_TEST_SIGNAL", None)
    cmd = [sys.executable, "-m", "mobilenet_v1", "train", *map(str, args)]
    run = Path(args[args.index("--output" if "--output" in args else "--resume") + 1])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (run / "config.json").is_file():
        time.sleep(0.02)
    time.sleep(seconds)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=600)


def resume(run: Path, signal_at: str | None = None) -> subprocess.CompletedProcess:
    return run_cli(["--resume", run], signal_at=signal_at)


def assert_same_weights(ref: Path, run: Path) -> None:
    for name in ("model-final.safetensors", "model-best.safetensors"):
        a, b = load_file(ref / name), load_file(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = load_checkpoint(ref / LAST), load_checkpoint(run / LAST)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert a["progress"]["global_step"] == b["progress"]["global_step"] == 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill")
    data = make_folder(root / "data")
    ref = run_cli([*COMMON, "--data", data, "--output", root / "ref"])
    assert ref.returncode == 0, ref.stderr
    return data, root / "ref"


def test_kills_before_the_first_checkpoint_in_a_checkpoint_write_and_at_a_random_step(reference, tmp_path):
    data, ref = reference
    run = tmp_path / "run"
    # 1. SIGKILL after step 1, before any checkpoint: --resume starts the run again.
    killed = run_cli([*COMMON, "--data", data, "--output", run], signal_at="9@1")
    assert killed.returncode == -9 and (run / "config.json").is_file() and not (run / LAST).exists()
    # 2. SIGKILL half-way through the 2nd checkpoint write (checkpoint-best.pt at the end of epoch 1).
    killed = run_killed_in_save(["--resume", run], nth=2)
    assert killed.returncode == -9, killed.stderr
    assert list(run.glob(".checkpoint-best.*.partial.pt")), "the kill did not land inside the write"
    assert load_checkpoint(run / LAST)["progress"]["global_step"] == 3  # the previous one, intact
    # 3. SIGKILL right after a random later step, then resume to the end.
    step = random.Random(9).randint(4, 9)
    killed = resume(run, signal_at=f"9@{step}")
    assert killed.returncode == -9, killed.stderr
    done = resume(run)
    assert done.returncode == 0, done.stderr
    assert_same_weights(ref, run)
