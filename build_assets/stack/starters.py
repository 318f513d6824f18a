"""Starting the stack's servers: the CNCF registry, moto, the ECR proxy, the local CodeBuild
(the Docker engine is `stack.dockerd`)."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request

from build_assets.errors import UserError
from build_assets.settings import child_environment
from build_assets.stack.ports import kept_port
from build_assets.stack.processes import require, spawn
from build_assets.stack.services import Service
from build_assets.stack.state import Layout

REGISTRY_BIN = "docker-registry"


def start_registry(layout: Layout, old: Service | None) -> Service:
    """The CNCF registry ("distribution") on its kept port, storing under the stack folder."""
    binary = require(REGISTRY_BIN, "apt-get install docker-registry")
    port = kept_port(layout, "distribution", old)
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
    pid, started = spawn(argv, log, layout.pidfile("distribution"))
    return Service("distribution", f"127.0.0.1:{port}", pid, True, started, port, str(log))


def start_ecr_registry(layout: Layout, old: Service | None, services: dict) -> Service:
    """The ECR proxy on the registry's kept port (see `stack.ecr_registry`)."""
    port = kept_port(layout, "registry", old)
    argv = [
        *(sys.executable, "-m", "build_assets.stack.ecr_registry"),
        *("--listen", f"127.0.0.1:{port}", "--upstream", services["distribution"].address),
        *("--aws-endpoint", services["moto"].address, "--region", "us-east-1"),
        *("--data-root", str(layout.registry_data)),
    ]
    log = layout.log("ecr-registry")
    pid, started = spawn(argv, log, layout.pidfile("ecr-registry"))
    return Service("registry", f"127.0.0.1:{port}", pid, True, started, port, str(log))


def start_moto(layout: Layout, old: Service | None) -> Service:
    """moto's server (fake AWS) on its kept port."""
    if importlib.util.find_spec("moto") is None:
        raise UserError("moto not found: pip install 'moto[server]'")
    port = kept_port(layout, "moto", old)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = layout.log("moto")
    # Lambda images live in our registry, not in moto's ECR: never let an inherited
    # MOTO_LAMBDA_STUB_ECR=false make moto reject them
    env = child_environment({"MOTO_LAMBDA_STUB_ECR": "TRUE"})
    pid, started = spawn(argv, log, layout.pidfile("moto"), env)
    return Service("moto", f"http://127.0.0.1:{port}", pid, True, started, port, str(log))


def start_codebuild(
    layout: Layout, old: Service | None, moto: Service, docker: Service, provisioning: float
) -> Service:
    """The local CodeBuild (`stack.codebuild.server`): builds run on this host against moto
    and the stack's engine; it is stopped, and its builds with it, by `down`."""
    port = kept_port(layout, "codebuild", old)
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
    pid, started = spawn(argv, log, layout.pidfile("codebuild"))
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
