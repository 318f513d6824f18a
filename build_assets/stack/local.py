"""The local build stack: a Docker engine, an OCI registry, a moto (fake AWS) server and a
local CodeBuild (`stack.codebuild`: runs the builds moto's CodeBuild only pretends to run).

The registry builders push to is `stack.ecr_registry`, a proxy in front of the CNCF registry
and moto's ECR API (`AWS_ENDPOINT_URL_ECR`): repositories that exist in the ECR API follow
ECR's rules there (immutable tags, every manifest in `describe_images`).

`build-assets stack up` starts what is missing under a state folder (logs, pidfiles, config and
`state.json` live there) and prints `export` lines, so `eval "$(build-assets stack up)"` points
the builders at it. Running `up` again reuses live services (same ports) and restarts only dead
ones, on the ports they had: `ports.json` keeps each service's port across `down` and crashes,
so image URIs, build records and deployed functions stay valid (a port that another process
took is an error naming it, never a silent move). `down` stops, by PID, only the processes `up`
started; a Docker engine that was already
running (DOCKER_HOST or /var/run/docker.sock) is reused and never stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from build_assets.errors import UserError
from build_assets.settings import ENV_BACKEND, ENV_REGISTRY, state_home

DOCKERD = "dockerd"
REGISTRY_BIN = "docker-registry"
SYSTEM_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# "registry" is the address builders push to: the ECR proxy (`stack.ecr_registry`) in front of
# the CNCF registry ("distribution") and moto's ECR API; it keeps the registry's old port.
SERVICES = ("docker", "distribution", "moto", "registry", "codebuild")

# A live Popen object per process we started, so we can reap it (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen] = {}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_home() -> Path:
    """Where the stack keeps its state: `settings.state_home()/stack`."""
    return state_home() / "stack"


@dataclass
class Service:
    """One service of the stack as recorded in state.json (plus liveness when reported)."""

    name: str
    address: str  # "unix:///...sock", "127.0.0.1:5000", "http://127.0.0.1:5001"
    pid: int | None = None  # None when reused (not ours)
    owned: bool = True  # started by `up`, so `down` stops it
    start_time: int | None = None  # /proc start time, guards against PID reuse
    port: int | None = None
    log: str | None = None
    alive: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Service:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class StackInfo:
    """The stack's services and the environment that points tools at them."""

    home: Path
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def docker_host(self) -> str:
        return self.services["docker"].address

    @property
    def registry(self) -> str:
        return self.services["registry"].address

    @property
    def aws_endpoint_url(self) -> str:
        return self.services["moto"].address

    @property
    def ecr_endpoint_url(self) -> str:
        """The ECR API as the registry sees it (the proxy forwards it to moto)."""
        return f"http://{self.registry}"

    @property
    def codebuild_endpoint_url(self) -> str | None:
        svc = self.services.get("codebuild")
        return svc.address if svc else None

    @property
    def all_alive(self) -> bool:
        return all(s in self.services and self.services[s].alive for s in SERVICES)

    def env(self) -> dict[str, str]:
        """Environment variables that point Docker, the builders and boto3 at this stack."""
        return {
            "DOCKER_HOST": self.docker_host,
            ENV_REGISTRY: self.registry,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ENDPOINT_URL_ECR": self.ecr_endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            ENV_BACKEND: "local",
            # boto3's per-service endpoint: CodeBuild calls go to the local CodeBuild
            **({"AWS_ENDPOINT_URL_CODEBUILD": cb} if (cb := self.codebuild_endpoint_url) else {}),
        }

    def to_json(self) -> dict:
        return {
            "home": str(self.home),
            "services": [asdict(s) for s in self.services.values()],
            "env": self.env() if self.all_alive else {},
        }


# ---------------------------------------------------------------------------------------------
# processes


def _proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # zombie: as good as dead
        return None
    return int(fields[19])


def _pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if `pid` runs and (when known) is still the process that started at `start_time`."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    current = _proc_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def _spawn(
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
    return proc.pid, _proc_start_time(proc.pid)


