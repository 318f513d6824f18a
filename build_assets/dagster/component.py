"""`build_assets.ImagesComponent`: the images and Lambda functions of a monorepo in a `dg`
project, configured in a `defs.yaml`::

    type: build_assets.ImagesComponent
    attributes:
      repo: ../monorepo              # relative to the dg project root
      registry: 127.0.0.1:5000
      sensor: {enabled: true, branch: main, interval_seconds: 60}
      translation:
        owners: [team:platform]
        tags: {team: platform}
        automation_condition: "{{ automation_condition.eager() }}"

The settings attributes (`COMPONENT_SETTINGS`) are typed and described from the `Settings`
fields of the same names (`settings.explicit_fields`), not declared again here. Every attribute
is optional and falls back to its environment variable (`Settings`), so an empty
`attributes:` works wherever `BUILD_ASSETS_REPO`/`BUILD_ASSETS_REGISTRY` are set.
`dg scaffold defs build_assets.ImagesComponent images` writes a working `defs.yaml`.
"""

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from dagster import (
    AutomationCondition,
    Component,
    ComponentLoadContext,
    DefaultSensorStatus,
    Definitions,
    Resolvable,
    Resolver,
    Scaffolder,
    ScaffoldRequest,
    scaffold_with,
)
from pydantic import BaseModel, PositiveInt

from build_assets.core.targets import Target
from build_assets.core.versioning import VersionSet
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.settings import BACKENDS, SettingsError, explicit_fields

# the settings a defs.yaml may give as attributes, in this order; paths are relative to the
# dg project root
COMPONENT_SETTINGS = ("repo", "manifest", "backend", "registry", "env", "bucket", "ref")
_PATH_SETTINGS = ("repo", "manifest")


def _with_settings(cls: type) -> type:
    """Give a dataclass-to-be the `COMPONENT_SETTINGS` attributes first, each optional (None:
    the environment's), typed and described as `Settings` has them; `backend` one of
    `BACKENDS`."""
    declared: dict[str, Any] = {}
    for name, (kind, description) in explicit_fields(COMPONENT_SETTINGS).items():
        allowed = Literal[BACKENDS] if name == "backend" else kind
        declared[name] = Annotated[allowed | None, Resolver.default(description=description)]
        setattr(cls, name, None)
    cls.__annotations__ = {**declared, **cls.__dict__.get("__annotations__", {})}
    return cls


@dataclass
class GitSensor(Resolvable):
    """The git push sensor: `enabled` starts it running (else stopped); `branch`, `remote`
    (BUILD_ASSETS_GIT_BRANCH / _REMOTE) and `interval_seconds` between ticks."""

    enabled: bool = False
    branch: str | None = None
    remote: str | None = None
    interval_seconds: PositiveInt | None = None


Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]


@dataclass
class Checks(Resolvable):
    """Asset checks: `enabled`; ECR scan thresholds `fail_on`/`warn_on`; `cron` of the
    periodic registry/drift checks (a schedule, stopped by default)."""

    enabled: bool = True
    fail_on: Severity = "CRITICAL"
    warn_on: Severity = "HIGH"
    cron: str | None = None


@dataclass
class Translation(Resolvable):
    """Per-asset translation: the decisions of `ImageAssetTranslator` (`group`: one group for
    every asset; `owners`: added to the manifest's; `code_url`: Dockerfile link template
    with {path} and {line})."""

    group: str | None = None
    owners: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    automation_condition: Annotated[
        AutomationCondition | None,
        Resolver.default(
            model_field_type=str | None,
            description="e.g. {{ automation_condition.eager() }}",
        ),
    ] = None
    code_url: str | None = None


class ComponentTranslator(ImageAssetTranslator):
    """The default translator, with the component's `translation` attributes on top."""

    def __init__(self, translation: Translation) -> None:
        super().__init__(code_url=translation.code_url)
        self.translation = translation

    def get_group_name(self, target: Target, versions: VersionSet) -> str:
        return self.translation.group or super().get_group_name(target, versions)

    def get_owners(self, target: Target, versions: VersionSet) -> list[str]:
        owners = super().get_owners(target, versions)
        return owners + [o for o in self.translation.owners if o not in owners]

    def get_tags(self, target: Target, versions: VersionSet) -> dict[str, str]:
        return {**super().get_tags(target, versions), **self.translation.tags}

    def get_automation_condition(self, target: Target, versions: VersionSet):
        return self.translation.automation_condition or super().get_automation_condition(
            target, versions
        )


