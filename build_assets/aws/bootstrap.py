"""`build-assets bootstrap`: the AWS resources the CodeBuild builder needs, created idempotently.

Per environment: one S3 bucket for build contexts (`context_bucket`), and per image: an ECR
repository (`ecr_repository`, `ecr_lifecycle`) and a CodeBuild project `<image>-<env>-img-builder`
(`codebuild_projects`, `project_settings`) running as one IAM service role whose inline policy
allows only these resources (`service_role`); with functions in the manifest, the deploying
host's managed policy (`deploy_policy`). Every resource is read first and only written when it
differs, so a second run reports everything `unchanged` (`bootstrap_actions`); `dry_run` only
reads. The command line is `cli.bootstrap`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import boto3

from build_assets.aws import codebuild_projects, service_role
from build_assets.aws.bootstrap_actions import Action
from build_assets.aws.clients import (
    account_id,
    aws_errors,
    bucket_name,
    make_client,
    make_session,
    partition_of,
    region_of,
)
from build_assets.aws.context_bucket import DEFAULT_EXPIRY_DAYS, ContextBucket
from build_assets.aws.ecr_lifecycle import DEFAULT_KEEP, DEFAULT_UNTAGGED_DAYS
from build_assets.aws.ecr_repository import ensure_repository
from build_assets.aws.project_settings import project_name, project_settings
from build_assets.core.model import DEFAULT_REPOSITORY_NAME, resource_name

log = logging.getLogger(__name__)


class Bootstrapper:
    """Reads and (unless dry_run) creates/updates the resources; `run` returns the actions."""

    def __init__(
        self,
        *,
        bucket: str,
        env: str = "dev",
        session: boto3.Session | None = None,
        s3: Any = None,
        ecr: Any = None,
        iam: Any = None,
        codebuild: Any = None,
        account: str | None = None,
        context_expiry_days: int = DEFAULT_EXPIRY_DAYS,
        secret_refs: Sequence[str] = (),
        dry_run: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        keep_versions: int = DEFAULT_KEEP,
        untagged_days: int = DEFAULT_UNTAGGED_DAYS,
        functions: Sequence[Any] = (),
        parameters: Sequence[str] = (),
    ) -> None:
        self.keep_versions, self.untagged_days = keep_versions, untagged_days
        self.functions, self.parameters = tuple(functions), tuple(parameters)  # deployer policy
        self.session = session or make_session()
        self.region = region_of(self.session)
        self.partition = partition_of(self.session)
        self.account = account or account_id(self.session)
        self.bucket, self.env, self.dry_run = bucket, env, dry_run
        self.expiry_days = context_expiry_days
        self.secret_refs = tuple(secret_refs)
        self.s3 = s3 or make_client("s3", self.session)
        self.ecr = ecr or make_client("ecr", self.session)
        self.iam = iam or make_client("iam", self.session)
        self.codebuild = codebuild or make_client("codebuild", self.session)
        self._sleep = sleep
        self._settings: dict[str, dict[str, Any]] = {}

    def project_of(self, image: str) -> str:
        """The CodeBuild project name of an image (the manifest's template, else default)."""
        template = self._settings.get(image, {}).get("project_name")
        return project_name(image, self.env, template)

    def repository_of(self, image: str) -> str:
        """The ECR repository name of an image (the manifest's template, else the image)."""
        template = self._settings.get(image, {}).get("repository_name")
        return resource_name(template or DEFAULT_REPOSITORY_NAME, image, self.env)

    @property
    def role_name(self) -> str:
        return service_role.role_name(self.env)

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role_name}"

    def _action(self, kind: str, name: str, status: str, changes: Sequence[str] = ()) -> Action:
        action = Action(kind, name, status, tuple(changes), self.dry_run)
        log.info("%s", action)
        return action

    def run(
        self, images: Sequence[str], overrides: Mapping[str, Mapping[str, Any]] | None = None
    ) -> list[Action]:
        """Bucket, repositories, role, projects, in that order (the role needs their names)."""
        images = list(dict.fromkeys(images))
        settings = project_settings(images, overrides or {})
        self._settings = settings
        actions = [self.ensure_bucket()]
        actions += [self.ensure_repository(image) for image in images]
        actions.append(self.ensure_role(images))
        actions += self.ensure_projects(images, settings)
        if self.functions or self.parameters:
            actions.append(self.ensure_deployer_policy())
        return actions

    def ensure_bucket(self) -> Action:
        """Bucket with default encryption, public access blocked and context expiry."""
        bucket = ContextBucket(self.s3, self.bucket, self.region, self.expiry_days, self.dry_run)
        return self._action("s3-bucket", self.bucket, *bucket.ensure())

    def ensure_repository(self, image: str) -> Action:
        """ECR repository of `image` with immutable tags, scan on push, the lifecycle policy."""
        name = self.repository_of(image)
        status, changes = ensure_repository(
            self.ecr,
            name,
            keep=self.keep_versions,
            untagged_days=self.untagged_days,
            dry_run=self.dry_run,
        )
        return self._action("ecr-repository", name, status, changes)

    def ensure_role(self, images: Sequence[str]) -> Action:
        """Service role for the projects, with an inline policy scoped to `images`."""
        scope = service_role.Scope(
            partition=self.partition,
            region=self.region,
            account=self.account,
            bucket=self.bucket,
            projects=[self.project_of(i) for i in images],
            repositories=[self.repository_of(i) for i in images],
            secret_refs=self.secret_refs,
        )
        trust, policy = service_role.trust_policy(self.account), service_role.role_policy(scope)
        name = self.role_name
        status, changes = service_role.ensure_role(
            self.iam, name, self.env, trust, policy, dry_run=self.dry_run
        )
        return self._action("iam-role", name, status, changes)

    def ensure_projects(
        self, images: Sequence[str], settings: Mapping[str, Mapping[str, Any]]
    ) -> list[Action]:
        """One CodeBuild project per image, updated only where it differs."""
        definitions = [
            codebuild_projects.project_definition(
                image,
                self.project_of(image),
                settings[image],
                env=self.env,
                bucket=self.bucket,
                role_arn=self.role_arn,
            )
            for image in images
        ]
        projects = codebuild_projects.Projects(
            self.codebuild, self.role_name, self.dry_run, self._sleep
        )
        return [
            self._action("codebuild-project", name, status, changes)
            for name, status, changes in projects.ensure(definitions)
        ]

    def ensure_deployer_policy(self) -> Action:
        """The managed policy of the deploying host (`aws.deploy_policy`)."""
        from build_assets.aws import deploy_policy as dp

        name = dp.policy_name(self.env)
        arn = f"arn:{self.partition}:iam::{self.account}:policy/{name}"
        repositories = {f.image: self.repository_of(f.image) for f in self.functions}
        document = dp.deployer_policy(
            self.partition,
            self.region,
            self.account,
            self.functions,
            self.parameters,
            repositories,
        )
        with aws_errors("update IAM policy", name):
            status, changes = dp.ensure_policy(self.iam, arn, name, document, dry_run=self.dry_run)
        return self._action("iam-policy", name, status, changes)


