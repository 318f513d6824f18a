"""AWS CodeBuild builder: context zip in S3, one CodeBuild build per image version, digest from ECR.

Flow per image version (see `builders.base` for how a scheduler drives it; the AWS-level pieces,
which take plain values, are in `build_assets.aws`):

1. the deterministic context zip goes to `s3://<bucket>/contexts/<image>/<version>.zip`, once:
   the key is content-addressed, so an existing object is reused as is (`context_upload`);
2. a build already IN_PROGRESS for the same image version is attached to (a killed and
   restarted run never starts a duplicate); otherwise `start_build` runs on the project
   `<image>-<env>-img-builder` with the S3 source, the buildspec (which embeds the shared build
   script) and the script's environment. Its idempotency token is derived from image, version and
   the number of earlier failed attempts, so concurrent starters (other processes included) get
   the same build while a retry after a failure gets a new one (`build_start`);
3. one `batch_get_builds` call per poll covers every build in flight, with backoff;
4. success is confirmed by reading the tag's digest back from ECR; failure raises `BuildError`
   with status, failed phase, the CloudWatch log tail and console links (`build_status`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from build_assets.aws.build_start import (
    IMAGE_VARIABLE,
    VERSION_VARIABLE,
    build_environment,
    idempotency_token,
    is_same_version,
    parse_secrets,
)
from build_assets.aws.build_status import (
    LOG_TAIL_LINES,
    TERMINAL_STATUSES,
    build_metadata,
    console_url,
    failed_phase,
    fetch_builds,
    log_tail,
)
from build_assets.aws.buildspec import render_buildspec
from build_assets.aws.clients import (
    aws_errors,
    ecr_registry_parts,
    error_code,
    is_throttling,
    make_client,
    make_session,
    region_of,
    user_error,
)
from build_assets.aws.context_upload import MULTIPART_CHUNK, transfer_config, upload_context
from build_assets.aws.project_settings import project_name
from build_assets.engine.builders.base import BuildHandle, BuildRequest, BuildResult
from build_assets.engine.early_start import lead_from_builds
from build_assets.errors import BuildError, UserError

log = logging.getLogger(__name__)

RECENT_BUILDS_SCANNED = 50  # how far back start() looks for a build of the same version

# one lock per (project, version) for this process: two threads starting the same build serialise,
# and the second attaches to the first one's build
_START_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_START_LOCKS_GUARD = threading.Lock()


def script_variables(request: BuildRequest) -> dict[str, str]:
    """The build script's environment for `request` (empty values are left out at StartBuild)."""
    registry, _, _ = ecr_registry_parts(request.repository)
    return {
        "IMAGE_REPO": request.repository,
        "IMAGE_TAG": request.tag,
        "DOCKERFILE": request.dockerfile,
        "BASE_IMAGE": request.base_image or "",
        "BASE_WAIT_REF": request.base_wait or "",
        # the script's default is BASE_IMAGE: only another arg name is passed
        "BASE_ARG": (
            request.base_arg
            if (request.base_image or request.base_wait) and request.base_arg != "BASE_IMAGE"
            else ""
        ),
        "PLATFORM": request.platform or "",
        "BUILD_ARGS": "\n".join(f"{k}={v}" for k, v in sorted(request.build_args.items())),
        "CACHE_FROM": (
            f"{request.repository}:{request.previous_tag}" if request.previous_tag else ""
        ),
        "ECR_REGISTRY": registry or "",
        "IMAGE_LABELS": "\n".join(f"{k}={v}" for k, v in sorted(request.labels.items())),
        VERSION_VARIABLE: request.version,
        IMAGE_VARIABLE: request.image,
    }


