"""Run folders that cannot be lost: one owner per run folder (a lock with its pid), every
setting checked before anything is written, a resume that cannot change the split or the
model, malformed resume files, ``--output`` inside ``--data``, and full disks.

CLI cases run ``mobilenet_v1.cli.main`` in-process and assert exit code 2, exactly one
line on stderr naming the problem, and that the run folder, the data folder and the
output path are exactly as before (names, sizes and modification times).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_main
from test_train import TINY, make_folder, run_cli

from mobilenet_v1.cli import main
from mobilenet_v1.files import atomic_write, create_exclusive, save_figure, write_text
from mobilenet_v1.train import checkpoint as ckpt
from mobilenet_v1.train import runlock
from mobilenet_v1.train.checkpoint import LAST, check_checkpoint, load_checkpoint
from mobilenet_v1.train.config import FIXED_AT_START, TrainConfig, check_device
from mobilenet_v1.train.runlock import LOCK, RunLock, check_not_running
from mobilenet_v1.train.setup import prepare_run

# --------------------------------------------------------------------------------------
# helpers and fixtures


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots``: (size, mtime) by path; what "untouched" means."""
    found = {}
    for root in roots:
        if root.exists():
            for p in [root, *root.rglob("*")]:
                st = p.lstat()
                found[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return found


def assert_one_line_exit_2(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A data folder and a finished 1-epoch run (in-process), copied by tests that change it."""
    root = tmp_path_factory.mktemp("runs")
    data = make_folder(root / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", str(data), "--output", str(root / "run"), *TINY, "--epochs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return data, root / "run"


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    _, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] == "T"


# --------------------------------------------------------------------------------------
# every setting checked before anything is written

BAD_SETTINGS = [
    (["--label-smoothing", "5"], "label_smoothing must be a finite number in [0, 1), got 5.0"),
    (["--label-smoothing", "1"], "label_smoothing must be a finite number in [0, 1)"),
    (["--label-smoothing", "nan"], "label_smoothing must be a finite number"),
    (["--device", "foo"], "unknown device 'foo'"),
    (["--device", "meta"], "unsupported device 'meta'"),
    (["--device", "cuda:99"], "device 'cuda:99'"),
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--seed", str(2**64)], "seed must be an integer in [0, 2**63 - 1]"),
    (["--val-fraction", "1.5"], "val_fraction must be a finite number in (0, 1)"),
    (["--ema-decay", "1"], "ema_decay must be a finite number in (0, 1)"),
    (["--warmup-epochs", "inf"], "warmup_epochs must be a finite number >= 0"),
    (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
]


@pytest.mark.parametrize(("extra", "needle"), BAD_SETTINGS, ids=[" ".join(e) for e, _ in BAD_SETTINGS])
def test_bad_setting_is_refused_before_anything_is_written(finished, tmp_path, capsys, extra, needle):
    data, _ = finished
    before = snapshot(data, tmp_path)
    out = tmp_path / "out"
    code, err = run_main(["train", "--data", str(data), "--output", str(out), *TINY, *extra], capsys)
    assert_one_line_exit_2(code, err, needle)
    assert not out.exists() and snapshot(data, tmp_path) == before


def test_cuda_without_cuda_is_refused(finished, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data, _ = finished
    code, err = run_main(
        ["train", "--data", str(data), "--output", str(tmp_path / "out"), *TINY, "--device", "cuda"], capsys
    )
    assert_one_line_exit_2(code, err, "device 'cuda': CUDA is not available")
    assert not (tmp_path / "out").exists()


def test_a_failure_while_building_the_trainer_leaves_no_folder(finished, tmp_path, capsys):
    """Checks that only the trainer can make (here: weights whose alpha differs from --alpha)
    still come before the run folder is created."""
    data, run = finished
    out = tmp_path / "out"
    argv = ["train", "--data", str(data), "--output", str(out), *TINY, "--alpha", "0.5"]
    code, err = run_main([*argv, "--weights", str(run / "model-final.safetensors")], capsys)
    assert_one_line_exit_2(code, err, "have alpha 0.25, not 0.5")
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dropout": "x"}, "dropout must be a finite number in [0, 1), got 'x'"),
        ({"ema": "yes"}, "ema must be true or false, got 'yes'"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
        ({"seed": True}, "seed must be an integer >= 0, got True"),
        ({"device": 0}, "device must be a name"),
        ({"data": 7}, "data must be a path or name, got 7"),
        ({"resolution": (64, 96)}, "resolution must be one integer"),
        ({"optimizer": "lamb"}, "unknown optimizer 'lamb'"),
        ({"precision": None}, "unknown precision None"),
    ],
)
def test_train_config_gives_value_error_for_every_wrong_type(kwargs, needle):
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**{"data": "d", "output": "o", **kwargs})


def test_train_config_stores_plain_json_values(tmp_path):
    import numpy as np

    config = TrainConfig(data=tmp_path / "d", output=tmp_path / "o", alpha=np.float32(0.25), epochs=np.int64(3))
    assert (config.data, config.output) == (str(tmp_path / "d"), str(tmp_path / "o"))
    assert type(config.alpha) is float and type(config.epochs) is int
    config.save(tmp_path / "config.json")  # a Path or NumPy value used to fail here, after mkdir
    assert TrainConfig.load(tmp_path / "config.json") == config


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        check_device("gpu")


# --------------------------------------------------------------------------------------
# --output and --data


def test_output_inside_data_is_refused(finished, capsys):
    data, _ = finished
    before = snapshot(data)
    code, err = run_main(["train", "--data", str(data), "--output", str(data / "runs" / "a"), *TINY], capsys)
    assert_one_line_exit_2(code, err, "is inside the data folder")
    assert snapshot(data) == before  # no new "class" folder


def test_output_equal_to_data_is_refused(finished, capsys):
    data, _ = finished
    before = snapshot(data)
    code, err = run_main(["train", "--data", str(data), "--output", str(data), *TINY], capsys)
    assert_one_line_exit_2(code, err, "is the data folder")
    assert snapshot(data) == before


def test_output_inside_data_through_a_symlink_is_refused(finished, tmp_path, capsys):
    data, _ = finished
    link = tmp_path / "link"
    link.symlink_to(data)
    code, err = run_main(["train", "--data", str(data), "--output", str(link / "run"), *TINY], capsys)
    assert_one_line_exit_2(code, err, "is inside the data folder")
    assert not (data / "run").exists()


def test_data_inside_output_is_refused(tmp_path, capsys):
    data = make_folder(tmp_path / "parent" / "data")
    before = snapshot(tmp_path)
    code, err = run_main(["train", "--data", str(data), "--output", str(tmp_path / "parent"), *TINY], capsys)
    assert_one_line_exit_2(code, err, "is inside the run folder")
    assert snapshot(tmp_path) == before


def test_resume_with_data_around_the_run_is_refused(finished, tmp_path, capsys):
    _, run = finished
    data = make_folder(tmp_path / "data")
    copy = data / "run"
    shutil.copytree(run, copy)
    before = snapshot(data)
    code, err = run_main(["train", "--resume", str(copy), "--data", str(data)], capsys)
    assert_one_line_exit_2(code, err, "is inside the data folder")
    assert snapshot(data) == before


def test_output_under_a_regular_file_is_refused(finished, tmp_path, capsys):
    data, _ = finished
    (tmp_path / "file.txt").write_text("x")
    code, err = run_main(["train", "--data", str(data), "--output", str(tmp_path / "file.txt" / "run"), *TINY], capsys)
    assert_one_line_exit_2(code, err, "is not a folder")


# --------------------------------------------------------------------------------------
# one owner per run folder


def test_a_finished_run_leaves_no_lock(finished):
    _, run = finished
    assert not (run / LOCK).exists()


def test_a_running_run_refuses_a_second_train_and_a_resume_then_a_stale_lock_is_taken_over(finished, tmp_path):
    """A real training process stops itself (SIGSTOP) after step 1, holding its lock: a second
    ``train`` on its folder and a ``--resume`` of it are refused naming its pid; once it is
    SIGKILLed, ``--resume`` takes the stale lock over (with a warning) and finishes."""
    data, _ = finished
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOBILENET_V1_TEST_SIGNAL": f"{int(signal.SIGSTOP)}@1"}
    cmd = [sys.executable, "-m", "mobilenet_v1", "train", "--data", str(data), "--output", str(run), *TINY]
    owner = subprocess.Popen([*cmd, "--epochs", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not _stopped(owner.pid):
            assert owner.poll() is None and time.monotonic() < deadline, "the run did not reach step 1"
            time.sleep(0.1)
        lock = json.loads((run / LOCK).read_text())
        assert lock["pid"] == owner.pid
        before = snapshot(run)
        second = run_cli(["--data", data, "--output", run, "--epochs", "1"])
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [
            f"mobilenet-v1: error: run folder {run} is in use by process {owner.pid} "
            f"(since {lock['time']}); wait for it to end or stop it (lock file {run / LOCK})"
        ]
        resumed = run_cli(["--resume", run])
        assert resumed.returncode == 2 and f"in use by process {owner.pid}" in resumed.stderr
        assert len(resumed.stderr.strip().splitlines()) == 1, resumed.stderr
        assert snapshot(run) == before
    finally:
        owner.kill()
        owner.wait()
    assert (run / LOCK).exists()  # SIGKILL: no chance to remove it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MOBILENET_V1_TEST_SIGNAL", None)
    done = subprocess.run(
        [sys.executable, "-m", "mobilenet_v1", "train", "--resume", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"taking over the stale lock of process {owner.pid}" in done.stderr
    assert (run / "model-final.safetensors").is_file() and not (run / LOCK).exists()


def test_ctrl_c_removes_the_lock(finished, tmp_path):
    data, _ = finished
    run = tmp_path / "run"
    interrupted = run_cli(["--data", data, "--output", run, *TINY, "--epochs", "1"], signal_at="2@1")
    assert interrupted.returncode == 130, interrupted.stderr
    assert (run / LAST).is_file() and not (run / LOCK).exists()


def test_lock_api(tmp_path):
    run = tmp_path / "run"
    lock = RunLock.acquire(run)
    owner = json.loads((run / LOCK).read_text())
    assert owner["pid"] == os.getpid() and owner["host"]
    with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
        RunLock.acquire(run)  # also within one process: a folder has one run
    with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
        check_not_running(run)
    lock.release()
    assert not (run / LOCK).exists()
    assert check_not_running(run) is False


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "record",
    [
        "dead",  # the pid is gone
        "reused",  # the pid is alive but started at another time (a reused pid)
        "rebooted",  # recorded before a reboot
        "garbage",  # not a lock this project writes
        "empty",
    ],
)
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, record):
    run = tmp_path / "run"
    run.mkdir()
    mine = runlock._this_process()
    text = {
        "dead": json.dumps({**mine, "pid": _dead_pid()}),
        "reused": json.dumps({**mine, "start": "1"}),
        "rebooted": json.dumps({**mine, "boot": "another-boot"}),
        "garbage": "\x00\x01 not json",
        "empty": "",
    }[record]
    if record == "reused" and mine["start"] is None:
        pytest.skip("no /proc: process start times are unknown")
    if record == "rebooted" and mine["boot"] is None:
        pytest.skip("no boot id")
    (run / LOCK).write_text(text)
    assert check_not_running(run) is True
    with pytest.warns(RuntimeWarning, match="taking over the stale lock"):
        lock = RunLock.acquire(run)
    assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_another_host_is_refused(tmp_path, capsys, finished):
    _, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / LOCK).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "time": "then"}))
    before = snapshot(copy)
    code, err = run_main(["train", "--resume", str(copy)], capsys)
    assert_one_line_exit_2(code, err, "locked by process 4242 on host 'elsewhere'")
    assert snapshot(copy) == before


def test_lock_of_an_earlier_torchrun_attempt_is_stale(tmp_path, monkeypatch):
    """torchrun restarted the group: the lock of the job's attempt before (its rank 0 may
    have run on another host) is taken over."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "job": "job-1", "restart": "0"}))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with pytest.warns(RuntimeWarning, match="stale lock of process 4242"):
        RunLock.acquire(run).release()


def test_new_run_in_a_folder_holding_only_a_stale_lock(finished, tmp_path):
    data, _ = finished
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({**runlock._this_process(), "pid": _dead_pid()}))
    plan = prepare_run(TrainConfig(data=str(data), output=str(run), alpha=0.25, resolution=32, batch_size=4))
    assert plan.run_dir == run


