"""`git_push_sensor`: builds what a push changed, pinned to the pushed commit.

Each tick fetches one branch into a private ref (`refs/build-assets/sensor/<branch>`), and
when its tip moved since the cursor computes every image version *at that commit* from git
objects (no checkout, whatever the server's working tree holds). An image is stale when the
version its latest materialization built (metadata `version`, else its recorded code
version) differs; one run is requested for exactly the stale images and their Lambda
functions, with `run_key` = the commit and the commit in the run's tags. Several pushes
between ticks coalesce into one run for the newest commit; a force-push or rewound branch
is just another tip, compared with what is materialized.

How a run pins what it builds: `assets.run_image_builds` sees the `build-assets/commit` tag
and, when its freshly loaded code location is at another state, builds that commit's
content from git objects and records the version it built in the materialization's
metadata — which is what this sensor compares with, so versions never drift.

How the UI stays current: code versions shown by the UI are computed when the code location
loads. A server following a branch sets `BUILD_ASSETS_REF=refs/build-assets/sensor/main`
(the ref this sensor fetches into), so every load — the UI's and each run's — computes
versions at the fetched commit; with `BUILD_ASSETS_WEBSERVER=host:port` the sensor also
asks the webserver to reload the code location after requesting a run (best effort).
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from build_assets.assets import COMMIT_TAG
from build_assets.errors import UserError
from build_assets.resources import ImageBuildResource
from build_assets.translator import ImageAssetTranslator
from build_assets.versioning import VersionSet, commit_versions

ENV_REMOTE = "BUILD_ASSETS_GIT_REMOTE"
ENV_BRANCH = "BUILD_ASSETS_GIT_BRANCH"
ENV_WEBSERVER = "BUILD_ASSETS_WEBSERVER"
BRANCH_TAG = "build-assets/branch"


def sensor_ref(branch: str) -> str:
    """The private ref each tick fetches the branch into."""
    return f"refs/build-assets/sensor/{branch}"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def fetch_tip(repo: Path, remote: str, branch: str) -> str:
    """Fetch `branch` of `remote` (a name, URL or path) and return its tip commit."""
    ref = sensor_ref(branch)
    proc = _git(repo, "fetch", "--quiet", "--no-tags", remote, f"+refs/heads/{branch}:{ref}")
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise UserError(f"git fetch {remote} {branch} failed: {lines[-1] if lines else '?'}")
    return _git(repo, "rev-parse", ref).stdout.strip()


def built_versions(instance: DagsterInstance, keys: list[AssetKey]) -> dict[AssetKey, str | None]:
    """The version each asset's latest materialization built (metadata, else code version)."""
    out: dict[AssetKey, str | None] = {}
    events = instance.get_latest_materialization_events(keys)
    code = instance.get_latest_materialization_code_versions(keys)
    for key in keys:
        event = events.get(key)
        mat = event.asset_materialization if event else None
        version = mat.metadata.get("version") if mat else None
        out[key] = version.value if version is not None else code.get(key)  # type: ignore[union-attr]
    return out


def stale_at(
    versions: VersionSet, instance: DagsterInstance, translator: ImageAssetTranslator
) -> list[AssetKey]:
    """Image and function keys whose built version differs from their version in `versions`."""
    wanted: dict[AssetKey, str] = {}
    for img in versions:
        wanted[translator.get_image_key(img)] = img.version
        for fn in img.lambdas:
            wanted[translator.get_lambda_key(fn, img)] = img.version
    built = built_versions(instance, list(wanted))
    return [key for key, version in wanted.items() if built.get(key) != version]


def _reload_ui(context: SensorEvaluationContext) -> None:
    address = os.environ.get(ENV_WEBSERVER)
    if not address:
        return
    try:
        from dagster_graphql import DagsterGraphQLClient

        from build_assets.launch import discover_location, webserver_address

        host, port = webserver_address()
        client = DagsterGraphQLClient(host, port_number=port)
        client.reload_repository_location(discover_location(host, port))
        context.log.info(f"asked {address} to reload the code location")
    except Exception as exc:  # noqa: BLE001 - a reload is a courtesy, never a failure
        context.log.warning(f"could not reload the code location at {address}: {exc}")


def evaluate_push(
    context: SensorEvaluationContext,
    resource: ImageBuildResource,
    translator: ImageAssetTranslator,
    remote: str | None,
    branch: str | None,
) -> Iterator[RunRequest | SkipReason]:
    """One tick: fetch, compare the tip's versions with what is built, request a run."""
    settings = resource.settings()
    remote = remote or os.environ.get(ENV_REMOTE) or "origin"
    branch = branch or os.environ.get(ENV_BRANCH) or "main"
    try:
        tip = fetch_tip(settings.repo, remote, branch)
    except UserError as exc:
        yield SkipReason(str(exc))
        return
    previous = context.cursor
    if tip == previous:
        yield SkipReason(f"{branch} still at {tip[:12]}")
        return
    if previous and _git(settings.repo, "merge-base", "--is-ancestor", previous, tip).returncode:
        context.log.info(f"{branch} was rewound or force-pushed ({previous[:12]} -> {tip[:12]})")
    try:
        versions = commit_versions(settings.repo, tip, settings.manifest)
    except UserError as exc:
        context.update_cursor(tip)  # a broken manifest at this commit: wait for the next push
        yield SkipReason(f"commit {tip[:12]}: {exc}")
        return
    stale = stale_at(versions, context.instance, translator)
    known = _known_keys(context)
    if known is not None:
        unknown = [k for k in stale if k not in known]
        if unknown:
            names = ", ".join(k.to_user_string() for k in unknown)
            context.log.warning(f"not in the loaded code location yet (reload it): {names}")
        stale = [k for k in stale if k in known]
    context.update_cursor(tip)
    if not stale:
        yield SkipReason(f"commit {tip[:12]}: every image is already built")
        return
    context.log.info(f"commit {tip[:12]}: {len(stale)} stale assets")
    yield RunRequest(
        run_key=tip,
        asset_selection=stale,
        tags={COMMIT_TAG: tip, BRANCH_TAG: branch},
    )
    _reload_ui(context)


def _known_keys(context: SensorEvaluationContext) -> set[AssetKey] | None:
    try:
        repo_def = context.repository_def
    except Exception:  # noqa: BLE001 - not available in every evaluation context
        return None
    if repo_def is None:
        return None
    return set(repo_def.asset_graph.get_all_asset_keys())


def build_git_push_sensor(
    *,
    translator: ImageAssetTranslator | None = None,
    name: str = "git_push_sensor",
    remote: str | None = None,
    branch: str | None = None,
    interval_seconds: int = 60,
) -> SensorDefinition:
    """A sensor that requests one run per pushed commit for exactly the stale images."""
    translator = translator or ImageAssetTranslator()

    @sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        asset_selection=AssetSelection.all(),
        description="Fetches a git branch; builds the images the newest commit changed.",
    )
    def _git_push_sensor(context: SensorEvaluationContext, image_builds: ImageBuildResource):
        yield from evaluate_push(context, image_builds, translator, remote, branch)

    return _git_push_sensor