def _stop_pid(pid: int, start_time: int | None, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM `pid`, then SIGKILL its process group after `timeout`; True if it was running."""
    if not _pid_alive(pid, start_time):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_for(lambda: not _pid_alive(pid, start_time), timeout):
        return True
    # Our processes lead their own session, so the group holds exactly what we started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _pid_alive(pid, start_time), 5.0)
    return True


def _wait_for(cond: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `cond` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def _bindable(port: int) -> int | None:
    """`port` (0: any) if it can be bound on 127.0.0.1 as our servers bind (SO_REUSEADDR, so a
    closed server's TIME-WAIT connections do not count); else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return s.getsockname()[1]


# Kept ports come from below the kernel's ephemeral range (32768-60999 by default): a port
# picked there (`bind(0)`) can be handed to some outgoing connection while the stack is down,
# and the server could not have its address back.
STABLE_PORTS = range(20000, 32000)
PORT_RELEASE_S = 3.0  # how long a kept port may take to be released by a stopped server


def _stable_port(layout: _Layout, name: str, taken: set[int]) -> int:
    """A free port outside the ephemeral range, the same first choice for the same stack
    folder and service (probing upward from a hash of both)."""
    digest = hashlib.sha256(f"{layout.home}\0{name}".encode()).digest()
    start = int.from_bytes(digest[:4], "big") % len(STABLE_PORTS)
    for i in range(len(STABLE_PORTS)):
        port = STABLE_PORTS[(start + i) % len(STABLE_PORTS)]
        if port not in taken and _bindable(port) is not None:
            return port
    raise UserError(
        f"no free TCP port on 127.0.0.1 in {STABLE_PORTS.start}-{STABLE_PORTS.stop - 1}"
    )


def _kept_port(layout: _Layout, name: str, old: Service | None) -> int:
    """The port `name` had before (state.json, else ports.json), recorded; a new one if none."""
    try:
        kept = json.loads(layout.ports.read_text())
    except (OSError, ValueError):
        kept = {}
    preferred = (old.port if old else None) or kept.get(name)
    if preferred:
        # a server stopped a moment ago may still hold its port while the kernel closes its
        # sockets (seen: refused, then free 0.1 s later): only a port still taken is an error
        if not _wait_for(lambda: _bindable(int(preferred)) is not None, PORT_RELEASE_S):
            raise UserError(
                f"{name}: port 127.0.0.1:{preferred}, kept so image and function URIs stay"
                f" valid, is taken by another process: stop it (ss -ltnp 'sport = :{preferred}'),"
                f" or delete {layout.ports} to move the stack to new ports"
            )
        port = int(preferred)
    else:
        port = _stable_port(layout, name, taken=set(kept.values()))
    kept[name] = port
    tmp = layout.ports.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    tmp.replace(layout.ports)
    return port


# ---------------------------------------------------------------------------------------------
# health checks


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_ping(docker_host: str, timeout: float = 2.0) -> bool:
    """True when the engine at `docker_host` answers `/_ping` (unix:// or tcp://)."""
    try:
        if docker_host.startswith("unix://"):
            conn: http.client.HTTPConnection = _UnixHTTPConnection(docker_host[7:], timeout)
        elif docker_host.startswith("tcp://") and not os.environ.get("DOCKER_TLS_VERIFY"):
            hostport = docker_host[6:].rstrip("/")
            host, _, port = hostport.rpartition(":")
            conn = http.client.HTTPConnection(host or hostport, int(port or 2375), timeout=timeout)
        else:  # ssh://, TLS, ...: let the CLI decide
            if not shutil.which("docker"):
                return False
            res = subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env={**os.environ, "DOCKER_HOST": docker_host},
                capture_output=True,
                timeout=timeout + 5,
            )
            return res.returncode == 0
        try:
            conn.request("GET", "/_ping")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired):
        return False


