"""Builds the Dagster definitions of one monorepo (`build_assets.definitions` exposes them).

Versions are computed once, when the code location loads (one `git ls-files` + one
`git status`). The `ref` setting (BUILD_ASSETS_REF) makes the location track a git ref
instead of the working tree (versions from git objects, no checkout) — what a server
following a branch wants.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from build_assets.core.versioning import VersionSet
from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator


def load_versions(resource: ImageBuildResource, ref: str | None = None) -> VersionSet:
    """Versions of the configured monorepo: at `ref` (else the configured ref), else its
    working tree."""
    project = resource.project()
    return project.versions(ref) if ref else project.versions()


def build_definitions(
    resource: ImageBuildResource | None = None,
    translator: ImageAssetTranslator | None = None,
    *,
    ref: str | None = None,
    with_sensor: bool = True,
    sensor_options: dict | None = None,
    with_checks: bool = True,
    check_options: dict | None = None,
    with_upstream: bool = True,
) -> Definitions:
    """Definitions for one monorepo: the image/function multi-asset, its resource, the sensor,
    the asset checks and their schedule (stopped), the external base images.

    `sensor_options` go to `build_git_push_sensor`; `check_options` to `build_image_checks`
    (`fail_on`, `warn_on`) and `cron` to `build_check_schedule`.
    """
    from build_assets.dagster.checks import build_check_schedule, build_image_checks
    from build_assets.dagster.sensor import build_git_push_sensor
    from build_assets.dagster.upstream import build_upstream_assets

    resource = resource or ImageBuildResource()
    translator = translator or ImageAssetTranslator()
    settings = resource.settings()
    versions = load_versions(resource, ref)
    sensors: list = (
        [build_git_push_sensor(translator=translator, settings=settings, **(sensor_options or {}))]
        if with_sensor
        else []
    )
    if getattr(translator, "automation_sensor", False):  # AutomatedImageAssetTranslator
        from build_assets.dagster.automation import build_automation_sensor

        sensors.append(build_automation_sensor())
    assets: list = [build_images_asset(versions, translator)]
    upstream = build_upstream_assets(versions, settings.manifest, translator)
    if with_upstream and upstream is not None:
        assets.append(upstream)
    checks, schedules = [], []
    if with_checks:
        options = dict(check_options or {})
        cron = options.pop("cron", None)
        scans = settings.backend == "codebuild"
        checks.append(build_image_checks(versions, translator, scans=scans, **options))
        schedule = build_check_schedule(versions, translator, **({"cron": cron} if cron else {}))
        schedules.append(schedule)
    # One step polls every build from one process: Dagster's default multiprocess executor
    # would only add a process start per run.
    return Definitions(
        executor=in_process_executor,
        assets=assets,
        asset_checks=checks,
        resources={"image_builds": resource},
        sensors=sensors,
        schedules=schedules,
    )
