"""The stack's processes: started detached, checked by PID and start time, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from build_assets.errors import UserError

STOP_TIMEOUT = 20.0

# A live Popen object per process we started, so we can reap it (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen] = {}


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # zombie: as good as dead
        return None
    return int(fields[19])


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs and (when known) is still the process that started at `start_time`."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    current = proc_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def spawn(
    argv: list[str], log: Path, pidfile: Path | None, env: dict[str, str] | None = None
) -> tuple[int, int | None]:
    """Start a detached process (own session) logging to `log`; return (pid, start_time)."""
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    _CHILDREN[proc.pid] = proc
    if pidfile is not None:
        pidfile.write_text(f"{proc.pid}\n")
    return proc.pid, proc_start_time(proc.pid)


def stop_pid(pid: int, start_time: int | None, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM `pid`, then SIGKILL its process group after `timeout`; True if it was running."""
    if not pid_alive(pid, start_time):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for(lambda: not pid_alive(pid, start_time), timeout):
        return True
    # Our processes lead their own session, so the group holds exactly what we started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid, start_time), 5.0)
    return True


def wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `cond` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def last_line(log: Path) -> str:
    """The last non-blank line of `log` (at most 300 characters), for an error message."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def require(binary: str, hint: str) -> str:
    """The path of `binary`, or one line saying how to install it."""
    path = shutil.which(binary)
    if not path:
        raise UserError(f"{binary} not found: {hint}")
    return path
