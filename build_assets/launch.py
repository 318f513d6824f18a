"""Fast async launch: submit a run to the Dagster queue through the webserver and return.

`build-assets materialize --async` talks to the webserver's GraphQL API with plain HTTP: it
never imports Dagster, never loads the code location and never opens the instance's
storage, so it returns in about a second with the run id and its UI link, like the seed's
quick `pulumi up`. The daemon (`dagster dev` or `dagster-daemon run`) executes the run;
the run's own process computes the versions afresh and builds them.

What is stale is decided like the git sensor decides it: an asset whose latest
materialization built another version (metadata `version`) than the current one.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from build_assets.errors import UserError

ENV_WEBSERVER = "BUILD_ASSETS_WEBSERVER"
ENV_LOCATION = "BUILD_ASSETS_LOCATION_NAME"
DEFAULT_WEBSERVER = "127.0.0.1:3000"
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")

_LOCATIONS_QUERY = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {"
    " __typename } } } } }"
)
_BUILT_QUERY = (
    "{ assetNodes { assetKey { path } assetMaterializations(limit: 1) {"
    " metadataEntries { label ... on TextMetadataEntry { text } } } } }"
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


def webserver_address() -> tuple[str, int]:
    """(host, port) of the Dagster webserver (BUILD_ASSETS_WEBSERVER, default 127.0.0.1:3000)."""
    address = os.environ.get(ENV_WEBSERVER) or DEFAULT_WEBSERVER
    host, _, port = address.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UserError(f"{ENV_WEBSERVER}: expected host:port, got '{address}'") from None


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
        raise UserError(
            f"no Dagster webserver at {host}:{port} ({exc}): start `dagster dev` in the project"
            f" folder, or set {ENV_WEBSERVER}=host:port"
        ) from None
    if payload.get("errors"):
        raise UserError(f"Dagster webserver at {host}:{port}: {payload['errors'][0]['message']}")
    return payload["data"]


def discover_location(host: str, port: int) -> str:
    """The code location serving build-assets (`dagster dev -m build_assets.definitions`
    names it after the module, workspace.yaml `build_assets`; BUILD_ASSETS_LOCATION_NAME wins)."""
    explicit = os.environ.get(ENV_LOCATION)
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


def built_versions(host: str, port: int) -> dict[tuple[str, ...], str | None]:
    """Asset key path -> the version its latest materialization built (None: never)."""
    out: dict[tuple[str, ...], str | None] = {}
    for node in graphql(host, port, _BUILT_QUERY)["assetNodes"]:
        version = None
        for mat in node["assetMaterializations"]:
            for entry in mat["metadataEntries"]:
                if entry["label"] == "version":
                    version = entry.get("text")
        out[tuple(node["assetKey"]["path"])] = version
    return out


def submit_materialization(
    asset_paths: list[list[str]], tags: dict[str, str] | None = None
) -> tuple[str, str]:
    """Queue a run materializing these asset keys (as paths); return (run id, UI link)."""
    host, port = webserver_address()
    params = {
        "selector": {
            "repositoryLocationName": discover_location(host, port),
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": p} for p in asset_paths],
        },
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(host, port, _LAUNCH_MUTATION, {"params": params})["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        message = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        raise UserError(f"the webserver refused the run ({result['__typename']}): {message}")
    run_id = result["run"]["runId"]
    return run_id, f"http://{host}:{port}/runs/{run_id}"


def in_flight_runs(instance: Any, limit: int = 20) -> list[dict[str, Any]]:
    """Runs queued or running in a DagsterInstance, newest first."""
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [DagsterRunStatus(s) for s in IN_FLIGHT]
    runs = instance.get_runs(filters=RunsFilter(statuses=statuses), limit=limit)
    return [
        {
            "run_id": run.run_id,
            "status": run.status.value,
            "asset_selection": sorted(k.to_user_string() for k in run.asset_selection or []),
            "tags": {k: v for k, v in run.tags.items() if not k.startswith(".dagster")},
        }
        for run in runs
    ]
