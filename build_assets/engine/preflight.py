"""Checks of the environment a command needs, each failing as one line that names the component
and the fix (a `UserError`, exit 2), in seconds rather than as a traceback from deep inside.

Commands call the group they need: `for_plan` (the state folder), `for_materialize` (state
folder, engine, registry, AWS endpoint, the ECR repositories of the codebuild backend),
`for_status` (registry, AWS endpoint). The network checks run concurrently, each with a short
timeout, so a dead stack is reported within 10 s.
"""

from __future__ import annotations

import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from build_assets.errors import UserError

TIMEOUT_S = 3.0
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
STACK_FIX = 'run eval "$(build-assets stack up)"'

Check = Callable[[], str | None]  # None when fine, else the one-line problem


def state_folder(home: Path, *, write: bool = True) -> str | None:
    """The state folder (build records, leases, Dagster runs) exists, or can be made, and is
    writable."""
    fix = "fix its permissions or mount, or set BUILD_ASSETS_HOME to a writable folder"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if write:
            with tempfile.NamedTemporaryFile(dir=home, prefix=".write-check-"):
                pass
        records_file = home / "builds.sqlite"
        if records_file.exists():
            mode = "rw" if write else "ro"
            sqlite3.connect(f"{records_file.resolve().as_uri()}?mode={mode}", uri=True).close()
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        what = "writable" if write else "readable"
        return f"state folder {home} is not {what} ({reason}): {fix}"
    return None


def engine(host: str | None = None, tls_verify: bool = False) -> str | None:
    """A Docker engine answers at `host` (the `docker_host` setting, DOCKER_HOST), else at the
    system socket (`tls_verify`: a tcp:// engine speaks TLS, DOCKER_TLS_VERIFY)."""
    from build_assets.stack.local import docker_ping

    host = host or DEFAULT_ENGINE
    if docker_ping(host, timeout=TIMEOUT_S, tls_verify=tls_verify):
        return None
    return f"Docker engine: nothing answers at {host}: {STACK_FIX} or set DOCKER_HOST"


def registry(prefix: str) -> str | None:
    """The registry of an image prefix ('host:port[/namespace]') answers /v2/."""
    from build_assets.engine import registry as oci

    if oci.ping(prefix.split("/", 1)[0], timeout=TIMEOUT_S):
        return None
    return registry_down(prefix)


def registry_down(prefix: str) -> str:
    """The one line every command (`plan`, `materialize`, `status`, the sensor) says when
    nothing answers at the configured registry: where, and the fix."""
    host = prefix.split("/", 1)[0]
    return (
        f"registry: nothing answers at {host} (BUILD_ASSETS_REGISTRY={prefix}): {STACK_FIX}"
        " or fix BUILD_ASSETS_REGISTRY"
    )


def aws_endpoint(url: str | None = None) -> str | None:
    """The `aws_endpoint_url` setting (AWS_ENDPOINT_URL: moto on the local stack), when set,
    answers HTTP."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S):  # noqa: S310 - the user's endpoint
            return None
    except urllib.error.HTTPError:
        return None  # it answers
    except (urllib.error.URLError, OSError, ValueError):
        return (
            f"AWS endpoint: nothing answers at AWS_ENDPOINT_URL={url} (moto): {STACK_FIX}"
            " or unset AWS_ENDPOINT_URL to use AWS"
        )


def ecr_repositories(repositories: list[str], env: str = "dev") -> str | None:
    """Every repository ('host/name') the codebuild backend pushes to exists in the ECR API:
    like ECR, it never pushes to a repository that does not exist (`bootstrap` makes them)."""
    from build_assets.aws.clients import describe_error, ecr_registry_parts, make_client

    wanted: dict[str | None, set[str]] = {}
    for repository in repositories:
        _, name, registry_id = ecr_registry_parts(repository)
        wanted.setdefault(registry_id, set()).add(name)
    missing: list[str] = []
    for registry_id, names in wanted.items():
        kwargs = {"registryId": registry_id} if registry_id else {}
        try:
            pages = make_client("ecr").get_paginator("describe_repositories").paginate(**kwargs)
            existing = {r["repositoryName"] for page in pages for r in page["repositories"]}
        except Exception as exc:  # noqa: BLE001 - botocore's errors, as one line
            return describe_error(exc, "list ECR repositories", registry_id or "ECR")
        missing += sorted(names - existing)
    if not missing:
        return None
    plural = "repositories" if len(missing) > 1 else "repository"
    return (
        f"ECR {plural} {', '.join(missing)} not found: the codebuild backend pushes only to"
        f" existing repositories, as ECR does; run `build-assets bootstrap --env {env}` first"
    )


def run(checks: list[Check]) -> None:
    """Run `checks` concurrently; raise one UserError with a line per problem found."""
    if not checks:
        return
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        problems = [p for p in pool.map(lambda c: c(), checks) if p]
    if problems:
        raise UserError(problems[0], lines=problems)


def for_plan(home: Path) -> None:
    """`plan` reads the build records: the state folder must be readable."""
    run([lambda: state_folder(home, write=False)])


def for_materialize(
    registry_prefix: str,
    *,
    local: bool,
    functions: bool,
    home: Path | None = None,
    ecr: list[str] | None = None,
    env: str = "dev",
    docker_host: str | None = None,
    docker_tls_verify: bool = False,
    aws_endpoint_url: str | None = None,
) -> None:
    """`materialize`: the state folder `home` (when given); engine and registry (local
    builds); AWS when deploying; the `ecr` repositories the codebuild backend will push to.
    `docker_host`, `docker_tls_verify`, `aws_endpoint_url`: the settings (None: the system
    socket, AWS)."""
    checks: list[Check] = [lambda: state_folder(home)] if home is not None else []
    if local:
        checks += [
            lambda: engine(docker_host, docker_tls_verify),
            lambda: registry(registry_prefix),
        ]
    if functions or ecr:
        checks.append(lambda: aws_endpoint(aws_endpoint_url))
    if ecr:
        checks.append(
            lambda: None if aws_endpoint(aws_endpoint_url) else ecr_repositories(ecr, env)
        )
    run(checks)


def for_status(
    registry_prefix: str,
    *,
    local: bool,
    functions: bool,
    home: Path | None = None,
    aws_endpoint_url: str | None = None,
) -> None:
    """`status`: the registry it looks tags up in and the AWS endpoint of the functions."""
    checks: list[Check] = []
    if local:
        checks.append(lambda: registry(registry_prefix))
    if functions:
        checks.append(lambda: aws_endpoint(aws_endpoint_url))
    run(checks)
