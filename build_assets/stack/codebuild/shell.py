"""The shell session of a build: one fresh shell per command that starts from the environment
and folder the previous one left (saved by an EXIT trap: `env -0`, `pwd`), and the process
groups the commands run in."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KILL_GRACE_S = 2.0


def wrapper_script(state: Path, command: str) -> str:
    """A script running `command` that saves its environment and folder under `state`."""
    return (
        f"__ba_state={shlex.quote(str(state))}\n"
        '__ba_save() { env -0 > "$__ba_state/env0.tmp" && mv "$__ba_state/env0.tmp"'
        ' "$__ba_state/env0"; pwd > "$__ba_state/cwd"; }\n'
        "trap __ba_save EXIT\n"
        f"{command}\n"
    )


def parse_env0(path: Path) -> dict[str, str] | None:
    """The environment a command saved (`env -0`), None when it saved none (killed, exec)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name not in (b"_", b"SHLVL"):
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def pump(stream: Any, sink: Callable[[str], None]) -> None:
    """Each line of a command's output to `sink`, until the output closes."""
    for raw in iter(stream.readline, b""):
        sink(raw.decode(errors="replace").rstrip("\r\n"))
    stream.close()


def group_alive(pgid: int) -> bool:
    """True while a process of the group runs (a group of zombies counts as gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a group of zombies only (reaped by nobody yet) counts as gone
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def kill_group(pgid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds if anything is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
