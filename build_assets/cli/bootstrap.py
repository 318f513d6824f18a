"""`build-assets bootstrap`'s arguments: the AWS resources the CodeBuild builder needs, created
idempotently. Light on purpose: boto3 is imported only when the command runs, not for --help."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from build_assets.aws import bootstrap

    if args.expire_days is None:
        args.expire_days = bootstrap.DEFAULT_EXPIRY_DAYS
    return bootstrap._run_cli(args)


def add_cli(subparsers: Any) -> None:
    """Register `build-assets bootstrap`."""
    p = subparsers.add_parser(
        "bootstrap",
        help="create/update the AWS resources for CodeBuild builds (idempotent)",
        description="The AWS resources the CodeBuild builder needs, created idempotently.",
    )
    # SUPPRESS: never overwrite the same options parsed by a parent parser
    p.add_argument("--env", default=argparse.SUPPRESS, help="environment name (default: dev)")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    p.add_argument("--repo", default=argparse.SUPPRESS, help="monorepo folder")
    p.add_argument("--manifest", default=argparse.SUPPRESS, help="manifest (images.yaml)")
    p.add_argument(
        "--image", dest="images", action="append", help="image name instead of the manifest"
    )
    p.add_argument("--bucket", help="context bucket (default: $BUILD_ASSETS_BUCKET or derived)")
    p.add_argument("--region", help="AWS region (default: AWS_REGION)")
    p.add_argument("--expire-days", type=int, help="context zip expiry in days (default: 30)")
    p.add_argument(
        "--secret",
        action="append",
        metavar="REF",
        help="ssm:/param or secretsmanager:arn the builds may read (repeatable)",
    )
    p.set_defaults(func=_run)