def bootstrap(
    images: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    bucket: str | None = None,
    env: str = "dev",
    dry_run: bool = False,
    session: boto3.Session | None = None,
    context_expiry_days: int = DEFAULT_EXPIRY_DAYS,
    secret_refs: Sequence[str] = (),
    sleep: Callable[[float], None] = time.sleep,
    keep_versions: int = DEFAULT_KEEP,
    untagged_days: int = DEFAULT_UNTAGGED_DAYS,
    functions: Sequence[Any] = (),
    parameters: Sequence[str] = (),
    **clients: Any,
) -> list[Action]:
    """Create/update everything the CodeBuild builder needs; return one Action per resource.

    `clients` may inject s3=, ecr=, iam=, codebuild= (tests); `bucket` is the `bucket` setting
    (`Settings.bucket`), else `build-assets-<account>-<region>-<env>`.
    """
    session = session or make_session()
    return Bootstrapper(
        bucket=bucket_name(session, env, bucket),
        env=env,
        session=session,
        context_expiry_days=context_expiry_days,
        secret_refs=secret_refs,
        dry_run=dry_run,
        sleep=sleep,
        keep_versions=keep_versions,
        untagged_days=untagged_days,
        functions=functions,
        parameters=parameters,
        **clients,
    ).run(images, overrides)
