"""`git_push_sensor`: builds what a push changed, pinned to the pushed commit.

Configuration (arguments of `build_git_push_sensor` win over the settings, which read the
environment):

* ``BUILD_ASSETS_GIT_REMOTE`` — remote name, URL or path to fetch (default ``origin`` of the
  monorepo clone ``BUILD_ASSETS_REPO``);
* ``BUILD_ASSETS_GIT_BRANCH`` — branch to follow (default ``main``);
* ``BUILD_ASSETS_SENSOR_INTERVAL`` — seconds between ticks (default 60);
* ``BUILD_ASSETS_WEBSERVER`` — ``host:port`` of the Dagster webserver to ask for a code
  location reload when the branch moved (unset: no reload).

Each tick runs one ``git fetch <remote> +refs/heads/<branch>:refs/build-assets/sensor/<branch>``
in the monorepo clone: a private ref, so no branch, index or working tree is touched. The
cursor is the last processed commit. Tip unchanged → SkipReason (cost: one fetch). Tip moved
→ every image version *at that commit* is computed from git objects (one ``git ls-tree``, no
checkout) and compared with what each asset's latest materialization built; one run is
requested for exactly the stale images and Lambda functions, tags ``build-assets/commit``
and ``build-assets/branch``, ``run_key`` = ``<commit>:<digest>`` (`run_key_for`). Only the
tip is evaluated, so several pushes between ticks coalesce into one run for the newest
commit. A force-push or rewound branch is logged and handled the same way: the tip is
compared with what is built (a rewind to built content requests nothing, or a run whose
builds are registry cache hits). A failed
fetch (remote down, bad URL, timeout) is a SkipReason naming the error; the cursor stays, so
the next tick retries.

What "built" means: `Project.stale`, the one rule of the product — an image is built when the
tag of its version is in the registry, a function is up to date when it runs that image's
digest. The same answer as `build-assets plan`, `materialize` and `status`, on any machine.
The request also holds the assets whose latest materialization recorded another code version
than the one a run of this location will record (`run_load`: the tip with BUILD_ASSETS_REF at
the sensor's ref, else the clone's working tree): after a force-push back to built commits
every tag is in the registry, yet Dagster would show the images Unsynced; their run records
them again as `cached`, no build.

How a run pins what it builds. Code versions are computed when a code location loads, and
each run loads the code afresh in its own process, possibly after the branch moved again.
So the sensor does not rely on the run's load: it puts the commit in the run's tags, and
`assets.run_image_builds` builds *that commit's* versions from git objects whenever its own
load is at another state (working tree, or a later commit), and records the version it built
in the materialization metadata. The run builds what the sensor compared, never the
working tree of the server.

How the UI avoids stale code versions. A server following a branch runs with
``BUILD_ASSETS_REF=refs/build-assets/sensor/<branch>`` — the ref this sensor fetches into —
so every load of the location (the UI's, the daemon's, each run's) computes versions at the
fetched commit, and a run started right after the tick loads exactly the commit it was
asked to build. The loaded UI keeps its versions until the location reloads: with
``BUILD_ASSETS_WEBSERVER`` set, each tick that sees the branch move asks the webserver to
reload the location (GraphQL ``reloadRepositoryLocation``, in a background thread, best
effort, logged), so the UI shows the new tip's versions and staleness within seconds.
Without ``BUILD_ASSETS_REF`` the location shows the clone's working tree and the sensor still
builds each pushed commit correctly. The ref must exist before the location first loads:
`ensure_sensor_ref` (or one ``git fetch``) creates it.

A run that fails is not retried by the sensor for the same commit (its cursor moved on):
re-execute it from the UI (the copy keeps the commit tag, so it builds the same content), or
the next push requests whatever is still stale.

Why the run key is not the bare commit: Dagster silently drops a RunRequest whose run_key
was used before. After A → B → force-push back to A, the run for A must happen again (A's
images are cache hits, but the Lambda functions must be pointed back at A's images); the key
`<commit>:<digest of the selection and of its latest materializations>` is the same when a
failed tick is retried (nothing was materialized meanwhile) and new once anything was.

Runs of successive commits may overlap; the concurrency pool of the build step and the
registry cache (a tag that exists is not rebuilt) make an image both runs select cost one
build.

Images new at the tip are unknown to the loaded location until it reloads (a run cannot
select them yet): they are kept in the cursor as pending and requested by a later tick, once
the location knows them (after the reload above).
"""

