"""An image's CodeBuild project: its name and its settings (defaults, and the manifest's
`codebuild:` overrides, the platform and the naming templates, validated)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from build_assets.core.model import DEFAULT_PROJECT_NAME, resource_name
from build_assets.errors import UserError

DEFAULT_IMAGE = "aws/codebuild/standard:7.0"
DEFAULT_ARM_IMAGE = "aws/codebuild/amazonlinux2-aarch64-standard:3.0"
ENVIRONMENT_TYPES = {"linux/amd64": "LINUX_CONTAINER", "linux/arm64": "ARM_CONTAINER"}
DEFAULT_COMPUTE = "BUILD_GENERAL1_SMALL"
DEFAULT_TIMEOUT = 60
# per image: CodeBuild settings, the platform, and name templates ({image}, {env})
# fleet: a reserved-capacity fleet's ARN (no provisioning); docker_server: the compute type of
# CodeBuild's Docker server capability (a persistent Docker engine and layer cache per project)
OVERRIDE_KEYS = frozenset(
    {
        "compute_type",
        "timeout_minutes",
        "image",
        "platform",
        "project_name",
        "repository_name",
        "fleet",
        "docker_server",
    }
)
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def project_name(image: str, env: str, template: str | None = None) -> str:
    """CodeBuild project of an image (created by `build-assets bootstrap`): the manifest's
    naming template (`{image}`, `{env}`) or `<image>-<env>-img-builder`."""
    return resource_name(template or DEFAULT_PROJECT_NAME, image, env)


def project_settings(
    images: Sequence[str], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Validated per-image CodeBuild settings (defaults + overrides)."""
    bad = [i for i in images if not _IMAGE_NAME.match(i)]
    if bad:
        raise UserError(
            "image names must be lowercase letters, digits and . _ - (ECR and CodeBuild names):"
            f" {', '.join(bad)}"
        )
    unknown = sorted(set(overrides) - set(images))
    if unknown:
        raise UserError(f"CodeBuild overrides for unknown images: {', '.join(unknown)}")
    return {image: _image_settings(image, overrides.get(image) or {}) for image in images}


def _image_settings(image: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """One image's settings: its overrides checked, the defaults filled in."""
    given = {k: v for k, v in overrides.items() if v is not None}
    extra = sorted(set(given) - OVERRIDE_KEYS)
    if extra:
        raise UserError(
            f"{image}: unknown CodeBuild settings {', '.join(extra)}"
            f" (allowed: {', '.join(sorted(OVERRIDE_KEYS))})"
        )
    platform = given.get("platform")
    if platform is not None and platform not in ENVIRONMENT_TYPES:
        raise UserError(f"{image}: platform '{platform}' (allowed: {', '.join(ENVIRONMENT_TYPES)})")
    arm = platform == "linux/arm64"
    fleet = given.get("fleet")
    if fleet is not None and not str(fleet).startswith("arn:"):
        raise UserError(f"{image}: codebuild fleet must be a fleet ARN, got '{fleet}'")
    return {
        "compute_type": given.get("compute_type", DEFAULT_COMPUTE),
        "timeout_minutes": int(given.get("timeout_minutes", DEFAULT_TIMEOUT)),
        "image": given.get("image", DEFAULT_ARM_IMAGE if arm else DEFAULT_IMAGE),
        "platform": platform,
        "project_name": given.get("project_name"),
        "repository_name": given.get("repository_name"),
        "fleet": fleet,
        "docker_server": given.get("docker_server"),
    }
