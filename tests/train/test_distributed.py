"""Distributed helpers (in-process) and real multi-process runs on CPU with gloo (subprocesses).

Every subprocess has a timeout: a hang is a test failure, never a stuck CI job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path
from subprocess import PIPE

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DistributedSampler

from mobilenet_v1.train.distributed import (
    TIMEOUT_ENV,
    DistEnv,
    ShardSampler,
    all_reduce_sum,
    barrier,
    cleanup,
    dist_timeout,
    global_batch_size,
    init_distributed,
    local_device,
    make_eval_sampler,
    make_sampler,
    read_env,
    restarted_by_torchrun,
    scaling_summary,
    wrap_model,
)

ROOT = Path(__file__).resolve().parents[2]
TWO = DistEnv(rank=1, world_size=2, local_rank=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_env(extra: dict[str, str]) -> dict[str, str]:
    """A clean environment for a child process: no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


# ---------------------------------------------------------------- in-process


def test_single_process_when_torchrun_variables_are_unset():
    env = read_env({})
    assert env == DistEnv(rank=0, world_size=1, local_rank=0)
    assert env.is_main and not env.is_distributed


def test_reads_torchrun_variables():
    env = read_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank) == (3, 4, 1)
    assert env.is_distributed and not env.is_main
    assert read_env({"RANK": "1", "WORLD_SIZE": "2"}).local_rank == 1  # by hand on one node


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"RANK": "0"}, "WORLD_SIZE is not"),
        ({"WORLD_SIZE": "2"}, "RANK is not"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK must be an integer, got 'x'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK must be in \[0, WORLD_SIZE=2\), got 2"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be >= 1, got 0"),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "5"}, "LOCAL_RANK must be in"),
    ],
)
def test_bad_torchrun_variables_are_one_line_errors(environ, match):
    with pytest.raises(ValueError, match=match):
        read_env(environ)


def test_timeout_from_environment():
    assert dist_timeout({}).total_seconds() == 600
    assert dist_timeout({TIMEOUT_ENV: "2.5"}).total_seconds() == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match=f"{TIMEOUT_ENV} must be a positive number of seconds, got '{bad}'"):
            dist_timeout({TIMEOUT_ENV: bad})


def test_single_process_helpers_are_no_ops(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = init_distributed("cpu")
    model = nn.Linear(2, 2)
    assert wrap_model(model, env, "cpu", sync_bn=False) is model
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(t, env), torch.tensor([1.0, 2.0]))
    barrier(env)
    cleanup(env)
    assert make_sampler(range(10), env, shuffle=False, seed=0) is None
    assert make_eval_sampler(range(10), env) is None