class CodeBuildBuilder:
    """Builds images on AWS CodeBuild (S3 context, ECR registry). See the module docstring."""

    name = "codebuild"

    def __init__(
        self,
        bucket: str,
        env: str = "dev",
        *,
        session: boto3.Session | None = None,
        s3: Any = None,
        codebuild: Any = None,
        ecr: Any = None,
        logs: Any = None,
        secrets: Mapping[str, str] | None = None,
        poll_interval: float = 5.0,
        max_poll_interval: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        buildspec: str | None = None,
        multipart_chunk: int = MULTIPART_CHUNK,
    ) -> None:
        self.bucket = bucket
        self.env = env
        self._session = session or make_session()
        self.region = region_of(self._session)
        self.s3 = s3 or make_client("s3", self._session)
        self.codebuild = codebuild or make_client("codebuild", self._session)
        self.ecr = ecr or make_client("ecr", self._session)
        self.logs = logs or make_client("logs", self._session)
        self._secret_vars = parse_secrets(secrets)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self._buildspec = buildspec
        self._leads: dict[str, float | None] = {}  # project -> lead (engine.early_start)
        self._transfer = transfer_config(multipart_chunk)

    # -- registry ---------------------------------------------------------------------------

    def _describe_tag(self, request: BuildRequest) -> str | None:
        _, repo, registry_id = ecr_registry_parts(request.repository)
        kwargs: dict[str, Any] = {"repositoryName": repo, "imageIds": [{"imageTag": request.tag}]}
        if registry_id:
            kwargs["registryId"] = registry_id
        with aws_errors("read image tag from ECR", request.image_uri):
            try:
                details = self.ecr.describe_images(**kwargs)["imageDetails"]
            except ClientError as exc:
                if error_code(exc) == "ImageNotFoundException":
                    return None
                raise
        return details[0]["imageDigest"] if details else None

    def existing_digest(self, request: BuildRequest) -> str | None:
        """Digest of the tag in ECR, or None when it has not been pushed."""
        return self._describe_tag(request)

    # -- context ----------------------------------------------------------------------------

    def upload_context(self, request: BuildRequest) -> tuple[str, bool]:
        """Upload the context zip unless its content key exists; return (key, uploaded)."""
        return upload_context(
            self.s3, self.bucket, request.image, request.version, request.context, self._transfer
        )

    # -- start ------------------------------------------------------------------------------

    def _start_lock(self, project: str, version: str) -> threading.Lock:
        with _START_LOCKS_GUARD:
            return _START_LOCKS.setdefault((project, version), threading.Lock())

    def _recent_builds(self, project: str) -> list[dict[str, Any]]:
        with aws_errors("list CodeBuild builds", project):
            ids = self.codebuild.list_builds_for_project(
                projectName=project, sortOrder="DESCENDING"
            ).get("ids", [])[:RECENT_BUILDS_SCANNED]
            if not ids:
                return []
            return self.codebuild.batch_get_builds(ids=ids).get("builds", [])

    def start_lead(self, request: BuildRequest) -> float | None:
        """Seconds a build of this project spends before its first command (QUEUED,
        PROVISIONING, DOWNLOAD_SOURCE...), the median of its recent builds' phase durations
        (`batch_get_builds`); None when it has none. Read once per project."""
        project = project_name(request.image, self.env, request.project_template)
        if project not in self._leads:
            try:
                self._leads[project] = lead_from_builds(self._recent_builds(project))
            except UserError as exc:  # no estimate: the scheduler falls back, nothing fails
                log.warning("no start-up estimate for %s: %s", project, exc)
                self._leads[project] = None
        return self._leads[project]

    def start(self, request: BuildRequest) -> BuildHandle:
        """Upload the context, then attach to an in-flight build of this version or start one."""
        project = project_name(request.image, self.env, request.project_template)
        with self._start_lock(project, request.version):
            key, _ = self.upload_context(request)
            same = [
                b
                for b in self._recent_builds(project)
                if is_same_version(b, request.version, request.tag, key)
            ]
            running = [b for b in same if b.get("buildStatus") == "IN_PROGRESS"]
            if running:
                build = running[0]
                log.info(
                    "%s: attaching to build %s already in progress", request.image, build["id"]
                )
                return self._handle(request, build, attached=True)
            attempt = sum(1 for b in same if b.get("buildStatus") in TERMINAL_STATUSES)
            params: dict[str, Any] = {
                "projectName": project,
                "sourceTypeOverride": "S3",
                "sourceLocationOverride": f"{self.bucket}/{key}",
                "buildspecOverride": self._buildspec or render_buildspec(),
                "environmentVariablesOverride": build_environment(
                    script_variables(request), self._secret_vars
                ),
            }
            token = idempotency_token(request.image, request.version, attempt, params)
            with aws_errors("start CodeBuild build", project):
                build = self.codebuild.start_build(**params, idempotencyToken=token)["build"]
        log.info(
            "%s: started %s (%s)",
            request.image,
            build["id"],
            console_url(self.region, project, build["id"]),
        )
        return self._handle(request, build, attached=False)

    def _handle(self, request: BuildRequest, build: dict[str, Any], attached: bool) -> BuildHandle:
        start = build.get("startTime")
        return BuildHandle(
            request=request,
            build_id=build["id"],
            started_at=start.timestamp() if isinstance(start, datetime) else self._clock(),
            state={"build": build, "attached": attached, "project": build.get("projectName")},
        )

    # -- poll -------------------------------------------------------------------------------

    def poll(
        self, handles: Sequence[BuildHandle], max_wait: float | None = None
    ) -> list[BuildHandle]:
        """Wait the current backoff (at most `max_wait`: the scheduler's next early start),
        then refresh every handle with one batch_get_builds call.

        The interval grows x1.5 while nothing finishes and doubles on throttling (capped at
        `max_poll_interval`); it resets when a build finishes.
        """
        if not handles:
            return []
        self._sleep(self._interval if max_wait is None else min(self._interval, max_wait))
        ids = list(dict.fromkeys(h.build_id for h in handles))
        try:
            builds, missing = fetch_builds(self.codebuild, ids)
        except ClientError as exc:
            if not is_throttling(exc):
                raise user_error(exc, "read CodeBuild build status", ", ".join(ids)) from exc
            self._interval = min(self.max_poll_interval, self._interval * 2)
            log.warning("CodeBuild throttled status polling; next poll in %.0fs", self._interval)
            return []
        done = []
        for h in handles:
            if h.build_id in builds:
                h.state["build"] = builds[h.build_id]
            elif h.build_id in missing:
                h.state["not_found"] = True
            if h.state.get("not_found") or h.state["build"].get("buildStatus") in TERMINAL_STATUSES:
                done.append(h)
        if done:
            self._interval = self.poll_interval
        else:
            self._interval = min(self.max_poll_interval, self._interval * 1.5)
        return done

    # -- finish -----------------------------------------------------------------------------

    def log_tail(self, build: Mapping[str, Any], lines: int = LOG_TAIL_LINES) -> str:
        """Last `lines` lines of the build's CloudWatch log ('' when unavailable)."""
        return log_tail(self.logs, build, lines)

    def finish(self, handle: BuildHandle) -> BuildResult:
        """BuildResult for a SUCCEEDED build (digest read from ECR); BuildError otherwise."""
        request = handle.request
        build: dict[str, Any] = handle.state.get("build") or {}
        if not handle.state.get("not_found") and build.get("buildStatus") not in TERMINAL_STATUSES:
            with aws_errors("read CodeBuild build status", handle.build_id):
                resp = self.codebuild.batch_get_builds(ids=[handle.build_id])
            if resp.get("builds"):
                build = handle.state["build"] = resp["builds"][0]
            else:
                handle.state["not_found"] = True
        if handle.state.get("not_found"):
            raise BuildError(
                request.image,
                f"CodeBuild build {handle.build_id} no longer exists",
                status="NOT_FOUND",
                build_id=handle.build_id,
            )
        meta = build_metadata(build, self.region)
        meta["attached"] = bool(handle.state.get("attached"))
        status = build.get("buildStatus")
        links = f"console: {meta['console_url']}" + (
            f" | logs: {meta['log_deep_link']}" if meta["log_deep_link"] else ""
        )
        if status != "SUCCEEDED":
            phase, context = failed_phase(build)
            where = f" in phase {phase}" if phase else ""
            detail = f": {context}" if context else ""
            raise BuildError(
                request.image,
                f"CodeBuild build {status}{where}{detail} ({links})",
                status=str(status),
                phase=phase,
                log_tail=self.log_tail(build),
                log_url=meta["console_url"],
                build_id=handle.build_id,
            )
        digest = self._describe_tag(request)
        if not digest:
            raise BuildError(
                request.image,
                f"CodeBuild build SUCCEEDED but {request.image_uri} is not in ECR"
                f" (did the build script push it?) ({links})",
                status="SUCCEEDED",
                log_tail=self.log_tail(build),
                log_url=meta["console_url"],
                build_id=handle.build_id,
            )
        reported = meta.get("reported_digest")
        if reported and reported != digest:
            log.warning(
                "%s: build reported %s but ECR has %s for %s",
                request.image,
                reported,
                digest,
                request.tag,
            )
        return BuildResult.built(
            request,
            digest,
            self.name,
            build_id=handle.build_id,
            log_url=meta["console_url"],
            duration_s=meta["build_s"] or round(self._clock() - handle.started_at, 3),
            extra=meta,
        )

    # -- cancel -----------------------------------------------------------------------------

    def cancel(self, handle: BuildHandle) -> None:
        """Stop the build (best effort: a build that already ended is left as is)."""
        try:
            self.codebuild.stop_build(id=handle.build_id)
            log.info("%s: stopped CodeBuild build %s", handle.request.image, handle.build_id)
        except ClientError as exc:
            log.warning("could not stop CodeBuild build %s: %s", handle.build_id, exc)