import hashlib
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from build_assets.core.targets import resync_targets
from build_assets.core.versioning import VersionSet
from build_assets.dagster.assets import COMMIT_TAG
from build_assets.dagster.recorded import recorded_versions
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.errors import UserError
from build_assets.project import Project
from build_assets.settings import ENVIRONMENT, Settings, child_environment

BRANCH_TAG = "build-assets/branch"
FETCH_TIMEOUT_S = 120.0
DEFAULT_INTERVAL = ENVIRONMENT["sensor_interval"][1]  # seconds between ticks without settings

_RELOAD_MUTATION = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""


def sensor_ref(branch: str) -> str:
    """The private ref each tick fetches the branch into."""
    return f"refs/build-assets/sensor/{branch}"


def _git(repo: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = child_environment({"GIT_TERMINAL_PROMPT": "0"})  # never wait for a password prompt
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=timeout,
    )


def fetch_tip(repo: Path, remote: str, branch: str, timeout: float = FETCH_TIMEOUT_S) -> str:
    """Fetch `branch` of `remote` (a name, URL or path) into `sensor_ref`; return its tip.

    UserError (one line) when the fetch fails or takes longer than `timeout` seconds.
    """
    ref = sensor_ref(branch)
    refspec = f"+refs/heads/{branch}:{ref}"
    try:
        proc = _git(repo, "fetch", "--quiet", "--no-tags", remote, refspec, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"git fetch {remote} {branch}: no answer in {timeout:.0f}s") from None
    except OSError as exc:  # the clone's folder is missing, git is not installed
        raise UserError(f"git fetch {remote} {branch} in {repo}: {exc}") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise UserError(f"git fetch {remote} {branch} failed: {lines[-1] if lines else '?'}")
    return _git(repo, "rev-parse", ref).stdout.strip()


def ensure_sensor_ref(repo: Path, remote: str = "origin", branch: str = "main") -> str:
    """Fetch `sensor_ref(branch)` if it does not exist yet; return its commit.

    A location started with BUILD_ASSETS_REF=refs/build-assets/sensor/<branch> cannot load
    before the first fetch (and the sensor lives in that location): call this first, or run
    ``git fetch origin +refs/heads/main:refs/build-assets/sensor/main`` once in the clone.
    """
    current = _git(repo, "rev-parse", "--verify", "--quiet", sensor_ref(branch))
    if current.returncode == 0:
        return current.stdout.strip()
    return fetch_tip(repo, remote, branch)


def run_key_for(commit: str, keys: list[AssetKey], instance: DagsterInstance) -> str:
    """`<commit>:<digest>` of the selection and the latest materialization of each key."""
    events = instance.get_latest_materialization_events(keys)
    h = hashlib.sha256()
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        event = events.get(key)
        h.update(f"{key.to_user_string()}={event.timestamp if event else '-'}\0".encode())
    return f"{commit}:{h.hexdigest()[:12]}"


def stale_at(
    project: Project,
    versions: VersionSet,
    translator: ImageAssetTranslator,
    keys=None,
    instance: DagsterInstance | None = None,
    loaded: VersionSet | None = None,
) -> list[AssetKey]:
    """Keys of `versions` (all, or those in `keys`) that `Project.stale` finds stale; with
    `instance`, also those whose latest materialization recorded another code version than
    `loaded` (the versions a run's load records; default `versions`): a revert, recorded
    again as cached so the UI shows nothing Unsynced."""
    by_key = {k: t for k, t in translator.keys(versions).items() if keys is None or k in keys}
    chosen = set(project.stale(versions, by_key.values()))
    if instance is not None:
        at_load = {k: t for k, t in translator.keys(loaded or versions).items() if k in by_key}
        again = resync_targets(at_load.values(), recorded_versions(instance, at_load))
        chosen.update(by_key[k] for k, t in at_load.items() if t in again)
    return [k for k, t in by_key.items() if t in chosen]