def test_create_exclusive(tmp_path):
    path = tmp_path / "x.lock"
    assert create_exclusive(path, "one") == path
    with pytest.raises(FileExistsError):
        create_exclusive(path, "two")
    assert path.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["x.lock"]


# --------------------------------------------------------------------------------------
# resume: settings fixed at the start of a run


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seed", "7"], "seed 0 -> 7 (the split into training and validation images"),
        (["--val-fraction", "0.3"], "val_fraction 0.1 -> 0.3"),
        (["--alpha", "0.5"], "alpha 0.25 -> 0.5"),
        (["--resolution", "64"], "resolution 32 -> 64"),
        (["--batch-size", "2"], "batch_size 4 -> 2"),
        (["--recipe", "modern"], "recipe 'paper' -> 'modern'"),
        (["--optimizer", "sgd"], "optimizer None -> 'sgd'"),
        (["--ema"], "ema False -> True"),
        (["--freeze-backbone"], "freeze_backbone False -> True"),
        (["--seed", "7", "--alpha", "0.5"], "seed 0 -> 7 (the split into training and validation images, the data"),
    ],
)
def test_resume_refuses_a_changed_setting_fixed_at_the_start(run_copy, capsys, extra, needle):
    before = snapshot(run_copy)
    code, err = run_main(["train", "--resume", str(run_copy), *extra], capsys)
    assert_one_line_exit_2(code, err, f"cannot resume {run_copy} with a changed setting fixed at its start: {needle}")
    assert snapshot(run_copy) == before


