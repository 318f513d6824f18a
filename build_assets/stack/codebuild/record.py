"""A local CodeBuild build as the API sees it: the request merged with its project, and the
phases it reports (`to_api`, what `batch_get_builds` returns). `runner.Build` runs it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_assets.stack.codebuild.logs import BuildLog


def now() -> float:
    """Wall-clock seconds, as the API reports times."""
    return time.time()


@dataclass
class Knobs:
    """Local-only settings of the service (docs/codebuild.md, 'local knobs')."""

    provisioning_s: float = 0.0  # time every build spends in QUEUED + PROVISIONING
    minute_s: float = 60.0  # seconds per minute of timeoutInMinutes (tests shorten it)
    fault_projects: set[str] = field(default_factory=set)  # builds end FAULT in PROVISIONING
    throttle: dict[str, int] = field(default_factory=dict)  # op -> next N calls throttled
    throttled: dict[str, int] = field(default_factory=dict)  # op -> calls throttled so far

    def to_json(self) -> dict[str, Any]:
        return {
            "provisioning_s": self.provisioning_s,
            "minute_s": self.minute_s,
            "fault_projects": sorted(self.fault_projects),
            "throttle": dict(self.throttle),
            "throttled": dict(self.throttled),
        }


@dataclass
class Services:
    """The AWS clients (moto) and addresses a build uses."""

    s3: Any
    ssm: Any
    secrets: Any
    logs: Any
    region: str
    moto_url: str
    codebuild_url: str
    docker_host: str | None


class BuildRecord:
    """What a build is (its request, merged with its project) and what it reports: its
    phases, as `batch_get_builds` returns them (`to_api`)."""

    def __init__(
        self,
        *,
        build_id: str,
        arn: str,
        number: int,
        project: dict[str, Any],
        params: dict[str, Any],
        workdir: Path,
        services: Services,
        knobs: Knobs,
        initiator: str = "build-assets-local",
    ) -> None:
        self.id, self.arn, self.number = build_id, arn, number
        self.project = project
        self.project_name: str = project["name"]
        self.params = params
        self.dir = workdir
        self.svc = services
        self.initiator = initiator
        self.provisioning_s = knobs.provisioning_s
        self.minute_s = knobs.minute_s
        self.fault = self.project_name in knobs.fault_projects
        env = dict(project.get("environment") or {})
        self.image = params.get("imageOverride") or env.get("image", "aws/codebuild/standard:7.0")
        self.compute_type = params.get("computeTypeOverride") or env.get("computeType")
        self.env_type = params.get("environmentTypeOverride") or env.get("type")
        self.privileged = params.get("privilegedModeOverride", env.get("privilegedMode", False))
        self.timeout_min = int(
            params.get("timeoutInMinutesOverride") or project.get("timeoutInMinutes") or 60
        )
        self.source = self._source()
        self.env_vars = self._variables(env.get("environmentVariables") or [])
        self.start_time = now()
        self.end_time: float | None = None
        self.status = "IN_PROGRESS"
        self.current = "SUBMITTED"
        self.phases: list[dict[str, Any]] = []
        self.exported: list[dict[str, str]] = []
        self.group, self.stream = self._log_names()
        self._lock = threading.RLock()
        self._ended = threading.Event()
        self._log: BuildLog | None = None

    # -- the request ------------------------------------------------------------------------

    def _source(self) -> dict[str, Any]:
        src = dict(self.project.get("source") or {})
        p = self.params
        if p.get("sourceTypeOverride"):
            src["type"] = p["sourceTypeOverride"]
        if p.get("sourceLocationOverride"):
            src["location"] = p["sourceLocationOverride"]
        if p.get("buildspecOverride"):
            src["buildspec"] = p["buildspecOverride"]
        return src

    def _variables(self, project_vars: list[dict[str, str]]) -> list[dict[str, str]]:
        """Project variables overridden by the StartBuild ones (same name: StartBuild wins)."""
        merged = {v["name"]: dict(v) for v in project_vars}
        for v in self.params.get("environmentVariablesOverride") or []:
            merged[v["name"]] = dict(v)
        for v in merged.values():
            v.setdefault("type", "PLAINTEXT")
        return list(merged.values())

    def _log_names(self) -> tuple[str, str]:
        cw = ((self.project.get("logsConfig") or {}).get("cloudWatchLogs")) or {}
        group = cw.get("groupName") or f"/aws/codebuild/{self.project_name}"
        uuid = self.id.split(":", 1)[1]
        stream = f"{cw['streamName']}/{uuid}" if cw.get("streamName") else uuid
        return group, stream

    # -- report -----------------------------------------------------------------------------

    def to_api(self) -> dict[str, Any]:
        """The build as BatchGetBuilds returns it."""
        region = self.svc.region
        with self._lock:
            build: dict[str, Any] = {
                "id": self.id,
                "arn": self.arn,
                "buildNumber": self.number,
                "startTime": self.start_time,
                "currentPhase": self.current,
                "buildStatus": self.status,
                "projectName": self.project_name,
                "phases": [dict(p) for p in self.phases],
                "source": self.source,
                "secondarySources": [],
                "artifacts": {"location": ""},
                "cache": {"type": "NO_CACHE"},
                "environment": {
                    "type": self.env_type or "LINUX_CONTAINER",
                    "image": self.image,
                    "computeType": self.compute_type or "BUILD_GENERAL1_SMALL",
                    "environmentVariables": [dict(v) for v in self.env_vars],
                    "privilegedMode": bool(self.privileged),
                    "imagePullCredentialsType": "CODEBUILD",
                },
                "serviceRole": self.project.get("serviceRole", ""),
                "logs": {
                    "groupName": self.group,
                    "streamName": self.stream,
                    "deepLink": (
                        f"https://console.aws.amazon.com/cloudwatch/home?region={region}"
                        f"#logEvent:group={self.group};stream={self.stream}"
                    ),
                    "cloudWatchLogsArn": (
                        f"arn:aws:logs:{region}:{self.arn.split(':')[4]}:log-group:"
                        f"{self.group}:log-stream:{self.stream}"
                    ),
                    "cloudWatchLogs": {"status": "ENABLED", "groupName": self.group},
                },
                "timeoutInMinutes": self.timeout_min,
                "queuedTimeoutInMinutes": int(self.project.get("queuedTimeoutInMinutes") or 480),
                "buildComplete": self.end_time is not None,
                "initiator": self.initiator,
                "exportedEnvironmentVariables": [dict(v) for v in self.exported],
            }
            if self.end_time is not None:
                build["endTime"] = self.end_time
            return build

    @property
    def complete(self) -> bool:
        return self._ended.is_set()

    # -- phases -----------------------------------------------------------------------------

    def _begin(self, phase: str) -> dict[str, Any]:
        record = {"phaseType": phase, "startTime": now()}
        with self._lock:
            self.phases.append(record)
            self.current = phase
        if self._log is not None and phase not in ("COMPLETED",):
            self._log.container(f"Entering phase {phase}")
        return record

    def _close(
        self, record: dict[str, Any], status: str, code: str = "", message: str = ""
    ) -> None:
        end = now()
        with self._lock:
            record["endTime"] = end
            record["durationInSeconds"] = int(round(end - record["startTime"]))
            record["phaseStatus"] = status
            if code or message:
                record["contexts"] = [{"statusCode": code, "message": message}]
            else:
                record["contexts"] = [{"statusCode": "", "message": ""}]
        if self._log is not None:
            self._log.container(f"Phase complete: {record['phaseType']} State: {status}")
            self._log.container(f"Phase context status code: {code} Message: {message}")

    def _instant(self, phase: str) -> None:
        self._close(self._begin(phase), "SUCCEEDED")
