"""Data-parallel training on many processes and nodes: torchrun + DistributedDataParallel.

The paper trained with asynchronous gradient descent on many workers (Section 4, citing
TensorFlow); we use the synchronous equivalent, DDP: every process holds a replica, sees
its own shard of each global batch, and gradients are averaged across processes before
each optimizer step, so ``W`` processes with batch ``b`` take the same steps as one
process with batch ``W * b`` (up to float rounding and per-process batch-norm statistics).

torchrun is detected from the environment like nanoGPT does (``RANK``/``WORLD_SIZE``);
without them everything here is a no-op and training runs as one process. Every wait on
other processes (rendezvous, collectives) is bounded by ``MOBILENET_V1_DIST_TIMEOUT``
seconds, so a missing peer is an error, not a hang.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Sampler

from .torchrun import (
    TIMEOUT_ENV,
    DistEnv,
    attempt_store,
    dist_timeout,
    env_int,
    read_env,
    restart_count,
    wait_for_endpoint,
)

__all__ = [
    "TIMEOUT_ENV",
    "DistEnv",
    "ShardSampler",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "dist_timeout",
    "fail_together",
    "global_batch_size",
    "init_distributed",
    "local_device",
    "make_eval_sampler",
    "make_sampler",
    "read_env",
    "restarted_by_torchrun",
    "scaling_summary",
    "wrap_model",
]


def local_device(device: torch.device | str, env: DistEnv) -> torch.device:
    """This process's device: on CUDA, GPU ``local_rank`` of its node (one GPU per process)."""
    device = torch.device(device)
    if device.type != "cuda" or not env.is_distributed:
        return device
    count = torch.cuda.device_count()
    if env.local_rank >= count:
        raise ValueError(f"LOCAL_RANK {env.local_rank} needs GPU {env.local_rank}, but this node has {count} GPU(s)")
    return torch.device("cuda", env.local_rank)


