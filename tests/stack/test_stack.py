"""The local stack: idempotent `up`, `status`, and `down` stopping only what it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from build_assets.engine import registry
from build_assets.errors import UserError
from build_assets.stack.local import StackInfo, docker_ping, stack_down, stack_status, stack_up

ROOT = Path(__file__).resolve().parents[2]


def _quiet(_: str) -> None:
    pass


def _until(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "build_assets.cli.stack", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env if env is not None else dict(os.environ),
        timeout=120,
    )


@pytest.mark.stack
def test_up_twice_reuses_the_running_services(local_stack: StackInfo) -> None:
    again = stack_up(local_stack.home, log=_quiet, docker_host=local_stack.docker_host)
    for name, svc in local_stack.services.items():
        assert again.services[name].address == svc.address
        assert again.services[name].pid == svc.pid
    assert again.env() == local_stack.env()
    assert docker_ping(again.docker_host)
    assert registry.ping(again.registry)


@pytest.mark.stack
def test_status_shows_every_service_alive(local_stack: StackInfo) -> None:
    status = stack_status(local_stack.home)
    assert set(status.services) == {"docker", "distribution", "moto", "registry", "codebuild"}
    assert status.all_alive

    out = _cli("status", "--home", str(local_stack.home), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {s["name"]: s["alive"] for s in data["services"]} == {
        "docker": True,
        "distribution": True,
        "registry": True,
        "moto": True,
        "codebuild": True,
    }
    assert data["env"]["BUILD_ASSETS_REGISTRY"] == local_stack.registry
    # the registry builders push to is the ECR proxy, which is also the ECR API's endpoint
    assert data["env"]["AWS_ENDPOINT_URL_ECR"] == f"http://{local_stack.registry}"
    assert local_stack.services["distribution"].address != local_stack.registry
    assert data["env"]["AWS_ENDPOINT_URL_CODEBUILD"] == local_stack.services["codebuild"].address

    table = _cli("status", "--home", str(local_stack.home))
    assert table.returncode == 0
    assert local_stack.registry in table.stdout


@pytest.mark.stack
def test_second_stack_reuses_engine_restarts_dead_and_stops_only_its_own(
    local_stack: StackInfo, tmp_path: Path
) -> None:
    home = tmp_path / "second"
    info = stack_up(home, log=_quiet, docker_host=local_stack.docker_host)  # the session's engine
    docker = info.services["docker"]
    assert not docker.owned and docker.pid is None
    assert info.docker_host == local_stack.docker_host
    assert info.registry != local_stack.registry

    moto_pid = info.services["moto"].pid
    assert moto_pid
    os.kill(moto_pid, signal.SIGKILL)
    assert _until(lambda: not stack_status(home).services["moto"].alive)

    again = stack_up(home, log=_quiet, docker_host=local_stack.docker_host)
    assert again.services["registry"].pid == info.services["registry"].pid
    assert again.services["moto"].pid != moto_pid
    assert again.services["moto"].alive

    stopped = stack_down(home, log=_quiet)
    assert sorted(stopped) == ["codebuild", "distribution", "moto", "registry"]
    for name in stopped:
        pid = again.services[name].pid
        assert pid and _until(lambda p=pid: _dead(p))
    assert stack_status(home).services == {}

    # a kept port taken meanwhile: one line naming it; what did start is recorded, so `down`
    # stops it and no process is left behind
    port = int(info.registry.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        assert _until(lambda: _bound(squatter, port))  # released a moment after `down`
        squatter.listen()
        with pytest.raises(UserError, match=f"port 127.0.0.1:{port}"):
            stack_up(home, log=_quiet, docker_host=local_stack.docker_host)
    partial = stack_status(home).services
    assert set(partial) == {"docker", "distribution", "moto"}
    assert sorted(stack_down(home, log=_quiet)) == ["distribution", "moto"]
    for name in ("distribution", "moto"):
        pid = partial[name].pid
        assert pid and _until(lambda p=pid: _dead(p))
    # what the second stack reused, and the first stack, are untouched
    assert docker_ping(local_stack.docker_host)
    assert registry.ping(local_stack.registry)
    assert stack_status(local_stack.home).all_alive


@pytest.mark.stack
def test_cli_up_prints_exports_for_eval(local_stack: StackInfo, tmp_path: Path) -> None:
    home = tmp_path / "cli"
    script = (
        f'eval "$({sys.executable} -m build_assets.cli.stack up --home {home})" && '
        'echo "$DOCKER_HOST|$BUILD_ASSETS_REGISTRY|$AWS_ENDPOINT_URL|$AWS_DEFAULT_REGION|'
        '$AWS_ACCESS_KEY_ID|$BUILD_ASSETS_BACKEND"'
    )
    try:
        out = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        assert out.returncode == 0, out.stderr
        docker_host, reg, endpoint, region, key, backend = out.stdout.strip().split("|")
        assert docker_host == local_stack.docker_host
        assert reg.startswith("127.0.0.1:") and registry.ping(reg)
        assert endpoint.startswith("http://127.0.0.1:")
        assert (region, key, backend) == ("us-east-1", "testing", "local")
        assert "registry: started" in out.stderr  # human messages go to stderr only
    finally:
        down = _cli("down", "--home", str(home))
    assert down.returncode == 0
    assert down.stdout == ""


def test_missing_dockerd_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "DOCKER_HOST": "unix:///nonexistent.sock"}
    out = _cli("up", "--private-docker", "--home", str(tmp_path / "home"), env=env)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.strip() == "dockerd not found: apt-get install docker.io"


def test_status_of_an_empty_home(tmp_path: Path) -> None:
    out = _cli("status", "--home", str(tmp_path))
    assert out.returncode == 1
    assert "no stack recorded" in out.stdout
