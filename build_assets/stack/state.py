"""The stack's folder: its paths, `state.json` (the services `up` recorded) and its lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from build_assets.stack.services import Service


class Layout:
    """Paths under the stack's home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.state = home / "state.json"
        self.ports = home / "ports.json"  # survives `down`: the same addresses next time
        self.lock = home / ".lock"
        # dockerd's socket and exec-root must stay short (unix socket paths < 108 bytes).
        if len(str(home)) <= 40:
            self.run = home / "run"
        else:
            digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
            self.run = Path(tempfile.gettempdir()) / f"ba-{digest}"
        self.docker_sock = self.run / "docker.sock"
        self.docker_exec = self.run / "exec"
        self.docker_data = home / "docker"
        self.registry_data = home / "registry-data"
        self.registry_config = home / "registry.yml"

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.home / f"{name}.pid"


def load(layout: Layout) -> dict[str, Service]:
    """The services `state.json` records (none when it is missing or unreadable)."""
    try:
        data = json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return {}
    return {d["name"]: Service.from_dict(d) for d in data.get("services", [])}


def save(layout: Layout, services: dict[str, Service]) -> None:
    """Record `services` in `state.json` (atomically; liveness is not recorded)."""
    tmp = layout.state.with_suffix(".tmp")
    payload = {
        "services": [
            {k: v for k, v in asdict(s).items() if k != "alive"} for s in services.values()
        ]
    }
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(layout.state)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the stack folder's lock: one `up` or `down` at a time."""
    layout.home.mkdir(parents=True, exist_ok=True)
    with open(layout.lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