def run_load(project: Project, tip: str) -> VersionSet | None:
    """The versions a run of this location will load, hence record as code versions: those
    of the configured ref (`BUILD_ASSETS_REF`, the sensor's ref: the tip just fetched), else
    of the clone's working tree. None when that is the tip (no second computation) or when
    it cannot be computed (a broken manifest in the working tree: compare with the tip)."""
    ref = project.settings.ref
    if ref and _git(project.settings.repo, "rev-parse", ref).stdout.strip() == tip:
        return None
    try:
        return project.versions()
    except UserError:
        return None


def parse_cursor(cursor: str | None) -> tuple[str | None, list[AssetKey]]:
    """(last processed commit, keys stale there but not yet known to the code location)."""
    if not cursor:
        return None, []
    if cursor.startswith("{"):
        data = json.loads(cursor)
        return data.get("commit"), [AssetKey.from_user_string(k) for k in data.get("pending", [])]
    return cursor, []


def make_cursor(commit: str, pending: list[AssetKey]) -> str:
    """The commit alone, or a JSON object when some keys wait for a code location reload."""
    if not pending:
        return commit
    return json.dumps({"commit": commit, "pending": [k.to_user_string() for k in pending]})


def request_reload(
    location: str, address: str, log: logging.Logger | None = None
) -> threading.Thread:
    """Ask the webserver at `address` (host:port) to reload `location`, in a background thread
    (the tick does not wait; the reload itself takes seconds). Best effort: failures are logged.

    `log` must outlive the tick: a tick's `context.log` is closed when the tick ends.
    """
    from build_assets.dagster.submit import graphql

    host, _, port = address.rpartition(":")
    log = log or logging.getLogger(__name__)

    def reload() -> None:
        start = time.monotonic()
        try:
            data = graphql(host or "127.0.0.1", int(port), _RELOAD_MUTATION, {"name": location})
            result = data["reloadRepositoryLocation"]
            kind = result["__typename"]
            loaded = (result.get("locationOrLoadError") or {}).get("__typename")
            if kind != "WorkspaceLocationEntry" or loaded == "PythonError":
                raise UserError(result.get("message") or kind)
            log.info(
                f"reloaded code location {location} at {address} ({time.monotonic() - start:.1f}s)"
            )
        except Exception as exc:  # noqa: BLE001 - a reload is a courtesy, never a failure
            log.warning(f"could not reload code location {location} at {address}: {exc}")

    thread = threading.Thread(target=reload, name="build-assets-reload", daemon=True)
    thread.start()
    return thread


def _location_name(context: SensorEvaluationContext, settings: Settings) -> str:
    origin = context.code_location_origin
    if origin is not None:
        return origin.location_name
    return settings.location_name or "build_assets"


def _known_keys(context: SensorEvaluationContext) -> set[AssetKey] | None:
    try:
        repo_def = context.repository_def
    except Exception:  # noqa: BLE001 - not available in every evaluation context
        return None
    if repo_def is None:
        return None
    return set(repo_def.asset_graph.get_all_asset_keys())


def _split_known(
    context: SensorEvaluationContext, keys: list[AssetKey]
) -> tuple[list[AssetKey], list[AssetKey]]:
    known = _known_keys(context)
    if known is None:
        return keys, []
    return [k for k in keys if k in known], [k for k in keys if k not in known]


def _pending_tick(
    context: SensorEvaluationContext,
    project: Project,
    translator: ImageAssetTranslator,
    tip: str,
    pending: list[AssetKey],
    branch: str,
) -> Iterator[RunRequest | SkipReason]:
    """Same tip, some keys waiting for a reload: request the ones the location knows now."""
    ready, waiting = _split_known(context, pending)
    if not ready:
        names = ", ".join(k.to_user_string() for k in waiting)
        yield SkipReason(f"{branch} at {tip[:12]}; waiting for a code location reload: {names}")
        return
    loaded = run_load(project, tip)  # first: a project names repositories after its last versions
    stale = stale_at(
        project, project.versions(tip), translator, set(ready), context.instance, loaded
    )
    context.update_cursor(make_cursor(tip, waiting))
    if not stale:
        yield SkipReason(f"commit {tip[:12]}: pending assets are built")
        return
    yield RunRequest(
        run_key=run_key_for(tip, stale, context.instance),
        asset_selection=stale,
        tags={COMMIT_TAG: tip, BRANCH_TAG: branch},
    )