def test_resume_names_every_changed_setting(run_copy, capsys):
    code, err = run_main(["train", "--resume", str(run_copy), "--seed", "7", "--alpha", "0.5"], capsys)
    assert code == 2 and "seed 0 -> 7" in err and "alpha 0.25 -> 0.5" in err


def test_resume_with_the_same_values_and_free_settings_is_accepted(run_copy):
    plan = prepare_run(None, resume=str(run_copy), seed=0, alpha=0.25, epochs=2, lr=0.01, workers=0, device="cpu")
    assert (plan.config.epochs, plan.config.lr, plan.config.seed) == (2, 0.01, 0)


def test_fixed_settings_table_covers_split_and_model():
    assert {"seed", "val_fraction", "alpha", "resolution", "weights", "recipe", "batch_size"} <= set(FIXED_AT_START)
    assert not {"epochs", "lr", "workers", "device", "data"} & set(FIXED_AT_START)


def test_resume_with_an_unknown_setting_is_a_value_error(run_copy):
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        prepare_run(None, resume=str(run_copy), colour="red")


# --------------------------------------------------------------------------------------
# malformed resume files


def _edit_checkpoint(run: Path, edit) -> None:
    state = torch.load(run / LAST, weights_only=True)
    state = edit(state)
    torch.save(state, run / LAST)


