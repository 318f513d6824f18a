"""What a CodeBuild build's record says: terminal or not, the phase that failed, durations and
links, and the tail of its CloudWatch log. Reads only what `batch_get_builds` returned, except
`fetch_builds` (one call per 100 ids) and `log_tail` (one `get_log_events`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from build_assets.aws.buildspec import DIGEST_VARIABLE
from build_assets.aws.clients import error_code

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "FAULT", "TIMED_OUT", "STOPPED"})
LOG_TAIL_LINES = 50
BATCH_LIMIT = 100  # batch_get_builds accepts at most 100 ids


def console_url(region: str, project: str, build_id: str) -> str:
    """CodeBuild console page of a build."""
    return (
        f"https://{region}.console.aws.amazon.com/codesuite/codebuild/projects/{project}"
        f"/build/{quote(build_id, safe='')}/?region={region}"
    )


def fetch_builds(codebuild: Any, ids: Sequence[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """(build id -> build, ids CodeBuild no longer knows), `BATCH_LIMIT` ids per call."""
    builds: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()
    for i in range(0, len(ids), BATCH_LIMIT):
        resp = codebuild.batch_get_builds(ids=list(ids[i : i + BATCH_LIMIT]))
        builds.update({b["id"]: b for b in resp.get("builds", [])})
        missing.update(resp.get("buildsNotFound", []))
    return builds, missing


def _seconds(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 3)
    return None


def failed_phase(build: Mapping[str, Any]) -> tuple[str | None, str]:
    """(phase type, context message) of the first phase that did not succeed."""
    for phase in build.get("phases", []) or []:
        status = phase.get("phaseStatus")
        if status and status != "SUCCEEDED":
            messages = [
                f"{c.get('statusCode', '')}: {c.get('message', '')}".strip(": ")
                for c in phase.get("contexts", []) or []
                if c.get("message") or c.get("statusCode")
            ]
            return phase.get("phaseType"), "; ".join(messages)
    return None, ""


def build_metadata(build: Mapping[str, Any], region: str) -> dict[str, Any]:
    """Build id, links, durations and phase timings for BuildResult.extra / BuildError."""
    project = build.get("projectName", "")
    phases = build.get("phases", []) or []
    queued = next(
        (p.get("durationInSeconds") for p in phases if p.get("phaseType") == "QUEUED"), None
    )
    meta: dict[str, Any] = {
        "build_id": build.get("id"),
        "console_url": console_url(region, project, build.get("id", "")),
        "log_deep_link": (build.get("logs") or {}).get("deepLink"),
        "status": build.get("buildStatus"),
        "queued_s": queued,
        "build_s": _seconds(build.get("startTime"), build.get("endTime")),
        "phases": {
            p["phaseType"]: p.get("durationInSeconds")
            for p in phases
            if p.get("phaseType") and p.get("durationInSeconds") is not None
        },
    }
    exported = {
        v.get("name"): v.get("value") for v in build.get("exportedEnvironmentVariables", []) or []
    }
    if exported.get(DIGEST_VARIABLE):
        meta["reported_digest"] = exported[DIGEST_VARIABLE]
    return meta


def log_tail(logs: Any, build: Mapping[str, Any], lines: int = LOG_TAIL_LINES) -> str:
    """Last `lines` lines of the build's CloudWatch log ('' when unavailable)."""
    where = build.get("logs") or {}
    group, stream = where.get("groupName"), where.get("streamName")
    if not group or not stream:
        return ""
    try:
        events = logs.get_log_events(
            logGroupName=group, logStreamName=stream, limit=lines, startFromHead=False
        )["events"]
    except ClientError as exc:
        log.warning("cannot read CodeBuild log %s/%s: %s", group, stream, error_code(exc))
        return ""
    return "\n".join(e["message"].rstrip("\n") for e in events[-lines:])
