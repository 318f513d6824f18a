"""Every setting of build-assets in one immutable object, resolved once.

One precedence rule everywhere: an explicit argument (CLI flag, Dagster resource field,
component attribute) wins over the environment variable, which wins over the default.
`Settings.resolve` reads the environment once and validates every value, raising one
`SettingsError` line that names the variable and the bad value. Nothing else in the package
reads `BUILD_ASSETS_*` variables: it is handed a `Settings` (subprocesses inherit the
environment, which is the one other use of `os.environ`).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from build_assets.errors import UserError

BACKENDS = ("local", "codebuild")
_LEASE_SCHEMES = ("postgresql://", "postgres://")


class SettingsError(UserError):
    """A setting has a value build-assets cannot use."""


# field name -> (environment variable, default). Paths and numbers are parsed by `_parse`.
ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "repo": ("BUILD_ASSETS_REPO", None),
    "manifest": ("BUILD_ASSETS_MANIFEST", None),
    "backend": ("BUILD_ASSETS_BACKEND", "local"),
    "registry": ("BUILD_ASSETS_REGISTRY", None),
    "home": ("BUILD_ASSETS_HOME", None),
    "env": ("BUILD_ASSETS_ENV", "dev"),
    "ref": ("BUILD_ASSETS_REF", None),
    "bucket": ("BUILD_ASSETS_BUCKET", None),
    "max_concurrent_builds": ("BUILD_ASSETS_MAX_CONCURRENT_BUILDS", None),
    "local_parallel": ("BUILD_ASSETS_LOCAL_PARALLEL", 4),
    "lambda_role": ("BUILD_ASSETS_LAMBDA_ROLE", None),
    "webserver": ("BUILD_ASSETS_WEBSERVER", None),
    "location_name": ("BUILD_ASSETS_LOCATION_NAME", None),
    "git_remote": ("BUILD_ASSETS_GIT_REMOTE", "origin"),
    "git_branch": ("BUILD_ASSETS_GIT_BRANCH", "main"),
    "sensor_interval": ("BUILD_ASSETS_SENSOR_INTERVAL", 60),
    "dagster_home": ("DAGSTER_HOME", None),
    "docker_host": ("DOCKER_HOST", None),  # the engine local builds use (None: the socket)
    "aws_endpoint_url": ("AWS_ENDPOINT_URL", None),  # moto on the local stack (None: AWS)
    "lease_url": ("BUILD_ASSETS_LEASE_URL", None),
    "early_start": ("BUILD_ASSETS_EARLY_START", "on"),
    "docker_tls_verify": ("DOCKER_TLS_VERIFY", None),
    "codebuild_endpoint_url": ("AWS_ENDPOINT_URL_CODEBUILD", None),
}
# field name -> what it is, for the fields the Dagster resource and component declare
HELP: dict[str, str] = {
    "repo": "monorepo folder",
    "manifest": "images.yaml",
    "backend": "local | codebuild",
    "registry": "registry prefix",
    "bucket": "S3 bucket for contexts (codebuild)",
    "env": "environment name",
    "ref": "git ref to build",
    "home": "build records and local state",
    "max_concurrent_builds": "builds in flight at once",
    "lambda_role": "execution role for functions created on the local stack",
}
ENV_REPO = ENVIRONMENT["repo"][0]
ENV_REGISTRY = ENVIRONMENT["registry"][0]
ENV_HOME = ENVIRONMENT["home"][0]
ENV_BACKEND = ENVIRONMENT["backend"][0]
_INTEGERS = {"max_concurrent_builds", "local_parallel", "sensor_interval"}
_PATHS = {"repo", "manifest", "home", "dagster_home"}


@dataclass(frozen=True)
class Settings:
    """Resolved settings: where the monorepo is, how images are built, where they go."""

    repo: Path
    manifest: Path
    backend: str
    registry: str | None
    home: Path
    env: str
    ref: str | None
    bucket: str | None
    max_concurrent_builds: int | None
    local_parallel: int
    lambda_role: str | None
    webserver: str | None
    location_name: str | None
    git_remote: str
    git_branch: str
    sensor_interval: int
    dagster_home: Path | None
    docker_host: str | None  # DOCKER_HOST: the Docker engine of local builds
    aws_endpoint_url: str | None  # AWS_ENDPOINT_URL: moto on the local stack, else AWS
    lease_url: str | None  # postgresql://... : build leases every machine sees
    early_start: str  # on | off: start dependents' CodeBuild builds early (engine.early_start)
    docker_tls_verify: str | None  # set: a tcp:// engine speaks TLS (DOCKER_TLS_VERIFY)
    codebuild_endpoint_url: str | None  # the local CodeBuild, when set

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> Settings:
        """Settings from explicit values (None = not given), then `environ`, then defaults."""
        environ = os.environ if environ is None else environ
        unknown = set(explicit) - set(ENVIRONMENT)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, (variable, default) in ENVIRONMENT.items():
            given = explicit.get(name)
            if given is not None and given != "":
                values[name] = _parse(name, given, f"{name}")
            elif environ.get(variable):
                values[name] = _parse(name, environ[variable], variable)
            else:
                values[name] = default
        repo = Path(values["repo"] or ".").expanduser().resolve()
        values["repo"] = repo
        manifest = Path(values["manifest"] or repo / "images.yaml").expanduser()
        values["manifest"] = manifest if manifest.is_absolute() else (Path.cwd() / manifest)
        values["home"] = Path(values["home"] or Path.home() / ".build-assets").expanduser()
        if values["backend"] not in BACKENDS:
            source = "backend" if explicit.get("backend") else ENVIRONMENT["backend"][0]
            raise SettingsError(
                f"{source}: unknown backend '{values['backend']}' (use local or codebuild)"
            )
        if values["registry"]:
            values["registry"] = str(values["registry"]).strip().rstrip("/")
        if values["lease_url"] and not values["lease_url"].startswith(_LEASE_SCHEMES):
            source = "lease_url" if explicit.get("lease_url") else ENVIRONMENT["lease_url"][0]
            raise SettingsError(
                f"{source}: expected a postgresql://user:password@host:port/database URL,"
                f" got '{values['lease_url'].split('@')[-1]}'"
            )
        if values["early_start"] not in ("on", "off"):
            source = "early_start" if explicit.get("early_start") else "BUILD_ASSETS_EARLY_START"
            raise SettingsError(f"{source}: expected on or off, got '{values['early_start']}'")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (explicit values, already parsed)."""
        return replace(self, **changes)

    @property
    def concurrency(self) -> int:
        """Builds in flight at once in one step (4 local, 20 CodeBuild unless set)."""
        if self.max_concurrent_builds:
            return self.max_concurrent_builds
        return 4 if self.backend == "local" else 20

    def require_registry(self) -> str:
        """The registry prefix, or one line saying how to set it."""
        if not self.registry:
            raise SettingsError(
                f'{ENV_REGISTRY} is not set: run `eval "$(build-assets stack up)"` for the'
                " local stack, or set it to <account>.dkr.ecr.<region>.amazonaws.com"
            )
        return self.registry

    @property
    def records_path(self) -> Path:
        """The local build-record cache (provenance for `plan` reasons, `status` history)."""
        return self.home / "builds.sqlite"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def explicit_fields(names: Iterable[str]) -> dict[str, tuple[type, str]]:
    """Name -> (type of an explicit value, description naming its variable) of some settings:
    the optional fields an adapter (Dagster resource, component) declares for them. A path is
    given as a string; every value may be None (not given)."""
    hints = typing.get_type_hints(Settings)
    out: dict[str, tuple[type, str]] = {}
    for name in names:
        given = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
        kind = str if given[0] is Path else given[0]
        out[name] = (kind, f"{HELP.get(name, name)} ({ENVIRONMENT[name][0]})")
    return out


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process (a build script, git, docker): this process's,
    with `extra` on top."""
    return {**os.environ, **(extra or {})}


def export(variables: Mapping[str, str]) -> None:
    """Set `variables` in this process's environment, for what reads them there itself
    (Dagster's DAGSTER_HOME, the AWS SDK, Docker) and for every child process: what
    `eval "$(build-assets stack up)"` does, within a process."""
    os.environ.update(variables)


def _parse(name: str, value: Any, source: str) -> Any:
    if name in _INTEGERS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            raise SettingsError(f"{source}: expected a positive integer, got '{value}'")
        return number
    if name in _PATHS:
        return Path(value)
    return str(value)


def from_environment(name: str) -> str | None:
    """The raw environment value of one setting (None when unset or empty)."""
    return os.environ.get(ENVIRONMENT[name][0]) or None


def state_home(settings: Settings | None = None) -> Path:
    """Folder for build records and the local stack (BUILD_ASSETS_HOME, default ~/.build-assets)."""
    return (settings or Settings.resolve()).home