def _set(key, value):
    def edit(state):
        state[key] = value
        return state

    return edit


def _drop(key):
    def edit(state):
        del state[key]
        return state

    return edit


def _progress(key, value):
    def edit(state):
        state["progress"][key] = value
        return state

    return edit


MALFORMED_CHECKPOINTS = {
    "a list": (lambda state: [1, 2], "it holds a list, not a dict"),
    "no progress": (_drop("progress"), "no 'progress' entry"),
    "no config": (_drop("config"), "no 'config' entry"),
    "config a string": (_set("config", "alpha=1"), "'config' is a str, not a dict"),
    "classes a tensor": (_set("classes", torch.zeros(3)), "'classes' is a Tensor, not a list"),
    "classes of ints": (_set("classes", [1, 2, 3]), "'classes' must be a list of at least 2 class names"),
    "model of strings": (_set("model", {"features.0.conv.weight": "w"}), "'model' entry 'features.0.conv.weight'"),
    "epoch a string": (_progress("epoch", "one"), "'progress.epoch' must be an integer >= 0, got 'one'"),
    "negative step": (_progress("global_step", -5), "'progress.global_step' must be an integer >= 0"),
    "history a dict": (_progress("history", {}), "'progress.history' is a dict, not a list"),
    "bad history row": (_progress("history", [{"epoch": 1}]), "'progress.history' row 0"),
    "no rng": (_set("rng", {}), "'rng.python' is not a Python random state"),
    "config of wrong types": (
        lambda s: {**s, "config": {**s["config"], "epochs": "ten"}},
        "bad run settings in {ckpt}: epochs must be an integer >= 1, got 'ten'",
    ),
    "config without data": (
        lambda s: {**s, "config": {k: v for k, v in s["config"].items() if k != "data"}},
        "bad run settings in {ckpt}: no 'data'",
    ),
    "optimizer state garbage": (_set("optimizer", {"state": 5}), "does not fit this run"),
    "scheduler state garbage": (_set("scheduler", {"last_epoch": "x", "_step_count": []}), "does not fit this run"),
    "model of wrong shapes": (
        lambda s: {**s, "model": {k: v[:1] if v.ndim else v for k, v in s["model"].items()}},
        "checkpoint does not match the model of this run",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_CHECKPOINTS))
