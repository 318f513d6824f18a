"""Builds the Dagster definitions of one monorepo (`build_assets.definitions` exposes them).

Versions are computed once, when the code location loads (one `git ls-files` + one
`git status`). `BUILD_ASSETS_REF` makes the location track a git ref instead of the
working tree (versions from git objects, no checkout) — what a server following a branch wants.
"""

from __future__ import annotations

import os

from dagster import Definitions, in_process_executor

from build_assets.core.versioning import VersionSet, commit_versions, worktree_versions
from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator

ENV_REF = "BUILD_ASSETS_REF"


def load_versions(resource: ImageBuildResource, ref: str | None = None) -> VersionSet:
    """Versions of the configured monorepo: at `ref` (or BUILD_ASSETS_REF), else its work tree."""
    settings = resource.settings()
    ref = ref or os.environ.get(ENV_REF)
    if ref:
        return commit_versions(settings.repo, ref, settings.manifest)
    return worktree_versions(settings.repo, settings.manifest)


def build_definitions(
    resource: ImageBuildResource | None = None,
    translator: ImageAssetTranslator | None = None,
    *,
    ref: str | None = None,
    with_sensor: bool = True,
) -> Definitions:
    """Definitions for one monorepo: the image/function multi-asset, its resource, the sensor."""
    resource = resource or ImageBuildResource()
    translator = translator or ImageAssetTranslator()
    versions = load_versions(resource, ref)
    sensors = []
    if with_sensor:
        try:
            from build_assets.dagster.sensor import build_git_push_sensor
        except ModuleNotFoundError as exc:  # the sensor module is optional
            if exc.name != "build_assets.dagster.sensor":
                raise
        else:
            sensors.append(build_git_push_sensor(translator=translator))
    # One step polls every build from one process: Dagster's default multiprocess executor
    # would only add a process start per run.
    return Definitions(
        executor=in_process_executor,
        assets=[build_images_asset(versions, translator)],
        resources={"image_builds": resource},
        sensors=sensors,
    )