def _http_up(url: str, timeout: float = 2.0) -> bool:
    """True when anything answers HTTP at `url` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _healthy(svc: Service) -> bool:
    if svc.name == "docker":
        return docker_ping(svc.address)
    if svc.name in ("registry", "distribution"):
        return _http_up(f"http://{svc.address}/v2/")
    if svc.name == "codebuild":
        return _http_up(f"{svc.address}/")
    return _http_up(f"{svc.address}/moto-api/")


# ---------------------------------------------------------------------------------------------
# state


class _Layout:
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


def _load(layout: _Layout) -> dict[str, Service]:
    try:
        data = json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return {}
    return {d["name"]: Service.from_dict(d) for d in data.get("services", [])}


def _save(layout: _Layout, services: dict[str, Service]) -> None:
    tmp = layout.state.with_suffix(".tmp")
    payload = {
        "services": [
            {k: v for k, v in asdict(s).items() if k != "alive"} for s in services.values()
        ]
    }
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(layout.state)


@contextlib.contextmanager
def _locked(layout: _Layout) -> Iterator[None]:
    layout.home.mkdir(parents=True, exist_ok=True)
    with open(layout.lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_running(svc: Service | None) -> bool:
    if svc is None:
        return False
    if svc.owned and not _pid_alive(svc.pid, svc.start_time):
        return False
    return _healthy(svc)


# ---------------------------------------------------------------------------------------------
# starting services


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise UserError(f"{binary} not found: {hint}")
    return path


def _start_docker(layout: _Layout) -> Service:
    dockerd = _require(DOCKERD, "apt-get install docker.io")
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
    pid, started = _spawn(argv, log, None)
    return Service("docker", f"unix://{layout.docker_sock}", pid, True, started, None, str(log))


def _start_registry(layout: _Layout, old: Service | None) -> Service:
    binary = _require(REGISTRY_BIN, "apt-get install docker-registry")
    port = _kept_port(layout, "distribution", old)
    layout.registry_data.mkdir(parents=True, exist_ok=True)
    layout.registry_config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {json.dumps(str(layout.registry_data))}\n"
        "  delete:\n    enabled: true\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
    )
    log = layout.log("distribution")
    argv = [binary, "serve", str(layout.registry_config)]
    pid, started = _spawn(argv, log, layout.pidfile("distribution"))
    return Service("distribution", f"127.0.0.1:{port}", pid, True, started, port, str(log))


def _start_ecr_registry(layout: _Layout, old: Service | None, services: dict) -> Service:
    """The ECR proxy on the registry's kept port (see `stack.ecr_registry`)."""
    port = _kept_port(layout, "registry", old)
    argv = [
        *(sys.executable, "-m", "build_assets.stack.ecr_registry"),
        *("--listen", f"127.0.0.1:{port}", "--upstream", services["distribution"].address),
        *("--aws-endpoint", services["moto"].address, "--region", "us-east-1"),
        *("--data-root", str(layout.registry_data)),
    ]
    log = layout.log("ecr-registry")
    pid, started = _spawn(argv, log, layout.pidfile("ecr-registry"))
    return Service("registry", f"127.0.0.1:{port}", pid, True, started, port, str(log))


def _start_moto(layout: _Layout, old: Service | None) -> Service:
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        raise UserError("moto not found: pip install 'moto[server]'")
    port = _kept_port(layout, "moto", old)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = layout.log("moto")
    # Lambda images live in our registry, not in moto's ECR: never let an inherited
    # MOTO_LAMBDA_STUB_ECR=false make moto reject them
    env = {**os.environ, "MOTO_LAMBDA_STUB_ECR": "TRUE"}
    pid, started = _spawn(argv, log, layout.pidfile("moto"), env)
    return Service("moto", f"http://127.0.0.1:{port}", pid, True, started, port, str(log))


def _start_codebuild(
    layout: _Layout, old: Service | None, moto: Service, docker: Service, provisioning: float
) -> Service:
    """The local CodeBuild (`stack.codebuild.server`): builds run on this host against moto
    and the stack's engine; it is stopped, and its builds with it, by `down`."""
    port = _kept_port(layout, "codebuild", old)
    argv = [
        sys.executable,
        "-m",
        "build_assets.stack.codebuild.server",
        "--port",
        str(port),
        "--moto",
        moto.address,
        "--home",
        str(layout.home / "codebuild"),
        "--docker-host",
        docker.address,
        "--provisioning",
        str(provisioning),
    ]
    log = layout.log("codebuild")
    pid, started = _spawn(argv, log, layout.pidfile("codebuild"))
    return Service("codebuild", f"http://127.0.0.1:{port}", pid, True, started, port, str(log))


