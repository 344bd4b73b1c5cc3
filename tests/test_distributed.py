"""Distributed helpers (in-process) and real multi-process runs on CPU with gloo (subprocesses).

Every subprocess has a timeout: a hang is a test failure, never a stuck CI job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from mobilenet_v1.distributed import (
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
    scaling_summary,
    unwrap_model,
    wrap_model,
)

ROOT = Path(__file__).resolve().parents[1]
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
    assert unwrap_model(model) is model
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(t, env), torch.tensor([1.0, 2.0]))
    barrier(env)
    cleanup(env)
    assert make_sampler(range(10), env, shuffle=False, seed=0) is None
    assert make_eval_sampler(range(10), env) is None


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
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
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


# ---------------------------------------------------------------- bad rendezvous (subprocesses)

PROBE = (
    "import torch\n"
    "from mobilenet_v1.distributed import init_distributed, all_reduce_sum, broadcast_buffers, cleanup\n"
    "env = init_distributed('cpu')\n"
    "assert init_distributed('cpu') == env\n"
    "bn = torch.nn.BatchNorm1d(2)\n"
    "bn.running_mean.fill_(env.rank + 1)\n"
    "broadcast_buffers(bn, env)\n"
    "print('sum', all_reduce_sum(torch.ones(1), env).item(), 'bn', bn.running_mean.tolist())\n"
    "cleanup(env)\n"
)


FAIL_ON_RANK_1 = (
    "from mobilenet_v1.distributed import init_distributed, fail_together\n"
    "env = init_distributed('cpu')\n"
    "with fail_together(env, 'read its data'):\n"
    "    if env.rank == 1:\n"
    "        raise FileNotFoundError('data folder not found: /nowhere')\n"
)


def launch_probe(
    world_size: int, ranks: list[int], port: int, script: str = PROBE
) -> list[subprocess.CompletedProcess]:
    """Start ``ranks`` by hand (as on separate nodes) and wait for all, each bounded by a timeout."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=run_env(
                {
                    "RANK": str(r),
                    "WORLD_SIZE": str(world_size),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port),
                    TIMEOUT_ENV: "3",
                }
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ranks
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_two_processes_reduce():
    results = launch_probe(2, [0, 1], free_port())
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    assert all("sum 2.0 bn [1.0, 1.0]" in r.stdout for r in results)


def test_unreachable_rendezvous_is_a_timeout_error():
    port = free_port()  # closed: nobody listens there
    (result,) = launch_probe(2, [1], port)
    assert result.returncode != 0
    assert f"TimeoutError: rank 1 of 2: rendezvous endpoint 127.0.0.1:{port} unreachable for 3 s" in result.stderr
    assert "frame #" not in result.stderr  # our check comes first: no C++ stack from the store client


def test_mismatched_world_size_is_a_timeout_error_on_every_rank():
    results = launch_probe(3, [0, 1], free_port())  # WORLD_SIZE says 3, only 2 start
    for rank, result in enumerate(results):
        assert result.returncode != 0
        assert f"rank {rank} of 3: could not join the gloo process group" in result.stderr


def test_setup_failure_on_one_rank_fails_every_rank():
    rank0, rank1 = launch_probe(2, [0, 1], free_port(), FAIL_ON_RANK_1)
    assert rank0.returncode != 0 and rank1.returncode != 0
    assert "FileNotFoundError: data folder not found: /nowhere" in rank1.stderr
    assert "ValueError: rank 1 failed to read its data: FileNotFoundError: data folder not found" in rank0.stderr
