"""Runs whose process died: tagged with their owner at launch, marked failed on the next start.

`build-assets materialize` runs in its own process; if that process is killed (`kill -9`, OOM,
a closed laptop), Dagster never hears the end of the run and it stays STARTED. Runs launched
with `owner_tags()` name their host, pid and process start time; `fail_dead_runs` reports
every such run of this host whose process is gone as failed (`report_run_failed`).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from build_assets.engine.lease import process_alive, process_start_time

HOST_TAG = "build_assets/host"
PID_TAG = "build_assets/pid"
START_TAG = "build_assets/pid_start"
_OPEN = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def owner_tags() -> dict[str, str]:
    """Run tags naming this process as the run's owner."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        START_TAG: str(process_start_time(pid) or 0),
    }


def owner_dead(tags: dict[str, str]) -> bool:
    """True when `tags` name a process of this host that is no longer running."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    start = int(tags.get(START_TAG) or 0)
    return not process_alive(int(tags[PID_TAG]), start or None)


def fail_dead_runs(instance: Any) -> list[str]:
    """Mark open runs whose owning process died as failed; return their run ids."""
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [DagsterRunStatus(s) for s in _OPEN]
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=statuses)):
        if owner_dead(run.tags):
            instance.report_run_failed(
                run,
                message=f"the process running it (pid {run.tags[PID_TAG]} on"
                f" {run.tags[HOST_TAG]}) died; marked failed on the next start",
            )
            failed.append(run.run_id)
    return failed