def set_codebuild_knobs(address: str, **knobs: object) -> dict:
    """Set local-only knobs of a running local CodeBuild (`provisioning_s`, `minute_s`,
    `fault_projects`, `throttle`); return them all."""
    req = urllib.request.Request(
        f"{address}/_local/config",
        data=json.dumps(knobs).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _external_docker(private_sock: Path) -> str | None:
    """A reachable Docker engine that is not ours: DOCKER_HOST, then /var/run/docker.sock."""
    candidates = []
    env_host = os.environ.get("DOCKER_HOST")
    if env_host and env_host != f"unix://{private_sock}":
        candidates.append(env_host)
    if SYSTEM_SOCKET.exists():
        candidates.append(f"unix://{SYSTEM_SOCKET}")
    for host in candidates:
        if docker_ping(host):
            return host
    return None


def stack_up(
    home: Path | str | None = None,
    *,
    reuse_docker: bool = True,
    timeout: float = START_TIMEOUT,
    log: Log = _stderr,
    codebuild_provisioning: float | None = None,
) -> StackInfo:
    """Start whatever part of the stack is not running (idempotent) and return it.

    `codebuild_provisioning`: seconds every local CodeBuild build spends in QUEUED +
    PROVISIONING (None: a new service gets 0, a running one keeps its setting)."""
    layout = _Layout(Path(home).expanduser().absolute() if home else default_home())
    with _locked(layout):
        old = _load(layout)
        services: dict[str, Service] = {}
        started: list[Service] = []

        docker = old.get("docker")
        if docker and docker.owned and _is_running(docker):
            services["docker"] = docker
        else:
            external = _external_docker(layout.docker_sock) if reuse_docker else None
            if external:
                services["docker"] = Service("docker", external, None, False)
                log(f"docker: reusing the engine at {external}")
            else:
                if docker and docker.owned and _pid_alive(docker.pid, docker.start_time):
                    # alive but not answering: a wedged dockerd of ours; replace it
                    _stop_pid(docker.pid, docker.start_time)  # type: ignore[arg-type]
                if docker and docker.owned:
                    _clear_dead_engine(layout)
                services["docker"] = _start_docker(layout)
                started.append(services["docker"])

        if old.get("registry") and not str(old["registry"].log).endswith("ecr-registry.log"):
            # a stack from before the ECR proxy: its "registry" is the CNCF registry itself
            stale = old.pop("registry")
            if stale.owned and _pid_alive(stale.pid, stale.start_time):
                _stop_pid(stale.pid, stale.start_time)  # type: ignore[arg-type]

        def start_codebuild(layout: _Layout, svc: Service | None) -> Service:
            return _start_codebuild(
                layout, svc, services["moto"], services["docker"], codebuild_provisioning or 0.0
            )

        starters = (
            ("distribution", _start_registry),
            ("moto", _start_moto),
            ("registry", lambda lay, svc: _start_ecr_registry(lay, svc, services)),
            ("codebuild", start_codebuild),
        )
        for name, start in starters:
            svc = old.get(name)
            if _is_running(svc):
                services[name] = svc  # type: ignore[assignment]
                if name == "codebuild" and codebuild_provisioning is not None:
                    set_codebuild_knobs(svc.address, provisioning_s=codebuild_provisioning)
                continue
            if svc and svc.owned and _pid_alive(svc.pid, svc.start_time):
                _stop_pid(svc.pid, svc.start_time)  # type: ignore[arg-type]
            services[name] = start(layout, svc)
            started.append(services[name])

        _save(layout, services)
        deadline = time.monotonic() + timeout
        for svc in started:
            ok = _wait_for(
                lambda s=svc: _healthy(s) or not _pid_alive(s.pid, s.start_time),
                max(0.0, deadline - time.monotonic()),
                interval=0.2,
            )
            if not (ok and _pid_alive(svc.pid, svc.start_time)):
                why = "exited" if ok else f"did not answer within {timeout:.0f}s"
                last = _last_line(Path(svc.log or ""))
                raise UserError(f"{svc.name} {why}; see {svc.log}" + (f" ({last})" if last else ""))
            log(f"{svc.name}: started pid {svc.pid} at {svc.address}")
        for svc in services.values():
            svc.alive = True
            if svc not in started and svc.owned:
                log(f"{svc.name}: already running, pid {svc.pid} at {svc.address}")
        return StackInfo(layout.home, services)


def stack_status(home: Path | str | None = None) -> StackInfo:
    """The recorded services with their liveness (starts and stops nothing)."""
    layout = _Layout(Path(home).expanduser().absolute() if home else default_home())
    services = _load(layout)
    for svc in services.values():
        svc.alive = _is_running(svc)
    return StackInfo(layout.home, services)


def _unmount_under(root: Path) -> None:
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


def _engine_leftovers(layout: _Layout) -> list[int]:
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


def _clear_dead_engine(layout: _Layout) -> None:
    """Kill what a crashed dockerd of ours left running and unmount what it left mounted, so
    a new one can start on the same folders (a leftover containerd holds its socket)."""
    for pid in _engine_leftovers(layout):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _engine_leftovers(layout), 10.0)
    # its containerd may linger as a zombie (nobody reaps it): a new dockerd that finds the PID
    # of containerd.pid "still running" waits for its socket until it gives up
    with contextlib.suppress(FileNotFoundError):
        (layout.docker_exec / "containerd" / "containerd.pid").unlink()
    _unmount_under(layout.docker_exec)
    _unmount_under(layout.docker_data)


