"""Stand-in, until the stack's registry and moto's ECR agree (issue 19 item 2): a CodeBuild
builder whose ECR look-ups copy a tag the stack's registry has into moto's ECR first.

On AWS a build pushes to ECR and `describe_images` sees the push. On the local stack the build
pushes to the stack's registry (`BUILD_ASSETS_REGISTRY`), which moto's ECR knows nothing of, so
`CodeBuildBuilder.finish` would report "SUCCEEDED but not in ECR". This builder answers a missing
ECR tag by reading the tag's manifest from the registry and `put_image`-ing the same bytes
(same digest, same media type) into the ECR repository `bootstrap` made. Once the registry
mirrors pushes itself, the tag is already in ECR and this does nothing: delete it then. Used
only by `build-assets demo --backend codebuild` and the tests of the local CodeBuild.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.clients import ecr_registry_parts, error_code
from build_assets.aws.codebuild import CodeBuildBuilder
from build_assets.engine import registry
from build_assets.engine.builders.base import BuildRequest

log = logging.getLogger(__name__)


def copy_tag_to_ecr(ecr: Any, repository: str, tag: str) -> str | None:
    """Put `repository:tag` of the registry into moto's ECR; its digest (None: not pushed)."""
    ref = registry.parse_repository(repository)
    url = f"{ref.base_url}/manifests/{tag}"
    status, headers, body = registry._request("GET", url, accept=registry.ACCEPT)
    if status == 404:
        return None
    registry._check(status, url)
    lower = {k.lower(): v for k, v in headers.items()}
    media = lower.get("content-type")
    # the registry's digest: moto would otherwise make one up from the layer digests
    digest = lower.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    _, name, _ = ecr_registry_parts(repository)
    kwargs: dict[str, Any] = {
        "repositoryName": name,
        "imageManifest": body.decode(),
        "imageTag": tag,
        "imageDigest": digest,
    }
    if media:
        kwargs["imageManifestMediaType"] = media
    try:
        return ecr.put_image(**kwargs)["image"]["imageId"]["imageDigest"]
    except ClientError as exc:
        if error_code(exc) not in ("ImageAlreadyExistsException", "ImageTagAlreadyExistsException"):
            raise
        return None


class RegistryBackedCodeBuildBuilder(CodeBuildBuilder):
    """`CodeBuildBuilder` whose ECR answers include what the stack's registry holds."""

    def _describe_tag(self, request: BuildRequest) -> str | None:
        digest = super()._describe_tag(request)
        if digest is None and copy_tag_to_ecr(self.ecr, request.repository, request.tag):
            log.info("%s: copied %s into moto's ECR (stand-in)", request.image, request.tag)
            digest = super()._describe_tag(request)
        return digest
