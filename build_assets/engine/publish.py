"""Publish each built image for infrastructure code: its digest-pinned URI in SSM Parameter
Store at the manifest's `publish.ssm` name (default `/build-assets/<env>/<image>/image-uri`),
the tag, version and git commit in the parameter's description.

Idempotent: a parameter that already holds the URI is not written again (so only
`ssm:GetParameter` and `ssm:PutParameter` on these parameters are needed).
Published wherever AWS is in use: the CodeBuild backend, an ECR registry, or an AWS endpoint
(the local stack's moto); a local build to a local registry with no AWS endpoint publishes
nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.clients import aws_errors, error_code
from build_assets.core.functions import ssm_name, ssm_template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """One image's parameter after publishing."""

    name: str
    value: str
    description: str
    changed: bool


def description_of(tag: str, version: str, commit: str | None) -> str:
    """'tag=git-… version=… commit=…' (the commit: 'worktree' when not at a commit)."""
    return f"build-assets tag={tag} version={version} commit={commit or 'worktree'}"


def parse_description(text: str) -> dict[str, str]:
    """The fields of `description_of` back ({} for a description it did not write)."""
    if not text.startswith("build-assets "):
        return {}
    return dict(p.split("=", 1) for p in text.split()[1:] if "=" in p)


def publish_image(ssm: Any, name: str, uri: str, description: str) -> Published:
    """Write `uri` to parameter `name` (with `description`) unless it already holds both."""
    with aws_errors("read SSM parameter", name):
        try:
            current = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise
            current = None
    if current == uri:
        return Published(name, uri, description, False)
    with aws_errors("write SSM parameter", name):
        ssm.put_parameter(
            Name=name,
            Value=uri,
            Description=description,
            Type="String",
            Overwrite=True,
        )
    log.info("published %s = %s", name, uri)
    return Published(name, uri, description, True)


class ImagePublisher:
    """Publishes the images of one project (made at the first publish; one SSM client)."""

    def __init__(self, manifest: Any, env: str, *, enabled: bool) -> None:
        self.template = ssm_template(manifest) if enabled else None
        self.env = env
        self._ssm: Any = None

    @classmethod
    def for_project(cls, project: Any, manifest: Any) -> ImagePublisher:
        from build_assets.engine.registry import is_ecr, parse_repository

        s = project.settings
        ecr = is_ecr(parse_repository(f"{project.registry}/x").host)
        aws = s.backend == "codebuild" or ecr or bool(s.aws_endpoint_url)
        return cls(manifest, s.env, enabled=aws)

    def name_of(self, image: str) -> str | None:
        return ssm_name(self.template, self.env, image) if self.template else None

    def publish(self, image: str, uri: str, tag: str, version: str, commit: str | None):
        """Publish one image (None when publishing is off)."""
        name = self.name_of(image)
        if name is None:
            return None
        if self._ssm is None:
            from build_assets.aws.clients import make_client

            self._ssm = make_client("ssm")
        return publish_image(self._ssm, name, uri, description_of(tag, version, commit))


def current_value(ssm: Any, name: str) -> str | None:
    """The parameter's value (None: there is none)."""
    with aws_errors("read SSM parameter", name):
        try:
            return ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise
            return None


def status_fields(project: Any, versions: Any, rows: list[dict]) -> None:
    """Add to `status`'s image rows the SSM parameter and whether it holds the built image
    (`published`: True / False; None with `ssm_error` when SSM cannot be read)."""
    from concurrent.futures import ThreadPoolExecutor

    from build_assets.errors import UserError

    publisher = ImagePublisher.for_project(project, versions.manifest)
    names = {r["name"]: publisher.name_of(r["name"]) for r in rows}
    if not any(names.values()):
        return
    from build_assets.aws.clients import make_client

    ssm = make_client("ssm")

    def read(name: str | None) -> tuple[str | None, str | None]:
        if name is None:
            return None, None
        try:
            return current_value(ssm, name), None
        except UserError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
        found = list(pool.map(read, [names[r["name"]] for r in rows]))
    for row, (value, error) in zip(rows, found, strict=True):
        row["ssm_parameter"] = names[row["name"]]
        built = f"{project.repository(row['name'])}@{row['digest']}" if row["digest"] else None
        row["published"] = None if error else (built is not None and value == built)
        if error:
            row["ssm_error"] = error
