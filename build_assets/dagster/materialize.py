"""Materialize images from Python or the CLI: find what is stale, run it, summarise it.

Stale is `Project.stale`: an image whose version's tag is not in the registry, a function
that does not run its image's current digest; with an instance, also a target whose latest
materialization recorded another code version (a revert: recorded again as cached).
Because versions are Merkle hashes along `base`, a base change makes the whole cascade stale
at once, and one run builds it all.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, DagsterInstance, materialize

from build_assets.core.versioning import VersionSet
from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.internals import hold_storage_connections
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine import progress
from build_assets.project import Project
from build_assets.settings import ENVIRONMENT, Settings, export


def all_keys(versions: VersionSet, translator: ImageAssetTranslator) -> list[AssetKey]:
    """Every image and function key, images in dependency order first."""
    return list(translator.keys(versions))


def stale_keys(
    project: Project,
    versions: VersionSet,
    translator: ImageAssetTranslator,
    instance: DagsterInstance | None = None,
) -> list[AssetKey]:
    """Keys of the targets `Project.stale` finds stale, in `all_keys` order; with `instance`,
    also those it recorded at another code version (see `dagster.recorded`)."""
    from build_assets.dagster.sensor import stale_at

    return stale_at(project, versions, translator, instance=instance)


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, defaulting to <home>/dagster (created with an empty config); exported
    so the Dagster instance of this process (and its children) finds it."""
    home = settings.dagster_home or settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    export({ENVIRONMENT["dagster_home"][0]: str(home)})  # for Dagster, which reads it there
    return home


@dataclass
class RunSummary:
    """What one materialization did."""

    run_id: str | None
    success: bool
    seconds: float
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    functions_updated: list[str] = field(default_factory=list)
    functions_unchanged: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # image -> tag materialized
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def run_materialization(
    keys: Iterable[AssetKey],
    *,
    instance: DagsterInstance,
    versions: VersionSet,
    resource: ImageBuildResource,
    translator: ImageAssetTranslator | None = None,
    tags: dict[str, str] | None = None,
    log_level: str = "INFO",
    on_progress: Callable[[progress.Progress], None] | None = None,
) -> RunSummary:
    """Materialize `keys` in this process (one step, many builds in flight) and summarise.

    on_progress: every `Progress` event of the run, as it happens (the step publishes them to
    the listeners of this context: see `engine.progress.listening`)."""
    translator = translator or ImageAssetTranslator()
    keys = list(keys)
    start = time.monotonic()
    if not keys:
        return RunSummary(run_id=None, success=True, seconds=0.0)
    hold_storage_connections(instance)  # this process is the run worker, from the first event
    with progress.listening(on_progress):
        result = materialize(
            [build_images_asset(versions, translator)],
            instance=instance,
            resources={"image_builds": resource},
            selection=keys,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
    summary = RunSummary(
        run_id=result.run_id, success=result.success, seconds=time.monotonic() - start
    )
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items()}
        kind, name = mat.asset_key.path[0], mat.asset_key.path[-1]
        if kind == "lambda" or "function_name" in meta:
            target = (
                summary.functions_updated if meta.get("changed") else summary.functions_unchanged
            )
            target.append(name)
        else:
            (summary.cached if meta.get("cached") else summary.built).append(name)
            summary.tags[name] = str(meta.get("tag"))
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            err = event.step_failure_data.error
            user = event.step_failure_data.user_failure_data
            summary.problems.append(
                (user.description if user and user.description else None)
                or (err.message.strip() if err else "step failed")
            )
    return summary
