"""Is a service of the stack answering: Docker's `/_ping`, any HTTP answer from the others."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

from build_assets.settings import child_environment
from build_assets.stack.processes import pid_alive
from build_assets.stack.services import Service


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_ping(docker_host: str, timeout: float = 2.0, *, tls_verify: bool = False) -> bool:
    """True when the engine at `docker_host` answers `/_ping` (unix:// or tcp://; a TLS engine,
    `tls_verify`: the DOCKER_TLS_VERIFY setting, is asked through the docker CLI)."""
    try:
        if docker_host.startswith("unix://"):
            conn: http.client.HTTPConnection = _UnixHTTPConnection(docker_host[7:], timeout)
        elif docker_host.startswith("tcp://") and not tls_verify:
            hostport = docker_host[6:].rstrip("/")
            host, _, port = hostport.rpartition(":")
            conn = http.client.HTTPConnection(host or hostport, int(port or 2375), timeout=timeout)
        else:  # ssh://, TLS, ...: let the CLI decide
            if not shutil.which("docker"):
                return False
            res = subprocess.run(
                ["docker", "version", "--format", "{{.Server.Version}}"],
                env=child_environment({"DOCKER_HOST": docker_host}),
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


def http_up(url: str, timeout: float = 2.0) -> bool:
    """True when anything answers HTTP at `url` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def healthy(svc: Service, *, tls_verify: bool = False) -> bool:
    """True when `svc` answers (whoever runs it; `tls_verify`: a tcp:// engine speaks TLS)."""
    if svc.name == "docker":
        return docker_ping(svc.address, tls_verify=tls_verify)
    if svc.name in ("registry", "distribution"):
        return http_up(f"http://{svc.address}/v2/")
    if svc.name == "codebuild":
        return http_up(f"{svc.address}/")
    return http_up(f"{svc.address}/moto-api/")


def is_running(svc: Service | None, *, tls_verify: bool = False) -> bool:
    """True when `svc` answers and, if ours, is still the process we started."""
    if svc is None:
        return False
    if svc.owned and not pid_alive(svc.pid, svc.start_time):
        return False
    return healthy(svc, tls_verify=tls_verify)