def init_distributed(device: torch.device | str) -> DistEnv:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA).

    On CUDA the group has both backends (``cpu:gloo,cuda:nccl``): CUDA tensors go through
    NCCL, while CPU-side exchanges (:func:`fail_together`'s messages) use gloo.

    A rendezvous that cannot be reached or does not fill up (a wrong ``WORLD_SIZE``, a
    peer that never starts) raises ``TimeoutError`` after the timeout (:func:`dist_timeout`)
    on every process that is waiting, instead of hanging.
    """
    env = read_env()
    if not env.is_distributed or dist.is_initialized():  # a second call (CLI, then train) is free
        return env
    device = local_device(device, env)
    timeout = dist_timeout()
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"RANK and WORLD_SIZE are set but {name} is not: launch with torchrun or set it")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    host, port = os.environ["MASTER_ADDR"], env_int(os.environ, "MASTER_PORT", minimum=1, maximum=65535)
    if not host.strip():
        raise ValueError("environment variable MASTER_ADDR is empty: set it to rank 0's host name or address")
    endpoint = f"{host}:{port}"
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's store is up
    if env.rank != 0 and not agent_store:
        wait_for_endpoint(host, port, timeout.total_seconds(), env)
    try:
        store = attempt_store(host, port, timeout) if agent_store else None
        dist.init_process_group(backend, store=store, timeout=timeout, rank=env.rank, world_size=env.world_size)
        # The store only proves that rank 0 is up; one collective proves that all ranks are.
        barrier(env)
    except RuntimeError as exc:  # DistNetworkError, DistStoreError, gloo's timeouts
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TimeoutError(
            f"rank {env.rank} of {env.world_size}: could not join the {backend} process group at {endpoint} "
            f"within {timeout.total_seconds():g} s (is every rank started, with the same WORLD_SIZE?): {cause}"
        ) from exc
    return env


def wrap_model(model: nn.Module, env: DistEnv, device: torch.device | str, sync_bn: bool = False) -> nn.Module:
    """Wrap ``model`` (already on ``device``) in DDP; unchanged for a single process.

    Without ``sync_bn`` each process normalizes with its own batch's statistics (``b``
    images, not ``W * b``); with it, over the global batch (CUDA only: no CPU kernel).
    """
    if not env.is_distributed:
        return model
    device = torch.device(device)
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(f"sync_bn=True needs CUDA devices (SyncBatchNorm has no CPU kernel), got {device}")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def make_sampler(dataset: Dataset, env: DistEnv, shuffle: bool, seed: int) -> Sampler | None:
    """Training sampler: each process gets a disjoint, equal-length shard of every epoch.

    When shuffling, a :class:`DistributedSampler` is returned even for one process: the
    epoch's order then depends only on ``seed`` and the epoch (``set_epoch``, which the
    caller must call), so ``W`` processes with batch ``b`` see the same global batches as
    one process with batch ``W * b``. Shards are padded by repeating samples so that all
    processes run the same number of steps (DDP needs that).
    """
    if not shuffle and not env.is_distributed:
        return None
    return DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...``: evaluation shards without padding or duplicates.

    Shards differ in length by at most one, so per-rank sums reduced with
    :func:`all_reduce_sum` equal a single-process evaluation exactly.
    """

    def __init__(self, dataset: Sized, env: DistEnv) -> None:
        self.num_samples = len(dataset)
        self.env = env

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.env.rank, self.num_samples, self.env.world_size))

    def __len__(self) -> int:
        return len(range(self.env.rank, self.num_samples, self.env.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do (the order is fixed); there so callers treat both samplers alike."""


def make_eval_sampler(dataset: Sized, env: DistEnv) -> Sampler | None:
    """Evaluation sampler: a :class:`ShardSampler` when distributed, else ``None`` (in order)."""
    return ShardSampler(dataset, env) if env.is_distributed else None


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place and return it; reduce sums, never means (exact)."""
    if env.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (BN statistics) to every rank, so all evaluate the model rank 0 saves.

    DDP syncs buffers only at the start of each training forward: after the last step
    each rank holds statistics updated by its own batch.
    """
    if env.is_distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(env: DistEnv) -> None:
    """Wait for all processes (e.g. rank 0 finished writing a checkpoint); bounded by the timeout."""
    if env.is_distributed:
        dist.barrier()


@contextmanager
def fail_together(env: DistEnv, what: str) -> Iterator[None]:
    """Run a setup step (e.g. reading the data) on every rank; if it fails on any rank, fail on all.

    Without this, a rank whose data folder is missing would exit while the others wait in
    their first collective until the timeout. With it, every rank raises at once: the
    failing rank its own error, the others ``ValueError("rank R failed to <what>: ...")``.
    """
    error: Exception | None = None
    try:
        yield
    except Exception as exc:  # any failure must reach the other ranks before we leave
        error = exc
    if env.is_distributed:
        messages: list[str | None] = [None] * env.world_size
        mine = None if error is None else f"{type(error).__name__}: {error}"
        dist.all_gather_object(messages, mine)
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if failed and error is None:
            rank, message = failed[0]
            raise ValueError(f"rank {rank} failed to {what}: {message}")
    if error is not None:
        raise error


def restarted_by_torchrun(env: DistEnv) -> bool:
    """Whether torchrun restarted this group after a failure (``--max-restarts``).

    Each node's agent counts only its own restarts (an agent that restarts because
    another node failed keeps its count), so the largest ``TORCHELASTIC_RESTART_COUNT``
    over all ranks decides, the same answer on every rank.
    """
    count = torch.tensor([restart_count()])
    if env.is_distributed:
        dist.all_reduce(count, op=dist.ReduceOp.MAX)  # a CPU tensor: gloo, also in a CUDA group
    return int(count) > 0


def cleanup(env: DistEnv) -> None:
    """Leave the process group (call on every exit path so the next launch starts clean)."""
    if env.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def global_batch_size(batch_size: int, env: DistEnv) -> int:
    """``--batch-size`` is per process (as in torchvision's references): the global batch is ``W * b``."""
    return batch_size * env.world_size


def scaling_summary(batch_size: int, lr: float, env: DistEnv, reference_batch: int | None = None) -> str:
    """One log line: processes, per-process and global batch, and where the LR comes from.

    DDP averages gradients over the global batch, so the LR belongs to the global batch.
    With ``reference_batch``, ``lr`` came from the linear scaling rule (Goyal et al., 2017),
    ``lr = base_lr * global_batch / reference_batch``; without, it was given as is.
    """
    total = global_batch_size(batch_size, env)
    line = f"{env.world_size} process(es) x batch {batch_size} = global batch {total}; lr {lr:g} "
    if reference_batch is None:
        return line + "(as given, for the global batch; not rescaled with the number of processes)"
    return line + f"(the recipe's, scaled linearly from its reference batch {reference_batch} to {total})"
