"""An image's ECR repository as `bootstrap` wants it: immutable tags, scan on push and the
lifecycle policy (`ecr_lifecycle`). An existing repository of that name is adopted: only its
settings are brought in line."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.bootstrap_actions import CREATED, status_of, tag_list
from build_assets.aws.clients import aws_errors, error_code
from build_assets.aws.ecr_lifecycle import (
    DEFAULT_KEEP,
    DEFAULT_UNTAGGED_DAYS,
    ensure_lifecycle_policy,
)


def ensure_repository(
    ecr: Any,
    name: str,
    *,
    keep: int = DEFAULT_KEEP,
    untagged_days: int = DEFAULT_UNTAGGED_DAYS,
    dry_run: bool = False,
) -> tuple[str, list[str]]:
    """Create or bring in line the repository `name`: (created | updated | unchanged, changes)."""
    with aws_errors("read ECR repository", name):
        try:
            repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if error_code(exc) != "RepositoryNotFoundException":
                raise
            repo = None
    if repo is None:
        if not dry_run:
            with aws_errors("create ECR repository", name):
                ecr.create_repository(
                    repositoryName=name,
                    imageTagMutability="IMMUTABLE",
                    imageScanningConfiguration={"scanOnPush": True},
                    tags=tag_list(),
                )
                ensure_lifecycle_policy(ecr, name, keep, untagged_days, dry_run=dry_run)
        return CREATED, []
    changes = []
    with aws_errors("update ECR repository", name):
        if repo.get("imageTagMutability") != "IMMUTABLE":
            changes.append("immutable tags")
            if not dry_run:
                ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
        if not repo.get("imageScanningConfiguration", {}).get("scanOnPush"):
            changes.append("scan on push")
            if not dry_run:
                ecr.put_image_scanning_configuration(
                    repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
                )
        changes += ensure_lifecycle_policy(ecr, name, keep, untagged_days, dry_run=dry_run)
    return status_of(changes), changes
