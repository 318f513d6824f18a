"""Fast async launch: submit a run to the Dagster instance's queue and return at once.

The run is submitted through the Dagster webserver's GraphQL API (`dagster dev` runs the
webserver and the daemon that executes queued runs), so this process never loads the code
location or builds anything: it returns in about a second with the run id and its UI link.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from build_assets.errors import UserError

ENV_WEBSERVER = "BUILD_ASSETS_WEBSERVER"
ENV_LOCATION = "BUILD_ASSETS_LOCATION_NAME"
DEFAULT_WEBSERVER = "127.0.0.1:3000"
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def webserver_address() -> tuple[str, int]:
    address = os.environ.get(ENV_WEBSERVER) or DEFAULT_WEBSERVER
    host, _, port = address.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise UserError(f"{ENV_WEBSERVER}: expected host:port, got '{address}'") from None


def submit_materialization(
    instance: DagsterInstance | None,
    asset_keys: Sequence[AssetKey],
    tags: dict[str, str] | None = None,
    location_name: str | None = None,
) -> tuple[str, str]:
    """Queue a run materializing `asset_keys`; return (run id, UI link)."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    host, port = webserver_address()
    location = location_name or os.environ.get(ENV_LOCATION) or "build_assets"
    client = DagsterGraphQLClient(host, port_number=port, timeout=30)
    try:
        run_id = client.submit_job_execution(
            "__ASSET_JOB",
            repository_location_name=location,
            repository_name="__repository__",
            asset_selection=list(asset_keys),
            tags=tags or {},
        )
    except DagsterGraphQLClientError as exc:
        raise UserError(
            f"could not submit the run to the Dagster webserver at {host}:{port}: {exc}"
            " (start it with `dagster dev`, or set BUILD_ASSETS_WEBSERVER)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise UserError(
            f"no Dagster webserver at {host}:{port} ({type(exc).__name__}): start `dagster dev`"
            " in the project folder, or set BUILD_ASSETS_WEBSERVER=host:port"
        ) from None
    return run_id, f"http://{host}:{port}/runs/{run_id}"


def in_flight_runs(instance: DagsterInstance, limit: int = 20) -> list[dict[str, Any]]:
    """Runs queued or running in the instance, newest first."""
    runs = instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT), limit=limit)
    return [
        {
            "run_id": run.run_id,
            "status": run.status.value,
            "asset_selection": sorted(k.to_user_string() for k in run.asset_selection or []),
            "tags": dict(run.tags),
        }
        for run in runs
    ]
