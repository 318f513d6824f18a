"""`build-assets bootstrap`: the AWS resources the CodeBuild builder needs, created idempotently
(`aws.bootstrap`). Light on purpose: boto3 is imported only when the command runs, not for
--help. The settings are resolved here, once, and handed down as values."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from build_assets.settings import Settings


@dataclass
class BootstrapInputs:
    """What to bootstrap: the images, their overrides, and (from a manifest) the lifecycle
    numbers and the deployer policy's functions and parameters."""

    images: list[str]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    lifecycle: tuple[int, int] | None = None  # (keep, untagged_days); None: the defaults
    functions: list[Any] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)


def inputs_of(settings: Settings, images: list[str] | None) -> BootstrapInputs:
    """`--image` names as given (defaults for the rest), else everything from the manifest."""
    if images:
        return BootstrapInputs(list(images))
    from build_assets.aws import bootstrap_inputs
    from build_assets.core.manifest import load_manifest

    model = load_manifest(settings.manifest, settings.repo)
    names, overrides = bootstrap_inputs.images_from_manifest(model)
    functions, parameters = bootstrap_inputs.manifest_deploys(model, settings.env)
    return BootstrapInputs(
        names,
        overrides,
        bootstrap_inputs.manifest_lifecycle(model),
        functions,
        parameters,
    )


def _run(args: argparse.Namespace) -> int:
    from build_assets.aws.bootstrap import bootstrap
    from build_assets.aws.bootstrap_actions import summary
    from build_assets.aws.clients import make_session
    from build_assets.aws.context_bucket import DEFAULT_EXPIRY_DAYS
    from build_assets.aws.ecr_lifecycle import DEFAULT_KEEP, DEFAULT_UNTAGGED_DAYS
    from build_assets.settings import Settings

    settings = Settings.resolve(
        env=getattr(args, "env", None),
        bucket=args.bucket,
        repo=getattr(args, "repo", None),
        manifest=getattr(args, "manifest", None),
    )
    inputs = inputs_of(settings, args.images)
    keep, days = inputs.lifecycle or (DEFAULT_KEEP, DEFAULT_UNTAGGED_DAYS)
    actions = bootstrap(
        inputs.images,
        inputs.overrides,
        bucket=settings.bucket,
        env=settings.env,
        dry_run=args.dry_run,
        session=make_session(region=args.region),
        context_expiry_days=(DEFAULT_EXPIRY_DAYS if args.expire_days is None else args.expire_days),
        secret_refs=args.secret or (),
        keep_versions=keep,
        untagged_days=days,
        functions=inputs.functions,
        parameters=inputs.parameters,
    )
    for action in actions:
        print(action)
    print(summary(actions, args.dry_run))
    return 0


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