def evaluate_push(
    context: SensorEvaluationContext,
    resource: ImageBuildResource,
    translator: ImageAssetTranslator,
    remote: str | None,
    branch: str | None,
) -> Iterator[RunRequest | SkipReason]:
    """One tick: fetch, compare the tip's versions with what is built, request one run."""
    try:
        project = resource.project()
        settings = project.settings
        remote = remote or settings.git_remote
        branch = branch or settings.git_branch
        tip = fetch_tip(settings.repo, remote, branch)
    except UserError as exc:  # configuration or fetch: say why, try again next tick
        yield SkipReason(str(exc))
        return
    previous, pending = parse_cursor(context.cursor)
    if tip == previous:
        if pending:
            yield from _pending_tick(context, project, translator, tip, pending, branch)
        else:
            yield SkipReason(f"{branch} still at {tip[:12]}")
        return
    if previous:
        check = _git(settings.repo, "merge-base", "--is-ancestor", previous, tip)
        if check.returncode == 1:
            context.log.info(
                f"{branch} was rewound or force-pushed ({previous[:12]} -> {tip[:12]})"
            )
        elif check.returncode != 0:
            context.log.info(f"{branch}: previous commit {previous[:12]} is unknown here")
    loaded = run_load(project, tip)  # first: a project names repositories after its last versions
    try:
        versions = project.versions(tip)
    except UserError as exc:
        context.update_cursor(tip)  # a broken manifest at this commit: wait for the next push
        yield SkipReason(f"commit {tip[:12]}: {exc}")
        return
    try:
        stale_keys = stale_at(project, versions, translator, None, context.instance, loaded)
    except UserError as exc:  # registry or Lambda unreachable: say why, retry next tick
        yield SkipReason(f"commit {tip[:12]}: {exc}")
        return
    stale, unknown = _split_known(context, stale_keys)
    if unknown:
        names = ", ".join(k.to_user_string() for k in unknown)
        context.log.warning(f"not in the loaded code location yet, pending a reload: {names}")
    context.update_cursor(make_cursor(tip, unknown))
    if stale:
        context.log.info(f"commit {tip[:12]}: {len(stale)} stale assets")
        yield RunRequest(
            run_key=run_key_for(tip, stale, context.instance),
            asset_selection=stale,
            tags={COMMIT_TAG: tip, BRANCH_TAG: branch},
        )
    else:
        yield SkipReason(f"commit {tip[:12]}: every image is already built")
    address = settings.webserver
    if address:  # the branch moved: let the UI show the new tip's code versions
        location = _location_name(context, settings)
        context.log.info(f"asking {address} to reload code location {location}")
        request_reload(location, address)


def build_git_push_sensor(
    *,
    translator: ImageAssetTranslator | None = None,
    name: str = "git_push_sensor",
    remote: str | None = None,
    branch: str | None = None,
    interval_seconds: int | None = None,
    settings: Settings | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """A sensor that requests one run per pushed commit for exactly the stale assets.

    `remote`/`branch` default to the resource's settings (BUILD_ASSETS_GIT_REMOTE /
    BUILD_ASSETS_GIT_BRANCH), `interval_seconds` to `settings.sensor_interval` (without
    `settings`: 60).
    """
    translator = translator or ImageAssetTranslator()
    interval = interval_seconds or (settings.sensor_interval if settings else DEFAULT_INTERVAL)

    @sensor(
        name=name,
        minimum_interval_seconds=interval,
        asset_selection=AssetSelection.all(),
        default_status=default_status,
        description="Fetches a git branch; builds the images its newest commit changed.",
    )
    def _git_push_sensor(context: SensorEvaluationContext, image_builds: ImageBuildResource):
        yield from evaluate_push(context, image_builds, translator, remote, branch)

    return _git_push_sensor