def test_restart_count_from_torchrun(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert not restarted_by_torchrun(DistEnv())
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert restarted_by_torchrun(DistEnv())


def test_shuffled_order_does_not_depend_on_world_size():
    """W processes x batch b see the same global batches as 1 process x batch W*b."""
    data = range(13)
    one = make_sampler(data, DistEnv(), shuffle=True, seed=7)
    ranks = [make_sampler(data, DistEnv(rank=r, world_size=2, local_rank=r), shuffle=True, seed=7) for r in (0, 1)]
    for sampler in (one, *ranks):
        assert isinstance(sampler, DistributedSampler)
        sampler.set_epoch(3)
    order, shards = list(one), [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 7  # padded: every rank runs the same number of steps
    b = 2
    for step in range(3):
        global_batch = shards[0][step * b : (step + 1) * b] + shards[1][step * b : (step + 1) * b]
        assert sorted(global_batch) == sorted(order[step * 2 * b : (step + 1) * 2 * b])
    ranks[0].set_epoch(4)
    assert list(ranks[0]) != shards[0]  # set_epoch reshuffles


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_eval_shards_cover_every_sample_once(n, world):
    shards = [list(ShardSampler(range(n), DistEnv(rank=r, world_size=world, local_rank=r))) for r in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert isinstance(make_eval_sampler(range(n), DistEnv(rank=0, world_size=world)), ShardSampler)


def test_sync_bn_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="sync_bn=True needs CUDA"):
        wrap_model(nn.BatchNorm2d(3), TWO, "cpu", sync_bn=True)


def test_local_device():
    assert local_device("cpu", TWO) == torch.device("cpu")
    assert local_device("cuda", DistEnv()) == torch.device("cuda")
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="LOCAL_RANK 1 needs GPU 1"):
            local_device("cuda", TWO)


def test_global_batch_and_scaling_summary():
    env = DistEnv(rank=0, world_size=4)
    assert global_batch_size(32, env) == 128
    line = scaling_summary(32, 0.4, env, reference_batch=256)
    assert line.startswith("4 process(es) x batch 32 = global batch 128; lr 0.4 (the recipe's")
    assert "from its reference batch 256 to 128" in line
    assert "as given" in scaling_summary(32, 0.1, DistEnv())


# ---------------------------------------------------------------- several processes (subprocesses)

PROBE = (
    "import torch\n"
    "from mobilenet_v1.train.distributed import init_distributed, all_reduce_sum, broadcast_buffers, cleanup\n"
    "env = init_distributed('cpu')\n"
    "assert init_distributed('cpu') == env\n"
    "bn = torch.nn.BatchNorm1d(2)\n"
    "bn.running_mean.fill_(env.rank + 1)\n"
    "broadcast_buffers(bn, env)\n"
    "print('sum', all_reduce_sum(torch.ones(1), env).item(), 'bn', bn.running_mean.tolist())\n"
    "cleanup(env)\n"
)


def launch_by_hand(
    argv: list[str], world_size: int, ranks: list[int], port: int, cwds: list[Path] | None = None, timeout: int = 3
) -> list[subprocess.CompletedProcess]:
    """Start ``ranks`` without torchrun (as on separate nodes); wait for all, bounded by a timeout.

    ``timeout`` is the processes' rendezvous timeout: short where it must expire, longer
    where the group must form on a loaded CI machine (it bounds, never adds, the wait).
    """
    procs = []
    for i, rank in enumerate(ranks):
        variables = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1"}
        variables |= {"MASTER_PORT": str(port), TIMEOUT_ENV: str(timeout)}
        cwd = cwds[i] if cwds else None
        procs.append(subprocess.Popen(argv, env=run_env(variables), cwd=cwd, stdout=PIPE, stderr=PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_two_processes_reduce_and_share_rank0_buffers():
    results = launch_by_hand([sys.executable, "-c", PROBE], 2, [0, 1], free_port(), timeout=60)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    assert all("sum 2.0 bn [1.0, 1.0]" in r.stdout for r in results)


# ---------------------------------------------------------------- `mobilenet-v1 train` under torchrun

# `mobilenet-v1 train` with every BatchNorm2d replaced by GroupNorm(1, C) and no dropout:
# see test_two_processes_match_one_process_with_twice_the_batch for why.
PER_SAMPLE_NORM_TRAIN = """
import sys

from torch import nn

from mobilenet_v1 import mobilenet_v1
from mobilenet_v1.train import trainer as train
from mobilenet_v1.data.transforms import Preprocessing


def per_sample_norm(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            per_sample_norm(child)
    return module


def build_model(config, classes):
    model = mobilenet_v1(alpha=config.alpha, num_classes=len(classes), dropout=0.0)
    return per_sample_norm(model), Preprocessing(resolution=config.resolution)


if __name__ == "__main__":
    from mobilenet_v1.cli import main

    train.build_model = build_model
    sys.exit(main(sys.argv[1:]))
"""
# 24 training images: 3 steps an epoch with a global batch of 8; 9 validation images, so
# the two evaluation shards have 5 and 4 images.
TINY = ["--alpha", "0.25", "--resolution", "32", "--epochs", "2", "--workers", "0", "--device", "cpu"]


def make_folder(root: Path, train: int = 12, val: tuple[int, int] = (5, 4)) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split, counts in (("train", (train, train)), ("val", val)):
        for c, count in enumerate(counts):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(count):
                pixels = (torch.rand(40, 40, 3, generator=gen) * 128 + 100 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{i}.png")
    return root


def torchrun(args: list, nproc: int, extra_env: dict[str, str] | None = None, restarts: int = 0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += [f"--max-restarts={restarts}", *map(str, args)]
    return subprocess.run(cmd, env=run_env(extra_env or {}), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training as 1 process x batch 8, 2 processes x batch 4, and 2 x 4 killed and restarted."""
    root = tmp_path_factory.mktemp("ddp")
    data = make_folder(root / "data")
    script = root / "per_sample_norm_train.py"
    script.write_text(PER_SAMPLE_NORM_TRAIN)
    common = [script, "train", "--data", data, *TINY]
    one_args = [sys.executable, *map(str, [*common, "--batch-size", "8", "--output", root / "one"])]
    one = subprocess.run(one_args, env=run_env({}), capture_output=True, text=True, timeout=300)
    two = torchrun([*common, "--batch-size", "4", "--output", root / "two"], nproc=2)
    # Rank 1 SIGKILLs itself after global step 4 (epoch 2, mid-epoch) on the first attempt.
    elastic_args = [*common, "--batch-size", "4", "--checkpoint-steps", "1", "--output", root / "elastic"]
    elastic = torchrun(elastic_args, nproc=2, extra_env={"MOBILENET_V1_TEST_SIGNAL": "9@4@1"}, restarts=1)
    for result in (one, two, elastic):
        assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "script": script, "one": one, "two": two, "elastic": elastic}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(runs):
    """2 processes x batch 4 reach the weights of 1 process x batch 8 (atol 1e-5), and agree on metrics.

    Batch norm couples the samples of a batch: with per-process statistics, 2 x 4 differs
    from 1 x 8 by design, and SyncBatchNorm has no CPU kernel. Eval-mode BN or the folded
    model (no normalization) would make them equal, but a freshly initialised 14-block
    network without normalization has vanishing activations (feature std ~1e-17 here),
    so the weights would hardly move and the test would prove nothing. So the model's
    BatchNorm2d layers are swapped for GroupNorm(1, C), a per-sample normalization, and
    dropout is off: then every computation is per sample, DDP's averaged gradient is the
    big batch's gradient, and only float summation order differs (seen: 1.2e-7). The
    real data pipeline, sampler, optimizer (TF RMSprop), LR scaling and loop run unchanged.
    """
    root = runs["root"]
    one, two = load_file(root / "one" / "model-final.safetensors"), load_file(root / "two" / "model-final.safetensors")
    spec = importlib.util.spec_from_file_location("per_sample_norm_train", runs["script"])
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    torch.manual_seed(0)  # the runs' --seed: the runs' initial weights
    start, _ = helper.build_model(types.SimpleNamespace(alpha=0.25, resolution=32), ["class0", "class1"])
    moved = max((one[k] - start.state_dict()[k]).abs().max().item() for k in one)
    assert moved > 1e-3  # 100x the tolerance: training really changed the weights
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)
    # Metrics reduced over ranks equal the single process's: evaluation over uneven shards
    # (5 + 4 images), and the training loss/accuracy of each epoch.
    rows_one, rows_two = metrics(root / "one"), metrics(root / "two")
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [3, 6]
    for a, b in zip(rows_one, rows_two, strict=True):
        assert a["val_acc"] == b["val_acc"] and a["train_acc"] == b["train_acc"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_rank0_alone_logs_and_reports_the_global_batch(runs):
    one, two = runs["one"], runs["two"]
    assert "1 process(es) x batch 8 = global batch 8; lr 0.01125" in one.stderr
    assert two.stderr.count("2 process(es) x batch 4 = global batch 8; lr 0.01125 (the recipe's") == 1
    assert two.stderr.count("epoch 2: train loss") == 1
    assert json.loads(two.stdout)["steps"] == 6  # one summary, from rank 0


@pytest.mark.slow
def test_elastic_restart_resumes_from_the_last_checkpoint_and_finishes(runs):
    root, elastic = runs["root"], runs["elastic"]
    assert "exitcode: -9" in elastic.stderr  # rank 1 was killed and torchrun restarted the group
    assert elastic.stderr.count("epoch 1: train loss") == 1  # epoch 1 was not trained again
    assert [r["step"] for r in metrics(root / "elastic")] == [3, 6]
    restarted = load_file(root / "elastic" / "model-final.safetensors")
    uninterrupted = load_file(root / "two" / "model-final.safetensors")
    for name in uninterrupted:  # exact resume: the same weights as the run that was never killed
        torch.testing.assert_close(restarted[name], uninterrupted[name], rtol=0, atol=1e-6, msg=name)


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "mobilenet_v1", "train", *map(str, args)]


@pytest.mark.slow
def test_unreachable_rendezvous_is_one_line_on_stderr(tmp_path):
    port = free_port()  # closed: nobody listens there
    args = ["--data", make_folder(tmp_path / "data"), "--output", tmp_path / "run", "--batch-size", "4", *TINY]
    (result,) = launch_by_hand(cli(*args), 2, [1], port)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mobilenet-v1: error: rank 1 of 2: rendezvous endpoint 127.0.0.1:{port} unreachable for 3 s")
    )
    assert "Traceback" not in result.stderr and "frame #" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_mismatched_world_size_fails_on_every_rank(tmp_path):
    args = ["--data", make_folder(tmp_path / "data"), "--output", tmp_path / "run", "--batch-size", "4", *TINY]
    results = launch_by_hand(cli(*args), 3, [0, 1], free_port())  # WORLD_SIZE says 3, only 2 start
    for rank, result in enumerate(results):
        assert result.returncode == 2
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"mobilenet-v1: error: rank {rank} of 3: could not join the gloo process group")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_rank_that_cannot_read_its_data_stops_every_rank(tmp_path):
    """As on two nodes where the second lacks the data: the same relative --data, other folders."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    make_folder(node0 / "data")
    node1.mkdir()
    args = ["--data", "data", "--output", tmp_path / "run", "--batch-size", "4", *TINY]
    rank0, rank1 = launch_by_hand(cli(*args), 2, [0, 1], free_port(), cwds=[node0, node1], timeout=60)
    assert rank1.returncode == 2
    assert rank1.stderr.strip().splitlines()[-1] == "mobilenet-v1: error: data folder not found: data"
    assert rank0.returncode == 2
    assert rank0.stderr.strip().splitlines()[-1] == (
        "mobilenet-v1: error: rank 1 failed to prepare the run: FileNotFoundError: data folder not found: data"
    )
    assert not (tmp_path / "run").exists()
