"""A run folder is owned by one process: :class:`RunLock`.

The file ``run.lock`` holds the owner's pid, host, boot and process start time; it is
created exclusively before the run writes anything and removed when the run ends, also on
an error or Ctrl-C. A lock whose process is gone (SIGKILL, a reboot, a torchrun restart of
the same job) is stale and taken over with a warning; a live one refuses the second run,
naming its pid.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from ..files import create_exclusive

__all__ = ["LOCK", "RunLock", "check_not_running"]

LOCK = "run.lock"

# -- the run folder's owner -----------------------------------------------------------

# torchrun's id of the job and count of its restarts: a restarted group takes over the
# lock of the attempt before it (its rank 0 may now run on another host).
_JOB_ENV, _RESTART_ENV = "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_start(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks since boot)`` of a process, from Linux's /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    rest = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and ")"
    return (rest[0], rest[19]) if len(rest) > 19 else None


def _this_process() -> dict[str, Any]:
    started = _process_start(os.getpid())
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "start": started[1] if started else None,
        "job": os.environ.get(_JOB_ENV),
        "restart": os.environ.get(_RESTART_ENV, "0"),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file; None if there is none; ``{}`` if it is unreadable."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        owner = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    pid = owner.get("pid") if isinstance(owner, dict) else None
    return owner if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else {}


def _alive(owner: dict[str, Any]) -> bool | None:
    """Whether the lock's owner still runs: True, False, or None when it cannot be told
    (another host). A pid that is gone, a zombie, a pid reused by a newer process, a boot
    since, or an earlier attempt of this torchrun job: not alive."""
    if not owner:
        return False  # unreadable or hand-made: no owner to wait for
    job = owner.get("job")
    if job is not None and job == os.environ.get(_JOB_ENV):
        if str(owner.get("restart")) != os.environ.get(_RESTART_ENV, "0"):
            return False  # this job's attempt before torchrun restarted the group
    if owner.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except (OverflowError, ValueError, OSError):
        return False
    started = _process_start(pid)
    if started is not None and (started[0] == "Z" or (owner.get("start") and owner["start"] != started[1])):
        return False
    return True


def check_not_running(run_dir: str | Path) -> bool:
    """Refuse (one ``ValueError`` naming the pid) if a live process owns ``run_dir``.

    Returns whether a stale lock is there (taken over when the run starts)."""
    path = Path(run_dir) / LOCK
    owner = _read_lock(path)
    if owner is None:
        return False
    alive = _alive(owner)
    if alive is None:
        raise ValueError(
            f"run folder {run_dir} is locked by process {owner['pid']} on host {owner.get('host')!r}, "
            f"not this one; if that run has ended, delete {path}"
        )
    if alive:
        raise ValueError(
            f"run folder {run_dir} is in use by process {owner['pid']} (since {owner.get('time', '?')}); "
            f"wait for it to end or stop it (lock file {path})"
        )
    return True


class RunLock:
    """Ownership of a run folder by this process (see the module's docstring)."""

    def __init__(self, path: Path, record: str) -> None:
        self.path, self.record = path, record

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Create ``run_dir`` (if needed) and its lock, taking over a stale one with a
        warning; ``ValueError`` naming the owner if a live process holds it."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK
        record = json.dumps(_this_process()) + "\n"
        for _ in range(5):
            try:
                create_exclusive(path, record)
                return cls(path, record)
            except FileExistsError:
                pass
            if check_not_running(run_dir):
                cls._take_over(path)
        raise ValueError(f"cannot lock run folder {run_dir}: {path} keeps changing (another run is starting there?)")

    @staticmethod
    def _take_over(path: Path) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile (then it is put back)."""
        try:
            stale = path.read_bytes()
        except FileNotFoundError:
            return
        aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return  # another process took it over first
        if aside.read_bytes() != stale:  # a fresh lock, created after we read the stale one
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        owner = _read_lock_text(stale)
        warnings.warn(
            f"taking over the stale lock of process {owner.get('pid', '?')} (no longer running) in {path.parent}",
            RuntimeWarning,
            stacklevel=3,
        )

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        try:
            if self.path.read_text(encoding="utf-8") == self.record:
                self.path.unlink()
        except (OSError, UnicodeDecodeError):
            pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_lock_text(data: bytes) -> dict[str, Any]:
    try:
        owner = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return owner if isinstance(owner, dict) else {}
