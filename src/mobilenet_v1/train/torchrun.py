"""A process's place in a torchrun job, read from the environment, and the rendezvous helpers.

torchrun (or a user starting processes by hand, one per node) sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them training
is a single process. ``distributed.init_distributed`` uses these helpers to join the
group with a bounded wait (``MOBILENET_V1_DIST_TIMEOUT``).

Every value read from the environment is checked where it is read: a bad one is a
one-line ``ValueError`` naming the variable and quoting (at most 40 characters of) its
value, never an ``OverflowError`` or a wait that cannot end.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistEnv",
    "attempt_store",
    "dist_timeout",
    "env_int",
    "read_env",
    "restart_count",
    "wait_for_endpoint",
]

TIMEOUT_ENV = "MOBILENET_V1_DIST_TIMEOUT"
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"
DEFAULT_TIMEOUT_S = 600.0  # torchrun's own rendezvous join timeout
# A week: far beyond any rendezvous or collective wait, and well inside what timedelta
# and the C++ store's millisecond timeouts can hold (1e300 s overflowed timedelta).
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_INT32 = 2**31 - 1  # ranks, world sizes and counts are C ints in torch.distributed


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job: global rank, number of processes, rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and plots; the others only compute."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _shown(value: str) -> str:
    """An environment value as quoted in a message: ``repr`` (control characters escaped),
    at most 40 characters of it."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def env_int(environ: Mapping[str, str], name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """The integer in ``environ[name]``, within ``[minimum, maximum]`` where given."""
    value = environ[name]
    try:
        number = int(value)
    except ValueError:  # not an integer, or more digits than int() converts
        raise ValueError(f"environment variable {name} must be an integer, got {_shown(value)}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "" if minimum is None else f" >= {minimum}"
        high = "" if maximum is None else f"{' and' if low else ''} <= {maximum}"
        raise ValueError(f"environment variable {name} must be an integer{low}{high}, got {_shown(value)}")
    return number


def read_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; a single process when unset.

    ``LOCAL_RANK`` defaults to ``RANK`` (right for processes started by hand on one node).
    """
    environ = os.environ if environ is None else environ
    present = [name for name in ("RANK", "WORLD_SIZE") if name in environ]
    if not present:
        return DistEnv()
    if len(present) == 1:
        missing = "WORLD_SIZE" if present == ["RANK"] else "RANK"
        raise ValueError(f"{present[0]} is set but {missing} is not: launch with torchrun or set both")
    rank, world_size = env_int(environ, "RANK", maximum=MAX_INT32), env_int(environ, "WORLD_SIZE", maximum=MAX_INT32)
    local_rank = env_int(environ, "LOCAL_RANK", maximum=MAX_INT32) if "LOCAL_RANK" in environ else rank
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    if not 0 <= local_rank <= rank:
        raise ValueError(f"LOCAL_RANK must be in [0, RANK={rank}], got {local_rank}")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def dist_timeout(environ: Mapping[str, str] | None = None) -> timedelta:
    """The bound on any wait for other processes: ``MOBILENET_V1_DIST_TIMEOUT`` seconds (default 600)."""
    environ = os.environ if environ is None else environ
    raw = environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {_shown(raw)}")
    if seconds > MAX_TIMEOUT_S:
        raise ValueError(f"{TIMEOUT_ENV} must be at most {MAX_TIMEOUT_S:g} seconds (a week), got {_shown(raw)}")
    return timedelta(seconds=seconds)


def restart_count(environ: Mapping[str, str] | None = None) -> int:
    """torchrun's ``TORCHELASTIC_RESTART_COUNT`` (0 when unset): how often this node's
    agent restarted the group."""
    environ = os.environ if environ is None else environ
    return env_int(environ, RESTART_ENV, minimum=0, maximum=MAX_INT32) if environ.get(RESTART_ENV, "") != "" else 0


def wait_for_endpoint(host: str, port: int, timeout: float, env: DistEnv) -> None:
    """Wait for rank 0's store to accept connections: a clear error, not the store client's C++ log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"rank {env.rank} of {env.world_size}: rendezvous endpoint {host}:{port} unreachable for "
                    f"{timeout:g} s ({exc.strerror or exc}); is rank 0 running, and MASTER_ADDR/MASTER_PORT right?"
                ) from None
            time.sleep(0.2)


def attempt_store(host: str, port: int, timeout: timedelta) -> dist.Store | None:
    """torchrun's store, under a prefix per restart, so a restarted group never reads stale keys.

    torchrun (c10d rendezvous) keeps one store for all restarts, and the gloo/nccl
    addresses of the killed attempt stay in it: a restarted rank that reads them before
    its peer rewrites them cannot connect (seen with PyTorch 2.14). With one agent
    (one node) ``TORCHELASTIC_RESTART_COUNT`` names the attempt; with several nodes the
    agents' counts can differ, so there we rely on ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
    (a fresh store per round, see docs/distributed.md).
    """
    if "GROUP_WORLD_SIZE" in os.environ and env_int(os.environ, "GROUP_WORLD_SIZE", minimum=1) != 1:
        return None
    attempt = restart_count()
    client = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"mobilenet_v1/attempt_{attempt}/", client)
