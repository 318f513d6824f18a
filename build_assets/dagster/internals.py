"""The one module that uses Dagster internals (`dagster._core`) or instance methods meant for
Dagster's own processes, for what no public API does: creating and submitting a run of a code
location loaded in this process, without a webserver (what `dagster job launch` does, minus the
code-server subprocess), and holding the run worker's storage connection open.
tests/dagster/test_internals.py fails loudly when a Dagster release moves these names.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Sequence
from typing import Any

from build_assets.dagster.runs import (
    ASSET_JOB,
    DEFAULT_LOCATION,
    DEFAULT_MODULE,
    REPOSITORY,
    SubmittedRun,
    asset_paths,
    run_url,
)
from build_assets.errors import UserError

INTERNAL_NAMES = (
    ("dagster._core.definitions.selector", "JobSubsetSelector"),
    ("dagster._core.remote_origin", "InProcessCodeLocationOrigin"),
    ("dagster._core.types.loadable_target_origin", "LoadableTargetOrigin"),
    ("dagster._core.workspace.context", "WorkspaceProcessContext"),
    ("dagster._core.workspace.load_target", "InProcessWorkspaceLoadTarget"),
)


_POOLED: weakref.WeakSet[Any] = weakref.WeakSet()


def hold_storage_connections(instance: Any) -> None:
    """Make this process's instance keep a database connection open for the rest of the run.

    dagster-postgres opens a new connection for every stored event (its engines use
    `NullPool`, so that idle instances hold no connections). A run worker stores hundreds of
    events in a few seconds, and each new connection costs a TCP handshake, a backend fork and
    a SCRAM exchange (8 ms on loopback here, more across a network). This gives the instance
    the webserver's setting instead: one pooled connection (plus short-lived overflow for
    threads logging at the same time), no statement timeout, recycled hourly. It is a no-op for
    storages without a connection pool (SQLite, in-memory) and done once per instance.
    """
    if instance in _POOLED:
        return
    _POOLED.add(instance)
    # max_overflow=-1: a thread that finds the held connection busy opens its own, as before
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=-1)


def submit_via_instance(
    instance: Any,
    asset_keys: Sequence[Any],
    tags: dict[str, str] | None = None,
    *,
    location_name: str | None = None,
    module_name: str = DEFAULT_MODULE,
    python_file: str | None = None,
    webserver: str | None = None,
) -> SubmittedRun:
    """Create a run of `asset_keys` in `instance` and submit it to its run coordinator.

    The code location (`module_name`, or `python_file`) is loaded in this process under
    `location_name` (the setting, default `build_assets`): the daemon launches the run on its
    own code server of that name; `webserver` is where the returned link points.
    """
    from dagster import AssetKey
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    location = location_name or DEFAULT_LOCATION
    keys = [AssetKey(p) for p in asset_paths(asset_keys)]
    target = LoadableTargetOrigin(
        executable_path=sys.executable,
        working_directory=os.getcwd(),
        module_name=None if python_file else module_name,
        python_file=python_file,
    )
    origin = InProcessCodeLocationOrigin(loadable_target_origin=target, location_name=location)
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process:
        workspace = process.create_request_context()
        code_location = workspace.get_code_location(location)
        repo = code_location.get_repository(REPOSITORY)
        missing = [k for k in keys if not repo.asset_graph.has(k)]
        if missing:
            names = ", ".join(k.to_user_string() for k in missing)
            raise UserError(f"not assets of code location {location}: {names}")
        selector = JobSubsetSelector(
            location_name=location,
            repository_name=REPOSITORY,
            job_name=ASSET_JOB,
            op_selection=None,
            asset_selection=keys,
        )
        remote_job = code_location.get_job(selector)
        plan = code_location.get_execution_plan(
            remote_job, {}, step_keys_to_execute=None, known_state=None, instance=instance
        )
        run = instance.create_run(
            job_name=ASSET_JOB,
            run_id=None,
            run_config={},
            resolved_op_selection=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**remote_job.tags, **(tags or {})},
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=frozenset(keys),
            asset_check_selection=None,
            asset_graph=repo.asset_graph,
        )
        instance.submit_run(run.run_id, workspace)
    return SubmittedRun(run.run_id, run_url(run.run_id, webserver))