class ImagesScaffoldParams(BaseModel):
    repo: str | None = None
    manifest: str | None = None
    registry: str | None = None
    backend: Literal[BACKENDS] | None = None  # type: ignore[valid-type]


class ImagesScaffolder(Scaffolder[ImagesScaffoldParams]):
    """Writes a `defs.yaml` with the given settings; the rest fall back to the environment."""

    @classmethod
    def get_scaffold_params(cls) -> type[ImagesScaffoldParams]:
        return ImagesScaffoldParams

    def scaffold(self, request: ScaffoldRequest[ImagesScaffoldParams]) -> None:
        given = {k: v for k, v in request.params.model_dump().items() if v}
        lines = "".join(f"  {k}: {v}\n" for k, v in given.items())
        request.target_path.mkdir(parents=True, exist_ok=True)
        (request.target_path / "defs.yaml").write_text(
            f"type: {request.type_name}\n\n"
            + textwrap.dedent("""\
            # Unset attributes fall back to BUILD_ASSETS_* environment variables.
            attributes:
            """)
            + (lines or "  {}\n")
            + textwrap.dedent("""\
            #  backend: local                 # local | codebuild
            #  env: dev
            #  sensor: {enabled: false, branch: main, remote: origin, interval_seconds: 60}
            #  checks: {enabled: true, fail_on: CRITICAL, warn_on: HIGH}
            #  translation:
            #    owners: [team:platform]
            #    tags: {team: platform}
            #    automation_condition: "{{ automation_condition.eager() }}"
            #    code_url: https://github.com/ORG/REPO/blob/main/{path}#L{line}
            """)
        )


@scaffold_with(ImagesScaffolder)
@dataclass
@_with_settings
class ImagesComponent(Component, Resolvable):
    """Docker base images, Lambda images and Lambda functions of a monorepo (images.yaml),
    built incrementally by content version; with asset checks and upstream base images.

    `repo` and `manifest` are relative to the dg project root; `backend` (local |
    codebuild), `registry`, `env`, `bucket`, `ref`: the build-assets settings; unset
    attributes fall back to BUILD_ASSETS_* environment variables."""

    sensor: GitSensor | None = None
    checks: Checks | None = None
    translation: Translation | None = None

    def _path(self, value: str | None, root: Path) -> str | None:
        if not value:
            return None
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (root / path))

    def resource(self, root: Path) -> ImageBuildResource:
        """The resource these attributes describe (paths relative to `root`)."""
        given = {name: getattr(self, name) for name in COMPONENT_SETTINGS}
        for name in _PATH_SETTINGS:
            given[name] = self._path(given[name], root)
        return ImageBuildResource(**given)

    def translator(self) -> ImageAssetTranslator:
        return ComponentTranslator(self.translation or Translation())

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        """The location's definitions; a bad setting is one line naming defs.yaml and it."""
        try:
            return self._build(context)
        except SettingsError as exc:
            raise SettingsError(f"{context.path / 'defs.yaml'}: attributes.{exc}") from None

    def _build(self, context: ComponentLoadContext) -> Definitions:
        from build_assets.dagster.location import build_definitions

        sensor, checks = self.sensor or GitSensor(), self.checks or Checks()
        status = DefaultSensorStatus.RUNNING if sensor.enabled else DefaultSensorStatus.STOPPED
        return build_definitions(
            self.resource(context.project_root),
            self.translator(),
            sensor_options={
                "remote": sensor.remote,
                "branch": sensor.branch,
                "interval_seconds": sensor.interval_seconds,
                "default_status": status,
            },
            with_checks=checks.enabled,
            check_options={
                "fail_on": checks.fail_on,
                "warn_on": checks.warn_on,
                **({"cron": checks.cron} if checks.cron else {}),
            },
        )