def test_malformed_checkpoint_is_one_line(run_copy, capsys, case):
    edit, needle = MALFORMED_CHECKPOINTS[case]
    _edit_checkpoint(run_copy, edit)
    before = snapshot(run_copy)
    code, err = run_main(["train", "--resume", str(run_copy)], capsys)
    assert_one_line_exit_2(code, err, needle.format(ckpt=run_copy / LAST))
    assert snapshot(run_copy) == before and not (run_copy / LOCK).exists()


MALFORMED_CONFIGS = {
    "a list": ("[1, 2]", "bad run settings in {cfg}: expected a JSON object, got list"),
    "a number": ("7", "bad run settings in {cfg}: expected a JSON object, got int"),
    "not JSON": ("{epochs: 1", "cannot read run settings {cfg}"),
    "deeply nested": ("[" * 100000 + "]" * 100000, "cannot read run settings {cfg}"),
    "not UTF-8": (b"\xff\xfe{}", "cannot read run settings {cfg}"),
    "no data": ('{"output": "x"}', "bad run settings in {cfg}: no 'data'"),
    "wrong types": ('{"data": "d", "output": "o", "batch_size": "4"}', "batch_size must be an integer >= 1, got '4'"),
    "bool as seed": ('{"data": "d", "output": "o", "seed": false}', "seed must be an integer >= 0, got False"),
}


@pytest.mark.parametrize("case", list(MALFORMED_CONFIGS))
def test_malformed_config_json_is_one_line(finished, tmp_path, capsys, case):
    """A run killed before its first checkpoint is resumed from its config.json alone."""
    text, needle = MALFORMED_CONFIGS[case]
    run = tmp_path / "run"
    run.mkdir()
    cfg = run / "config.json"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run)
    code, err = run_main(["train", "--resume", str(run)], capsys)
    assert_one_line_exit_2(code, err, needle.format(cfg=cfg))
    assert snapshot(run) == before


def test_check_checkpoint_accepts_what_the_trainer_saves(finished):
    _, run = finished
    state = load_checkpoint(run / LAST)
    assert check_checkpoint(state, run / LAST) is state
    assert [row.keys() for row in state["progress"]["history"]] == [set(ckpt.HISTORY_KEYS)]