def stack_down(home: Path | str | None = None, *, log: Log = _stderr) -> list[str]:
    """Stop, by PID, the services `up` started here; return the names of those stopped."""
    layout = _Layout(Path(home).expanduser().absolute() if home else default_home())
    stopped: list[str] = []
    with _locked(layout):
        services = _load(layout)
        if not services:
            log(f"no stack recorded under {layout.home}")
        for name in reversed(SERVICES):
            svc = services.get(name)
            if svc is None:
                continue
            if not svc.owned:
                log(f"{name}: not started by us, left running ({svc.address})")
            elif svc.pid and _stop_pid(svc.pid, svc.start_time):
                stopped.append(name)
                log(f"{name}: stopped pid {svc.pid}")
            else:
                log(f"{name}: not running")
        for pidname in ("dockerd", "registry", "distribution", "ecr-registry", "moto", "codebuild"):
            with contextlib.suppress(FileNotFoundError):
                layout.pidfile(pidname).unlink()
        if services.get("docker") and services["docker"].owned:
            _clear_dead_engine(layout)
            with contextlib.suppress(FileNotFoundError):
                layout.docker_sock.unlink()
        with contextlib.suppress(FileNotFoundError):
            layout.state.unlink()
    return stopped


# ---------------------------------------------------------------------------------------------
# CLI


def _print_status(info: StackInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.to_json(), indent=2))
        return
    if not info.services:
        print(f"no stack recorded under {info.home}")
        return
    rows = [("SERVICE", "PID", "ADDRESS", "ALIVE", "OWNED")]
    for s in info.services.values():
        rows.append(
            (
                s.name,
                str(s.pid or "-"),
                s.address,
                "yes" if s.alive else "no",
                "yes" if s.owned else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    """Entry point of `build-assets stack ...`; returns the exit code."""
    home = Path(args.home) if getattr(args, "home", None) else None
    try:
        if args.stack_command == "up":
            info = stack_up(
                home,
                reuse_docker=not args.private_docker,
                codebuild_provisioning=args.codebuild_provisioning,
            )
            env = info.env()
            if args.postgres:
                from build_assets.stack.postgres import postgres_up

                env.update(postgres_up(info.home).env())
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        if args.stack_command == "down":
            from build_assets.stack.postgres import postgres_down

            stack_down(home)
            postgres_down(home or default_home())
            return 0
        info = stack_status(home)
        _print_status(info, args.json)
        return 0 if info.all_alive else 1
    except UserError as e:
        _stderr(str(e))
        return e.exit_code


def main(argv: list[str] | None = None) -> int:
    """`python -m build_assets.stack.local up|down|status` (same as `build-assets stack ...`)."""
    from build_assets.cli.stack import add_cli

    parser = argparse.ArgumentParser(prog="build-assets")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stack", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
