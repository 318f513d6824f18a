"""One CodeBuild project per image, `<image>-<env>-img-builder` by default: privileged (Docker),
logging to `/aws/codebuild/<project>`, running as the service role. Its source and buildspec are
placeholders: build-assets sets both on every build it starts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.bootstrap_actions import CREATED, differs, status_of, tag_list
from build_assets.aws.clients import aws_errors, error_code, user_error
from build_assets.aws.project_settings import ENVIRONMENT_TYPES

log = logging.getLogger(__name__)

# a project that is started without build-assets' per-build buildspec fails loudly
PLACEHOLDER_BUILDSPEC = (
    "version: 0.2\nphases:\n  build:\n    commands:\n"
    "      - echo 'Started by build-assets only (buildspec and source are set per build)'"
    " && exit 1\n"
)
_IAM_PROPAGATION = ("not authorized to perform: sts:AssumeRole", "service role")
_BATCH = 100  # batch_get_projects accepts at most 100 names


def project_definition(
    image: str, project: str, settings: Mapping[str, Any], *, env: str, bucket: str, role_arn: str
) -> dict[str, Any]:
    """create_project/update_project arguments for one image."""
    environment: dict[str, Any] = {
        "type": ENVIRONMENT_TYPES[settings.get("platform") or "linux/amd64"],
        "image": settings["image"],
        "computeType": settings["compute_type"],
        "privilegedMode": True,
        "imagePullCredentialsType": "CODEBUILD",
    }
    if settings.get("fleet"):
        environment["fleet"] = {"fleetArn": settings["fleet"]}
    if settings.get("docker_server"):
        environment["dockerServer"] = {"computeType": settings["docker_server"]}
    return {
        "name": project,
        "description": f"build-assets: builds the {image} image ({env})",
        "source": {
            "type": "S3",
            "location": f"{bucket}/contexts/{image}/",
            "buildspec": PLACEHOLDER_BUILDSPEC,
        },
        "artifacts": {"type": "NO_ARTIFACTS"},
        "environment": environment,
        "serviceRole": role_arn,
        "timeoutInMinutes": settings["timeout_minutes"],
        "logsConfig": {
            "cloudWatchLogs": {"status": "ENABLED", "groupName": f"/aws/codebuild/{project}"}
        },
    }


@dataclass(frozen=True)
class Projects:
    """Reads the projects in batches and (unless `dry_run`) creates or updates them."""

    codebuild: Any
    role_name: str  # named while waiting for a just-created role to propagate
    dry_run: bool = False
    sleep: Callable[[float], None] = time.sleep

    def ensure(self, definitions: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
        """(project, status, changes) per definition, updated only where it differs."""
        existing = self._existing([d["name"] for d in definitions])
        out = []
        for desired in definitions:
            name, current = desired["name"], existing.get(desired["name"])
            if current is None:
                if not self.dry_run:
                    self._create(desired)
                out.append((name, CREATED, []))
                continue
            changes = [k for k, v in desired.items() if k != "name" and differs(v, current.get(k))]
            if changes and not self.dry_run:
                with aws_errors("update CodeBuild project", name):
                    self.codebuild.update_project(**desired)
            out.append((name, status_of(changes), changes))
        return out

    def _existing(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        existing: dict[str, dict[str, Any]] = {}
        with aws_errors("read CodeBuild projects", ", ".join(names)):
            for i in range(0, len(names), _BATCH):
                resp = self.codebuild.batch_get_projects(names=list(names[i : i + _BATCH]))
                existing.update({p["name"]: p for p in resp.get("projects", [])})
        return existing

    def _create(self, desired: dict[str, Any], attempts: int = 8) -> None:
        """create_project, retrying while a just-created role is not yet assumable."""
        tags = tag_list("key", "value")
        name = desired["name"]
        with aws_errors("create CodeBuild project", name):
            for attempt in range(attempts):
                try:
                    self.codebuild.create_project(**desired, tags=tags)
                    return
                except ClientError as exc:
                    retry = error_code(exc) == "InvalidInputException" and any(
                        s in str(exc) for s in _IAM_PROPAGATION
                    )
                    if not retry or attempt == attempts - 1:
                        raise user_error(exc, "create CodeBuild project", name) from exc
                log.info("waiting for IAM role %s to propagate", self.role_name)
                self.sleep(2.0 * (attempt + 1))
