"""Fast async launch: submit a run to the Dagster queue through the webserver and return.

`build-assets materialize --async` talks to the webserver's GraphQL API with plain HTTP: it
never imports Dagster, never loads the code location and never opens the instance's
storage, so it returns in about a second with the run id and its UI link, like the seed's
quick `pulumi up`. The daemon (`dagster dev` or `dagster-daemon run`) executes the run;
the run's own process computes the versions afresh and builds them.

What is stale is decided like the git sensor decides it: `Project.stale` (the registry and
Lambda), plus the assets whose latest materialization recorded another code version than the
current one (a revert), read from the webserver (`recorded_code_versions`).

Without a webserver (only `dagster-daemon run`), `submit_materialization(...,
instance=...)` falls back to `submit_via_instance`: it loads the code location in this
process (the module workspace.yaml names), creates the run in the instance and submits it to
the instance's run coordinator (QUEUED with the default QueuedRunCoordinator) — what
`dagster job launch` does, minus the code-server subprocess. Slower (it imports Dagster and
loads the code location: ~2 s once Dagster is imported, more for a cold process) but needs
no webserver; the daemon launches the run on its own code server of the same location name
(BUILD_ASSETS_LOCATION_NAME, default `build_assets`). See docs/triggers.md for figures.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from build_assets.dagster.runs import (
    ASSET_JOB,
    DEFAULT_LOCATION,
    DEFAULT_MODULE,
    DEFAULT_WEBSERVER,
    ENV_LOCATION,
    ENV_WEBSERVER,
    REPOSITORY,
    SubmittedRun,
    asset_paths,
    run_url,
    webserver_address,
)
from build_assets.errors import UserError

if TYPE_CHECKING:
    from build_assets.settings import Settings

__all__ = [  # the names of dagster.runs callers have imported from here
    "ASSET_JOB",
    "DEFAULT_LOCATION",
    "DEFAULT_MODULE",
    "DEFAULT_WEBSERVER",
    "REPOSITORY",
    "SubmittedRun",
    "WebserverUnavailable",
    "discover_location",
    "graphql",
    "in_flight_runs",
    "recorded_code_versions",
    "run_url",
    "submit_materialization",
    "webserver_address",
]

IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")

_LOCATIONS_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {"
    " __typename } } } } }"
)
_LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""
_RECORDED_QUERY = """
query Recorded($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 1) { tags { key value } }
  }
}
"""
CODE_VERSION_TAG = "dagster/code_version"  # what Dagster records on each materialization


class WebserverUnavailable(UserError):
    """Nothing answers at the webserver address."""


def graphql(host: str, port: int, query: str, variables: dict | None = None) -> dict[str, Any]:
    """POST one GraphQL document; UserError (one line) when the webserver is not there."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WebserverUnavailable(
            f"no Dagster webserver at {host}:{port} ({exc}): start `dagster dev` in the project"
            f" folder, or set {ENV_WEBSERVER}=host:port"
        ) from None
    if payload.get("errors"):
        raise UserError(f"Dagster webserver at {host}:{port}: {payload['errors'][0]['message']}")
    return payload["data"]


def discover_location(host: str, port: int, explicit: str | None = None) -> str:
    """The code location serving build-assets (`dagster dev -m build_assets.definitions`
    names it after the module, workspace.yaml `build_assets`; an explicit name wins)."""
    if explicit:
        return explicit
    entries = graphql(host, port, _LOCATIONS_QUERY)["workspaceOrError"].get("locationEntries", [])
    names = [
        e["name"]
        for e in entries
        if (e.get("locationOrLoadError") or {}).get("__typename") == "RepositoryLocation"
    ]
    for preferred in ("build_assets", "build_assets.definitions"):
        if preferred in names:
            return preferred
    if len(names) == 1:
        return names[0]
    raise UserError(
        f"cannot tell which code location of {host}:{port} is build-assets ({names});"
        f" set {ENV_LOCATION}"
    )


def submit_materialization(
    asset_keys: Sequence[Any],
    tags: dict[str, str] | None = None,
    *,
    location_name: str | None = None,
    instance: Any = None,
    webserver: str | None = None,
    settings: Settings | None = None,
) -> SubmittedRun:
    """Queue a run materializing `asset_keys` (AssetKeys or paths); return (run id, UI link).

    Through the webserver's GraphQL API; when no webserver answers and a DagsterInstance is
    given, through that instance instead (`submit_via_instance`). `webserver` and
    `location_name` default to those of `settings`; a script that passes no `settings` is a
    process of its own, so they are resolved here from the environment.
    """
    from build_assets.dagster.internals import submit_via_instance

    if settings is None:  # called from a user's script: its process starts here
        from build_assets.settings import Settings

        settings = Settings.resolve()
    webserver = webserver or settings.webserver
    location_name = location_name or settings.location_name
    paths = asset_paths(asset_keys)
    host, port = webserver_address(webserver)
    try:
        location = discover_location(host, port, location_name)
    except WebserverUnavailable:
        if instance is None:
            raise
        return submit_via_instance(
            instance, paths, tags, location_name=location_name, webserver=webserver
        )
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": REPOSITORY,
            "pipelineName": ASSET_JOB,
            "assetSelection": [{"path": p} for p in paths],
        },
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    try:
        data = graphql(host, port, _LAUNCH_MUTATION, {"params": params})
    except WebserverUnavailable:
        if instance is None:
            raise
        return submit_via_instance(
            instance, paths, tags, location_name=location, webserver=webserver
        )
    result = data["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        message = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        raise UserError(f"the webserver refused the run ({result['__typename']}): {message}")
    run_id = result["run"]["runId"]
    return SubmittedRun(run_id, f"http://{host}:{port}/runs/{run_id}")


def recorded_code_versions(
    asset_keys: Sequence[Any], *, webserver: str | None = None
) -> dict[tuple[str, ...], str | None]:
    """Key path -> the code version of its latest materialization (None: never materialized,
    or unknown to the loaded location), asked from the webserver in one GraphQL query."""
    host, port = webserver_address(webserver)
    paths = asset_paths(asset_keys)
    data = graphql(host, port, _RECORDED_QUERY, {"keys": [{"path": p} for p in paths]})
    found: dict[tuple[str, ...], str | None] = {}
    for node in data["assetNodes"]:
        events = node["assetMaterializations"]
        tags = {t["key"]: t["value"] for t in events[0]["tags"]} if events else {}
        found[tuple(node["assetKey"]["path"])] = tags.get(CODE_VERSION_TAG)
    return {tuple(p): found.get(tuple(p)) for p in paths}


def in_flight_runs(instance: Any, limit: int = 20) -> list[dict[str, Any]]:
    """Runs queued or running in a DagsterInstance, newest first: run id, status, asset
    selection, tags, created and start time (epoch seconds; start None while queued)."""
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [DagsterRunStatus(s) for s in IN_FLIGHT]
    records = instance.get_run_records(filters=RunsFilter(statuses=statuses), limit=limit)
    out = []
    for record in records:
        run = record.dagster_run
        out.append(
            {
                "run_id": run.run_id,
                "status": run.status.value,
                "asset_selection": sorted(k.to_user_string() for k in run.asset_selection or []),
                "tags": {k: v for k, v in run.tags.items() if not k.startswith(".dagster")},
                "created_at": record.create_timestamp.timestamp(),
                "start_time": record.start_time,
            }
        )
    return out
