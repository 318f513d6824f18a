"""Tags of an ECR repository through the ECR API, in batches.

`plan` and the provenance look-ups ask ECR with `batch_get_image` (at most 100 image ids per
call, ECR's limit): an image's current tag and its `last-build` pointer come back in one call,
digest and manifest together, where the registry's HTTP API needs a HEAD and a GET each.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.clients import aws_errors, ecr_registry_parts, error_code, make_client
from build_assets.core.mediatypes import MANIFEST_TYPES
from build_assets.errors import UserError

MAX_IDS = 100  # batch_get_image / describe_images / batch_delete_image accept at most 100 ids
_ABSENT = frozenset({"ImageNotFound", "ImageTagDoesNotMatchDigest"})


@dataclass(frozen=True)
class TaggedImage:
    """What one tag of an ECR repository points at."""

    digest: str
    manifest: dict[str, Any]


@functools.lru_cache(maxsize=8)
def _client(region: str):
    return make_client("ecr", region_name=region)


def batches(items: list[Any], size: int = MAX_IDS) -> Iterable[list[Any]]:
    """`items` in consecutive lists of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def tagged_images(repository: str, tags: Iterable[str]) -> dict[str, TaggedImage]:
    """Tag -> its image, for the `tags` present in ECR `repository` ('host/name'); absent tags
    and a missing repository are left out. One `batch_get_image` call per 100 tags."""
    host, name, registry_id = ecr_registry_parts(repository)
    if host is None:
        raise UserError(f"not an ECR repository: {repository}")
    ecr = _client(host.split(".")[3])
    found: dict[str, TaggedImage] = {}
    for chunk in batches(sorted(set(tags))):
        with aws_errors("read image tags from ECR", repository):
            try:
                resp = ecr.batch_get_image(
                    registryId=registry_id,
                    repositoryName=name,
                    imageIds=[{"imageTag": t} for t in chunk],
                    acceptedMediaTypes=list(MANIFEST_TYPES),
                )
            except ClientError as exc:
                if error_code(exc) == "RepositoryNotFoundException":
                    return {}
                raise
        for image in resp.get("images", []):
            ident = image["imageId"]
            manifest = json.loads(image.get("imageManifest") or "{}")
            found[ident["imageTag"]] = TaggedImage(ident["imageDigest"], manifest)
        refused = [f for f in resp.get("failures", []) if f.get("failureCode") not in _ABSENT]
        if refused:
            first = refused[0]
            tag = first.get("imageId", {}).get("imageTag", "?")
            raise UserError(
                f"ECR refused {repository}:{tag}: {first.get('failureCode')}"
                f" ({first.get('failureReason', '')})"
            )
    return found
