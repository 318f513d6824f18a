"""The stack's Docker engine: a reachable one reused, else a private dockerd of ours; what a
dead dockerd of ours left running or mounted is cleared before a new one starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from build_assets.errors import UserError
from build_assets.stack.health import docker_ping
from build_assets.stack.processes import require, spawn, wait_for
from build_assets.stack.services import Service
from build_assets.stack.state import Layout

DOCKERD = "dockerd"
SYSTEM_SOCKET = Path("/var/run/docker.sock")


def start_docker(layout: Layout) -> Service:
    """A private dockerd of ours on the stack folder (vfs storage, no networking of its own)."""
    dockerd = require(DOCKERD, "apt-get install docker.io")
    if os.geteuid() != 0:
        raise UserError("a private dockerd needs root: run as root or set DOCKER_HOST")
    for d in (layout.docker_data, layout.docker_exec, layout.run):
        d.mkdir(parents=True, exist_ok=True)
    pidfile = layout.pidfile("dockerd")
    with contextlib.suppress(FileNotFoundError):
        layout.docker_sock.unlink()
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()  # stale: the dockerd it names is dead (checked by the caller)
    argv = [
        dockerd,
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={layout.docker_data}",
        f"--exec-root={layout.docker_exec}",
        "-H",
        f"unix://{layout.docker_sock}",
        "--pidfile",
        str(pidfile),
    ]
    log = layout.log("dockerd")
    pid, started = spawn(argv, log, None)
    return Service("docker", f"unix://{layout.docker_sock}", pid, True, started, None, str(log))


def external_docker(
    private_sock: Path, docker_host: str | None, tls_verify: bool = False
) -> str | None:
    """A reachable Docker engine that is not ours: `docker_host` (DOCKER_HOST), then
    /var/run/docker.sock (`tls_verify`: a tcp:// engine speaks TLS, DOCKER_TLS_VERIFY)."""
    candidates = []
    if docker_host and docker_host != f"unix://{private_sock}":
        candidates.append(docker_host)
    if SYSTEM_SOCKET.exists():
        candidates.append(f"unix://{SYSTEM_SOCKET}")
    for host in candidates:
        if docker_ping(host, tls_verify=tls_verify):
            return host
    return None


def unmount_under(root: Path) -> None:
    """Unmount what a stopped dockerd left mounted at or under `root` (netns files, build
    containers' root folders, the bind of its data-root onto itself)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    top = str(root).rstrip("/")
    targets = [m.split()[1] for m in mounts if len(m.split()) > 1]
    mine = (t for t in targets if t == top or t.startswith(top + "/"))  # dockerd binds its root
    for target in sorted(mine, reverse=True):
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def engine_leftovers(layout: Layout) -> list[int]:
    """PIDs a dead dockerd of ours left behind: its containerd and shims (they name its
    exec-root or data-root) and build containers (rooted under its data-root)."""
    roots = [str(layout.docker_exec).rstrip("/") + "/", str(layout.docker_data).rstrip("/") + "/"]
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            root = os.readlink(proc / "root")
        except OSError:
            continue  # gone, or not ours to read
        if any(r in cmdline or (root + "/").startswith(r) for r in roots):
            found.append(int(proc.name))
    return found


def clear_dead_engine(layout: Layout) -> None:
    """Kill what a crashed dockerd of ours left running and unmount what it left mounted, so
    a new one can start on the same folders (a leftover containerd holds its socket)."""
    for pid in engine_leftovers(layout):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not engine_leftovers(layout), 10.0)
    # its containerd may linger as a zombie (nobody reaps it): a new dockerd that finds the PID
    # of containerd.pid "still running" waits for its socket until it gives up
    with contextlib.suppress(FileNotFoundError):
        (layout.docker_exec / "containerd" / "containerd.pid").unlink()
    unmount_under(layout.docker_exec)
    unmount_under(layout.docker_data)
