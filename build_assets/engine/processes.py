"""Child processes and temp folders that do not outlive the process that owns them.

`popen_owned` starts a command in its own process group under a small bash guard. The guard
gets SIGTERM when its parent thread dies, however it dies (`prctl(PR_SET_PDEATHSIG)`, so a
`kill -9` of the owner too), and then stops the whole group: SIGTERM, and SIGKILL after a grace
period. A build script's `docker build` / `docker push` therefore never pushes for a dead run.

Temp folders are named after their owner (pid and process start time); `clean_orphaned`
removes those whose owner is gone, and only those.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from build_assets.engine.lease import process_alive, process_start_time

PR_SET_PDEATHSIG = 1
GRACE_S = 5

# "$@" runs in the background so the guard can take SIGTERM while waiting for it.
GUARD = f"""
"$@" &
child=$!
stop() {{
  trap '' TERM
  kill -TERM 0 2>/dev/null
  ( sleep {GRACE_S}; kill -KILL 0 ) &
  wait "$child"
  kill -KILL 0
}}
trap stop TERM
wait "$child"
"""

_OWNER_RE = re.compile(r"^(\d+)\.(\d+)-")
_libc: ctypes.CDLL | None = None


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn asking the kernel for SIGTERM when the parent (thread) dies."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    prctl = _libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the owner died before prctl: do not run at all
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def popen_owned(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen `argv` as the child of a guard leading a new process group (see module doc).

    `os.killpg(proc.pid, SIGTERM)` stops the whole group the same way the owner's death does.
    Call it from a thread that lives until the process ends (it waits for it)."""
    return subprocess.Popen(
        ["bash", "-c", GUARD, "build-assets-guard", *argv],
        start_new_session=True,
        preexec_fn=_die_with_parent(),
        **kwargs,
    )


def owner_prefix() -> str:
    """Temp-folder name prefix naming this process: '<pid>.<start time>-'."""
    pid = os.getpid()
    return f"{pid}.{process_start_time(pid) or 0}-"


def clean_orphaned(root: Path) -> list[Path]:
    """Remove the folders under `root` whose owner process is gone; return them."""
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            found = _OWNER_RE.match(entry.name)
            if not found or not entry.is_dir():
                continue
            pid, start = int(found.group(1)), int(found.group(2))
            if process_alive(pid, start or None):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


_cleaned: set[Path] = set()


def clean_orphaned_once(root: Path) -> None:
    """`clean_orphaned(root)` the first time this process asks for `root`."""
    if root not in _cleaned:
        _cleaned.add(root)
        clean_orphaned(root)
