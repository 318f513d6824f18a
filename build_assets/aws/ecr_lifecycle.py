"""The lifecycle policy `bootstrap` puts on each ECR repository: untagged images expire after
D days, and only the newest N of each tag family are kept.

Images a Lambda function still runs are not something a policy can see: `build-assets gc` is
the clean-up that checks them (keep N comfortably above deploy lag).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.clients import error_code

DEFAULT_KEEP = 10  # newest `git-` versions kept per repository (manifest: lifecycle.keep)
DEFAULT_UNTAGGED_DAYS = 7  # untagged images expire after (manifest: lifecycle.untagged_days)
# tag prefixes counted per repository: images, their provenance artifacts, buildx caches
KEPT_PREFIXES = ("git-", "provenance-", "buildcache-git-")


def lifecycle_policy(
    keep: int = DEFAULT_KEEP, untagged_days: int = DEFAULT_UNTAGGED_DAYS
) -> dict[str, Any]:
    """Expire untagged images after `untagged_days`; keep the newest `keep` of each prefix."""
    rules: list[dict[str, Any]] = [
        {
            "rulePriority": 1,
            "description": f"build-assets: expire untagged after {untagged_days} days",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": untagged_days,
            },
            "action": {"type": "expire"},
        }
    ]
    for priority, prefix in enumerate(KEPT_PREFIXES, start=2):
        rules.append(
            {
                "rulePriority": priority,
                "description": f"build-assets: keep the newest {keep} {prefix}",
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": [prefix],
                    "countType": "imageCountMoreThan",
                    "countNumber": keep,
                },
                "action": {"type": "expire"},
            }
        )
    return {"rules": rules}


def ensure_lifecycle_policy(
    ecr: Any, repository: str, keep: int, untagged_days: int, *, dry_run: bool
) -> list[str]:
    """Write the policy when it differs (a new repository: always); return what changed."""
    desired = lifecycle_policy(keep, untagged_days)
    try:
        text = ecr.get_lifecycle_policy(repositoryName=repository)["lifecyclePolicyText"]
        current = json.loads(text)
    except ClientError as exc:
        if error_code(exc) not in ("LifecyclePolicyNotFoundException",):
            raise
        current = None
    if current == desired:
        return []
    if not dry_run:
        ecr.put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText=json.dumps(desired))
    return [f"lifecycle policy (keep {keep}, untagged {untagged_days}d)"]