# --------------------------------------------------------------------------------------
# full disks: one line naming the file, the previous file intact


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (errno.ENOSPC, "no space left on device while writing"),
        (errno.EDQUOT, "disk quota exceeded while writing"),
        (errno.EFBIG, "file too large while writing"),
        (errno.EIO, "input/output error while writing"),
    ],
)
def test_write_error_is_one_line_naming_the_path(tmp_path, monkeypatch, code, needle):
    path = tmp_path / "summary.json"
    write_text(path, '{"good": true}\n')

    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError) as exc:
        write_text(path, '{"new": true}\n')
    assert str(exc.value) == f"{needle} {path}" and exc.value.errno == code
    assert path.read_text() == '{"good": true}\n' and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_wrapped_os_errors_are_named_too(tmp_path):
    """torch.save turns a full disk into RuntimeError("unexpected pos ..."), raised while
    handling the OSError: atomic_write finds the OSError behind it."""
    path = tmp_path / "x.bin"
    with pytest.raises(OSError, match=f"^no space left on device while writing {path}$"), atomic_write(path):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    assert not path.exists() and list(tmp_path.iterdir()) == []


# Real write errors: RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a
# full disk fails with ENOSPC, inside torch.save, safetensors (Rust), matplotlib and Python.
LIMITED_WRITERS = r"""
import errno, json, resource, signal, sys
from pathlib import Path
import torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.files import save_figure, write_text
from mobilenet_v1.train.checkpoint import atomic_save
from mobilenet_v1.weights import save_safetensors
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

root = Path(sys.argv[1])
model = mobilenet_v1(alpha=0.25, num_classes=3)
meta = {"resolution": 32, "classes": ["a", "b", "c"], "preprocessing": {"resolution": 32}}
writers = {
    "summary.json": lambda p: write_text(p, json.dumps({"x": list(range(20000))})),
    "curves.png": lambda p: save_figure(plt.subplots(figsize=(20, 20))[0], p, dpi=200),
    "model.safetensors": lambda p: save_safetensors(model, p, meta),
    "checkpoint-last.pt": lambda p: atomic_save({"model": model.state_dict()}, p),
}
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
out = {}
for name, write in writers.items():
    try:
        write(root / name)
        out[name] = "written"
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc), getattr(exc, "errno", None)]
print(json.dumps(out))
"""


def test_real_write_errors_of_every_writer_keep_the_previous_file(tmp_path):
    old = {"summary.json": b"{}", "curves.png": b"\x89PNG old", "model.safetensors": b"old", "checkpoint-last.pt": b"o"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_WRITERS, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in old:
        assert result[name] == ["OSError", f"file too large while writing {tmp_path / name}", errno.EFBIG], name
        assert (tmp_path / name).read_bytes() == old[name], name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)  # no temporary file left


DRIVER_LIMITED = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))
from mobilenet_v1.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_training_on_a_full_disk_is_one_line_and_resumable(finished, tmp_path):
    """The first checkpoint (step 1) cannot be written: exit 2, the last stderr line names
    the file, no partial file and no lock are left; with space again, --resume finishes."""
    data, _ = finished
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MOBILENET_V1_TEST_SIGNAL", None)
    args = ["train", "--data", str(data), "--output", str(run), *TINY, "--epochs", "1", "--checkpoint-steps", "1"]
    full = subprocess.run(
        [sys.executable, "-c", DRIVER_LIMITED, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert full.returncode == 2, full.stderr
    assert full.stderr.strip().splitlines()[-1] == (
        f"mobilenet-v1: error: file too large while writing {run / LAST}"
    ), full.stderr
    assert "Traceback" not in full.stderr
    assert sorted(p.name for p in run.iterdir()) == ["classes.json", "config.json", "tensorboard"]
    done = run_cli(["--resume", run])
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


def test_full_disk_at_the_summary_keeps_the_old_summary(run_copy, monkeypatch, capsys):
    """Extending a finished run, writing summary.json fails: its previous content stays
    (never a 0-byte file), one line names it, and the lock is gone."""
    old = (run_copy / "summary.json").read_bytes()
    real = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name.startswith(".summary."):
            real(self, "")  # the disk filled up at the first byte
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, err = run_main(["train", "--resume", str(run_copy), "--epochs", "2"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (
        f"mobilenet-v1: error: no space left on device while writing {run_copy / 'summary.json'}"
    )
    assert (run_copy / "summary.json").read_bytes() == old
    assert not (run_copy / LOCK).exists() and not list(run_copy.glob(".*partial*"))


def test_save_figure_failure_leaves_no_png(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match=r"no space left on device while writing .*curves\.png"):
        save_figure(fig, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []
