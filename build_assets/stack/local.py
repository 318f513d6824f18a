"""The local build stack: a Docker engine, an OCI registry, a moto (fake AWS) server and a
local CodeBuild (`stack.codebuild`: runs the builds moto's CodeBuild only pretends to run).

The registry builders push to is `stack.ecr_registry`, a proxy in front of the CNCF registry
and moto's ECR API (`AWS_ENDPOINT_URL_ECR`): repositories that exist in the ECR API follow
ECR's rules there (immutable tags, every manifest in `describe_images`).

`stack_up` starts what is missing under a state folder (logs, pidfiles, config and
`state.json` live there; `build-assets stack up`, in `cli.stack`, prints its `export` lines).
Running it again reuses live services (same ports) and restarts only dead ones, on the ports
they had: `ports.json` keeps each service's port across `down` and crashes, so image URIs,
build records and deployed functions stay valid (a port that another process took is an error
naming it, never a silent move). `stack_down` stops, by PID, only the processes `up` started;
a Docker engine that was already running (DOCKER_HOST or /var/run/docker.sock) is reused and
never stopped. The parts: `services` (what `state.json` records, the exported environment),
`state` (the folder), `processes`, `ports`, `health`, `dockerd` and `starters`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from build_assets.errors import UserError
from build_assets.stack.dockerd import clear_dead_engine, external_docker, start_docker
from build_assets.stack.health import docker_ping, healthy, is_running
from build_assets.stack.processes import last_line, pid_alive, stop_pid, wait_for
from build_assets.stack.services import SERVICES, Service, StackInfo
from build_assets.stack.starters import (
    set_codebuild_knobs,
    start_codebuild,
    start_ecr_registry,
    start_moto,
    start_registry,
)
from build_assets.stack.state import Layout, load, locked, save

__all__ = [
    "SERVICES",
    "Service",
    "StackInfo",
    "docker_ping",
    "set_codebuild_knobs",
    "stack_down",
    "stack_status",
    "stack_up",
]

START_TIMEOUT = 60.0
PIDFILES = ("dockerd", "registry", "distribution", "ecr-registry", "moto", "codebuild")

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _layout(home: Path | str) -> Layout:
    return Layout(Path(home).expanduser().absolute())


def _stop_if_ours(svc: Service) -> None:
    """Stop `svc` if it is a live process of ours (it is about to be replaced)."""
    if svc.owned and pid_alive(svc.pid, svc.start_time):
        stop_pid(svc.pid, svc.start_time)  # type: ignore[arg-type]


def _docker(
    layout: Layout,
    old: Service | None,
    reuse_docker: bool,
    docker_host: str | None,
    tls_verify: bool,
    log: Log,
) -> tuple[Service, bool]:
    """The engine: ours if it answers, else a reachable one, else a new private dockerd;
    return it and whether it was started now."""
    if old and old.owned and is_running(old):
        return old, False
    external = None
    if reuse_docker:
        external = external_docker(layout.docker_sock, docker_host, tls_verify)
    if external:
        log(f"docker: reusing the engine at {external}")
        return Service("docker", external, None, False), False
    if old and old.owned:
        _stop_if_ours(old)  # alive but not answering: a wedged dockerd of ours; replace it
        clear_dead_engine(layout)
    return start_docker(layout), True


def _await_started(started: list[Service], timeout: float, log: Log) -> None:
    """Wait until each service started now answers; one line naming its log if one does not."""
    deadline = time.monotonic() + timeout
    for svc in started:
        ok = wait_for(
            lambda s=svc: healthy(s) or not pid_alive(s.pid, s.start_time),
            max(0.0, deadline - time.monotonic()),
            interval=0.2,
        )
        if not (ok and pid_alive(svc.pid, svc.start_time)):
            why = "exited" if ok else f"did not answer within {timeout:.0f}s"
            last = last_line(Path(svc.log or ""))
            raise UserError(f"{svc.name} {why}; see {svc.log}" + (f" ({last})" if last else ""))
        log(f"{svc.name}: started pid {svc.pid} at {svc.address}")


def stack_up(
    home: Path | str,
    *,
    reuse_docker: bool = True,
    timeout: float = START_TIMEOUT,
    log: Log = _stderr,
    codebuild_provisioning: float | None = None,
    docker_host: str | None = None,
    docker_tls_verify: bool = False,
) -> StackInfo:
    """Start whatever part of the stack under `home` is not running (idempotent); return it.

    `codebuild_provisioning`: seconds every local CodeBuild build spends in QUEUED +
    PROVISIONING (None: a new service gets 0, a running one keeps its setting).
    `docker_host`, `docker_tls_verify`: the engine to reuse first and whether it speaks TLS (the
    DOCKER_HOST and DOCKER_TLS_VERIFY settings; None: only the system socket is tried)."""
    layout = _layout(home)
    with locked(layout):
        old = load(layout)
        services: dict[str, Service] = {}
        services["docker"], new_engine = _docker(
            layout, old.get("docker"), reuse_docker, docker_host, docker_tls_verify, log
        )
        started = [services["docker"]] if new_engine else []

        if old.get("registry") and not str(old["registry"].log).endswith("ecr-registry.log"):
            _stop_if_ours(old.pop("registry"))  # from before the ECR proxy: the CNCF registry

        def codebuild(layout: Layout, svc: Service | None) -> Service:
            provisioning = codebuild_provisioning or 0.0
            return start_codebuild(layout, svc, services["moto"], services["docker"], provisioning)

        starters = (
            ("distribution", start_registry),
            ("moto", start_moto),
            ("registry", lambda lay, svc: start_ecr_registry(lay, svc, services)),
            ("codebuild", codebuild),
        )
        try:
            for name, start in starters:
                svc = old.get(name)
                if svc is not None and is_running(svc):
                    services[name] = svc
                    if name == "codebuild" and codebuild_provisioning is not None:
                        set_codebuild_knobs(svc.address, provisioning_s=codebuild_provisioning)
                    continue
                if svc:
                    _stop_if_ours(svc)
                services[name] = start(layout, svc)
                started.append(services[name])
        except BaseException:
            save(layout, {**old, **services})  # what did start stays recorded: `down` stops it
            raise
        save(layout, services)
        _await_started(started, timeout, log)
        for svc in services.values():
            svc.alive = True
            if svc not in started and svc.owned:
                log(f"{svc.name}: already running, pid {svc.pid} at {svc.address}")
        return StackInfo(layout.home, services)


def stack_status(home: Path | str, *, docker_tls_verify: bool = False) -> StackInfo:
    """The recorded services with their liveness (starts and stops nothing;
    `docker_tls_verify`: a reused tcp:// engine speaks TLS)."""
    layout = _layout(home)
    services = load(layout)
    for svc in services.values():
        svc.alive = is_running(svc, tls_verify=docker_tls_verify)
    return StackInfo(layout.home, services)


def stack_down(home: Path | str, *, log: Log = _stderr) -> list[str]:
    """Stop, by PID, the services `up` started here; return the names of those stopped."""
    layout = _layout(home)
    stopped: list[str] = []
    with locked(layout):
        services = load(layout)
        if not services:
            log(f"no stack recorded under {layout.home}")
        for name in reversed(SERVICES):
            svc = services.get(name)
            if svc is None:
                continue
            if not svc.owned:
                log(f"{name}: not started by us, left running ({svc.address})")
            elif svc.pid and stop_pid(svc.pid, svc.start_time):
                stopped.append(name)
                log(f"{name}: stopped pid {svc.pid}")
            else:
                log(f"{name}: not running")
        for pidname in PIDFILES:
            with contextlib.suppress(FileNotFoundError):
                layout.pidfile(pidname).unlink()
        if services.get("docker") and services["docker"].owned:
            clear_dead_engine(layout)
            with contextlib.suppress(FileNotFoundError):
                layout.docker_sock.unlink()
        with contextlib.suppress(FileNotFoundError):
            layout.state.unlink()
    return stopped
