"""`build-assets bootstrap`: the AWS resources the CodeBuild builder needs, created idempotently.

Per environment: one S3 bucket for build contexts (SSE, public access blocked, `contexts/`
expiring after N days), and per image: an ECR repository (immutable tags, scan on push) and a
CodeBuild project `<image>-<env>-img-builder` running as one IAM service role whose inline policy
allows only these resources. Every resource is read first and only written when it differs, so
a second run reports everything `unchanged`; `dry_run` only reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from build_assets.aws.clients import (
    account_id,
    aws_errors,
    bucket_name,
    error_code,
    make_client,
    make_session,
    partition_of,
    region_of,
    user_error,
)
from build_assets.aws.codebuild import project_name
from build_assets.cli.bootstrap import add_cli  # noqa: F401 - re-exported (light CLI module)
from build_assets.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "aws/codebuild/standard:7.0"
DEFAULT_ARM_IMAGE = "aws/codebuild/amazonlinux2-aarch64-standard:3.0"
ENVIRONMENT_TYPES = {"linux/amd64": "LINUX_CONTAINER", "linux/arm64": "ARM_CONTAINER"}
DEFAULT_COMPUTE = "BUILD_GENERAL1_SMALL"
DEFAULT_TIMEOUT = 60
DEFAULT_EXPIRY_DAYS = 30
LIFECYCLE_RULE_ID = "build-assets-expire-contexts"
DEFAULT_KEEP = 10  # newest `git-` versions kept per repository (manifest: lifecycle.keep)
DEFAULT_UNTAGGED_DAYS = 7  # untagged images expire after (manifest: lifecycle.untagged_days)
# tag prefixes counted per repository: images, their provenance artifacts, buildx caches
KEPT_PREFIXES = ("git-", "provenance-", "buildcache-git-")
POLICY_NAME = "build-assets-codebuild"
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
TAGS = {"managed-by": "build-assets"}
# a project that is started without build-assets' per-build buildspec fails loudly
PLACEHOLDER_BUILDSPEC = (
    "version: 0.2\nphases:\n  build:\n    commands:\n"
    "      - echo 'Started by build-assets only (buildspec and source are set per build)'"
    " && exit 1\n"
)
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_IAM_PROPAGATION = ("not authorized to perform: sts:AssumeRole", "service role")

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
_PLANNED = {CREATED: "would create", UPDATED: "would update", UNCHANGED: "unchanged"}


@dataclass(frozen=True)
class Action:
    """What bootstrap did (or, in a dry run, would do) to one resource."""

    kind: str  # "s3-bucket" | "ecr-repository" | "iam-role" | "codebuild-project"
    name: str
    status: str  # created | updated | unchanged
    changes: tuple[str, ...] = ()
    dry_run: bool = False

    def __str__(self) -> str:
        verb = _PLANNED[self.status] if self.dry_run else self.status
        detail = f" ({', '.join(self.changes)})" if self.changes else ""
        return f"{verb:<12} {self.kind:<18} {self.name}{detail}"


def _differs(desired: Any, actual: Any) -> bool:
    """True when `actual` does not contain `desired` (dicts compared on desired's keys only)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(_differs(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(_differs(d, a) for d, a in zip(desired, actual, strict=True))
    return desired != actual


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
        return template.format(image=image, env=self.env) if template else image

    @property
    def role_name(self) -> str:
        return f"build-assets-{self.env}-codebuild"

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

    # -- S3 ---------------------------------------------------------------------------------

    def lifecycle_rule(self) -> dict[str, Any]:
        return {
            "ID": LIFECYCLE_RULE_ID,
            "Filter": {"Prefix": "contexts/"},
            "Status": "Enabled",
            "Expiration": {"Days": self.expiry_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }

    def ensure_bucket(self) -> Action:
        """Bucket with default encryption, public access blocked and context expiry."""
        where = f"s3://{self.bucket}"
        with aws_errors("read S3 bucket", where):
            try:
                self.s3.head_bucket(Bucket=self.bucket)
                exists = True
            except ClientError as exc:
                if error_code(exc) in ("403", "AccessDenied"):
                    raise UserError(
                        f"S3 bucket {self.bucket} exists but is not accessible (owned by another"
                        " account? bucket names are global: choose another with --bucket)"
                    ) from exc
                if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                exists = False
        if not exists:
            if not self.dry_run:
                with aws_errors("create S3 bucket", where):
                    kwargs: dict[str, Any] = {"Bucket": self.bucket}
                    if self.region != "us-east-1":
                        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                    self.s3.create_bucket(**kwargs)
                    self._put_encryption()
                    self._put_public_access_block()
                    self._put_lifecycle([])
                    self.s3.put_bucket_tagging(
                        Bucket=self.bucket,
                        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in TAGS.items()]},
                    )
            return self._action("s3-bucket", self.bucket, CREATED)

        changes: list[str] = []
        with aws_errors("read S3 bucket settings", where):
            if not self._has_encryption():
                changes.append("encryption")
                if not self.dry_run:
                    self._put_encryption()
            if not self._blocks_public_access():
                changes.append("public access block")
                if not self.dry_run:
                    self._put_public_access_block()
            rules = self._lifecycle_rules()
            ours = next((r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID), None)
            if ours is None or _differs(self.lifecycle_rule(), ours):
                changes.append(f"lifecycle: expire contexts/ after {self.expiry_days} days")
                if not self.dry_run:
                    self._put_lifecycle([r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID])
        return self._action("s3-bucket", self.bucket, UPDATED if changes else UNCHANGED, changes)

    def _has_encryption(self) -> bool:
        try:
            conf = self.s3.get_bucket_encryption(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
                return False
            raise
        rules = conf.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        return any(
            r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
        )

    def _put_encryption(self) -> None:
        self.s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )

    _PAB = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }

    def _blocks_public_access(self) -> bool:
        try:
            conf = self.s3.get_public_access_block(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
                return False
            raise
        return not _differs(self._PAB, conf.get("PublicAccessBlockConfiguration", {}))

    def _put_public_access_block(self) -> None:
        self.s3.put_public_access_block(
            Bucket=self.bucket, PublicAccessBlockConfiguration=dict(self._PAB)
        )

    def _lifecycle_rules(self) -> list[dict[str, Any]]:
        try:
            return self.s3.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError as exc:
            if error_code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise

    def _put_lifecycle(self, other_rules: list[dict[str, Any]]) -> None:
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": [*other_rules, self.lifecycle_rule()]},
        )

    # -- ECR --------------------------------------------------------------------------------

    def ensure_repository(self, image: str) -> Action:
        """ECR repository of `image` with immutable tags and scan on push (an existing one of
        that name is adopted: only its settings are brought in line)."""
        image = self.repository_of(image)
        with aws_errors("read ECR repository", image):
            try:
                repo = self.ecr.describe_repositories(repositoryNames=[image])["repositories"][0]
            except ClientError as exc:
                if error_code(exc) != "RepositoryNotFoundException":
                    raise
                repo = None
        if repo is None:
            if not self.dry_run:
                with aws_errors("create ECR repository", image):
                    self.ecr.create_repository(
                        repositoryName=image,
                        imageTagMutability="IMMUTABLE",
                        imageScanningConfiguration={"scanOnPush": True},
                        tags=[{"Key": k, "Value": v} for k, v in TAGS.items()],
                    )
                    self._ensure_lifecycle_policy(image)
            return self._action("ecr-repository", image, CREATED)
        changes = []
        with aws_errors("update ECR repository", image):
            if repo.get("imageTagMutability") != "IMMUTABLE":
                changes.append("immutable tags")
                if not self.dry_run:
                    self.ecr.put_image_tag_mutability(
                        repositoryName=image, imageTagMutability="IMMUTABLE"
                    )
            if not repo.get("imageScanningConfiguration", {}).get("scanOnPush"):
                changes.append("scan on push")
                if not self.dry_run:
                    self.ecr.put_image_scanning_configuration(
                        repositoryName=image, imageScanningConfiguration={"scanOnPush": True}
                    )
            changes += self._ensure_lifecycle_policy(image)
        return self._action("ecr-repository", image, UPDATED if changes else UNCHANGED, changes)

    def lifecycle_policy(self) -> dict[str, Any]:
        """Expire untagged images after D days; keep the newest N of each tag family.

        Images a Lambda function still runs are not something a policy can see: `build-assets
        gc` is the clean-up that checks them (keep N comfortably above deploy lag)."""
        rules: list[dict[str, Any]] = [
            {
                "rulePriority": 1,
                "description": f"build-assets: expire untagged after {self.untagged_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": self.untagged_days,
                },
                "action": {"type": "expire"},
            }
        ]
        for priority, prefix in enumerate(KEPT_PREFIXES, start=2):
            rules.append(
                {
                    "rulePriority": priority,
                    "description": f"build-assets: keep the newest {self.keep_versions} {prefix}",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPrefixList": [prefix],
                        "countType": "imageCountMoreThan",
                        "countNumber": self.keep_versions,
                    },
                    "action": {"type": "expire"},
                }
            )
        return {"rules": rules}

    def _ensure_lifecycle_policy(self, repository: str) -> list[str]:
        """Write the lifecycle policy when it differs (a new repository: always)."""
        desired = self.lifecycle_policy()
        try:
            current = json.loads(
                self.ecr.get_lifecycle_policy(repositoryName=repository)["lifecyclePolicyText"]
            )
        except ClientError as exc:
            if error_code(exc) not in ("LifecyclePolicyNotFoundException",):
                raise
            current = None
        if current == desired:
            return []
        if not self.dry_run:
            self.ecr.put_lifecycle_policy(
                repositoryName=repository, lifecyclePolicyText=json.dumps(desired)
            )
        return [f"lifecycle policy (keep {self.keep_versions}, untagged {self.untagged_days}d)"]

    # -- IAM --------------------------------------------------------------------------------

    def trust_policy(self) -> dict[str, Any]:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "codebuild.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": self.account}},
                }
            ],
        }

    def role_policy(self, images: Sequence[str]) -> dict[str, Any]:
        """Least privilege: the bucket's contexts/, these repositories, these log groups."""
        p, r, a = self.partition, self.region, self.account
        log_groups = [
            f"arn:{p}:logs:{r}:{a}:log-group:/aws/codebuild/{self.project_of(i)}" for i in images
        ]
        statements: list[dict[str, Any]] = [
            {
                "Sid": "ReadContexts",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": [f"arn:{p}:s3:::{self.bucket}/contexts/*"],
            },
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": ["*"],
            },
            {
                "Sid": "EcrPushPull",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:CompleteLayerUpload",
                    "ecr:DescribeImages",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:InitiateLayerUpload",
                    "ecr:PutImage",
                    "ecr:UploadLayerPart",
                ],
                "Resource": [
                    f"arn:{p}:ecr:{r}:{a}:repository/{self.repository_of(i)}" for i in images
                ],
            },
            {
                "Sid": "BuildLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_groups + [f"{g}:*" for g in log_groups],
            },
        ]
        ssm = [x for x in self.secret_refs if x.startswith("ssm:")]
        sm = [x for x in self.secret_refs if x.startswith("secretsmanager:")]
        if ssm:
            statements.append(
                {
                    "Sid": "BuildSecretsParameters",
                    "Effect": "Allow",
                    "Action": ["ssm:GetParameters"],
                    "Resource": [
                        f"arn:{p}:ssm:{r}:{a}:parameter/{x.split(':', 1)[1].lstrip('/')}"
                        for x in ssm
                    ],
                }
            )
        if sm:
            statements.append(
                {
                    "Sid": "BuildSecrets",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [
                        ref
                        if ref.startswith("arn:")
                        else f"arn:{p}:secretsmanager:{r}:{a}:secret:{ref}-*"
                        for ref in (x.split(":", 1)[1] for x in sm)
                    ],
                }
            )
        return {"Version": "2012-10-17", "Statement": statements}

    def ensure_role(self, images: Sequence[str]) -> Action:
        """Service role for the projects, with an inline policy scoped to `images`."""
        name = self.role_name
        trust, policy = self.trust_policy(), self.role_policy(images)
        with aws_errors("read IAM role", name):
            try:
                role = self.iam.get_role(RoleName=name)["Role"]
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                role = None
        if role is None:
            if not self.dry_run:
                with aws_errors("create IAM role", name):
                    self.iam.create_role(
                        RoleName=name,
                        AssumeRolePolicyDocument=json.dumps(trust),
                        Description=f"build-assets CodeBuild service role ({self.env})",
                        Tags=[{"Key": k, "Value": v} for k, v in TAGS.items()],
                    )
                    self.iam.put_role_policy(
                        RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
                    )
            return self._action("iam-role", name, CREATED)
        changes = []
        with aws_errors("update IAM role", name):
            if _document(role.get("AssumeRolePolicyDocument")) != trust:
                changes.append("trust policy")
                if not self.dry_run:
                    self.iam.update_assume_role_policy(
                        RoleName=name, PolicyDocument=json.dumps(trust)
                    )
            try:
                current = self.iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)
                current_doc = _document(current.get("PolicyDocument"))
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                current_doc = None
            if current_doc != policy:
                changes.append("inline policy")
                if not self.dry_run:
                    self.iam.put_role_policy(
                        RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
                    )
        return self._action("iam-role", name, UPDATED if changes else UNCHANGED, changes)

    # -- CodeBuild --------------------------------------------------------------------------

    def project_definition(self, image: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """create_project/update_project arguments for one image."""
        project = self.project_of(image)
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
            "description": f"build-assets: builds the {image} image ({self.env})",
            "source": {
                "type": "S3",
                "location": f"{self.bucket}/contexts/{image}/",
                "buildspec": PLACEHOLDER_BUILDSPEC,
            },
            "artifacts": {"type": "NO_ARTIFACTS"},
            "environment": environment,
            "serviceRole": self.role_arn,
            "timeoutInMinutes": settings["timeout_minutes"],
            "logsConfig": {
                "cloudWatchLogs": {"status": "ENABLED", "groupName": f"/aws/codebuild/{project}"}
            },
        }

    def ensure_projects(
        self, images: Sequence[str], settings: Mapping[str, Mapping[str, Any]]
    ) -> list[Action]:
        """One CodeBuild project per image, updated only where it differs."""
        names = [self.project_of(i) for i in images]
        existing: dict[str, dict[str, Any]] = {}
        with aws_errors("read CodeBuild projects", ", ".join(names)):
            for i in range(0, len(names), 100):
                resp = self.codebuild.batch_get_projects(names=names[i : i + 100])
                existing.update({p["name"]: p for p in resp.get("projects", [])})
        actions = []
        for image in images:
            desired = self.project_definition(image, settings[image])
            name = desired["name"]
            current = existing.get(name)
            if current is None:
                if not self.dry_run:
                    self._create_project(desired)
                actions.append(self._action("codebuild-project", name, CREATED))
                continue
            changes = [k for k, v in desired.items() if k != "name" and _differs(v, current.get(k))]
            if changes and not self.dry_run:
                with aws_errors("update CodeBuild project", name):
                    self.codebuild.update_project(**desired)
            actions.append(
                self._action("codebuild-project", name, UPDATED if changes else UNCHANGED, changes)
            )
        return actions

    def _create_project(self, desired: dict[str, Any], attempts: int = 8) -> None:
        """create_project, retrying while a just-created role is not yet assumable."""
        tags = [{"key": k, "value": v} for k, v in TAGS.items()]
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
                self._sleep(2.0 * (attempt + 1))


def _document(doc: Any) -> Any:
    """An IAM policy document as a dict (boto3 decodes them; strings are parsed)."""
    if isinstance(doc, str):
        from urllib.parse import unquote

        try:
            return json.loads(doc)
        except ValueError:
            return json.loads(unquote(doc))
    return doc


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
    out: dict[str, dict[str, Any]] = {}
    for image in images:
        given = {k: v for k, v in (overrides.get(image) or {}).items() if v is not None}
        extra = sorted(set(given) - OVERRIDE_KEYS)
        if extra:
            raise UserError(
                f"{image}: unknown CodeBuild settings {', '.join(extra)}"
                f" (allowed: {', '.join(sorted(OVERRIDE_KEYS))})"
            )
        platform = given.get("platform")
        if platform is not None and platform not in ENVIRONMENT_TYPES:
            raise UserError(
                f"{image}: platform '{platform}' (allowed: {', '.join(ENVIRONMENT_TYPES)})"
            )
        arm = platform == "linux/arm64"
        fleet = given.get("fleet")
        if fleet is not None and not str(fleet).startswith("arn:"):
            raise UserError(f"{image}: codebuild fleet must be a fleet ARN, got '{fleet}'")
        out[image] = {
            "compute_type": given.get("compute_type", DEFAULT_COMPUTE),
            "timeout_minutes": int(given.get("timeout_minutes", DEFAULT_TIMEOUT)),
            "image": given.get("image", DEFAULT_ARM_IMAGE if arm else DEFAULT_IMAGE),
            "platform": platform,
            "project_name": given.get("project_name"),
            "repository_name": given.get("repository_name"),
            "fleet": fleet,
            "docker_server": given.get("docker_server"),
        }
    return out


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

    `clients` may inject s3=, ecr=, iam=, codebuild= (tests); `bucket` defaults to
    $BUILD_ASSETS_BUCKET, then `build-assets-<account>-<region>-<env>`.
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


# -- CLI ------------------------------------------------------------------------------------


def images_from_manifest(
    repo: str | None, manifest: str | None
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Image names and their overrides from images.yaml: `codebuild:` settings, the platform
    and the naming templates (only where they differ from the defaults)."""
    from build_assets.core.manifest import (
        DEFAULT_PROJECT_NAME,
        DEFAULT_REPOSITORY_NAME,
        load_manifest,
    )
    from build_assets.settings import Settings

    settings = Settings.resolve(repo=repo, manifest=manifest)
    model = load_manifest(settings.manifest, settings.repo)
    overrides: dict[str, dict[str, Any]] = {}
    for name, spec in model.images.items():
        options = getattr(spec, "codebuild", None)
        values: dict[str, Any] = {}
        if options is not None:
            values.update(options if isinstance(options, Mapping) else vars(options))
        values["platform"] = model.platform_of(name)
        project = spec.codebuild_project or model.naming.codebuild_project
        repository = spec.repository or model.naming.repository
        values["project_name"] = project if project != DEFAULT_PROJECT_NAME else None
        values["repository_name"] = repository if repository != DEFAULT_REPOSITORY_NAME else None
        given = {k: values.get(k) for k in OVERRIDE_KEYS if values.get(k) is not None}
        if given:
            overrides[name] = given
    return list(model.images), overrides


def manifest_lifecycle(repo: str | None, manifest: str | None) -> tuple[int, int]:
    """(keep, untagged_days) of the manifest's `lifecycle:` (defaults when absent)."""
    from build_assets.core.manifest import load_manifest
    from build_assets.settings import Settings

    settings = Settings.resolve(repo=repo, manifest=manifest)
    lifecycle = load_manifest(settings.manifest, settings.repo).lifecycle
    return lifecycle.keep, lifecycle.untagged_days


def manifest_deploys(repo: str | None, manifest: str | None, env: str) -> tuple[list, list[str]]:
    """(the manifest's FunctionSpecs, the SSM parameters its images are published to)."""
    from build_assets.core.functions import function_specs, ssm_name, ssm_template
    from build_assets.core.manifest import load_manifest
    from build_assets.settings import Settings

    settings = Settings.resolve(repo=repo, manifest=manifest)
    model = load_manifest(settings.manifest, settings.repo)
    template = ssm_template(model)
    names = [ssm_name(template, env, i) for i in model.images] if template else []
    return list(function_specs(model).values()), names


def _run_cli(args: argparse.Namespace) -> int:
    from build_assets.settings import Settings

    settings = Settings.resolve(env=getattr(args, "env", None), bucket=args.bucket)
    env = settings.env
    if args.images:
        images, overrides = list(args.images), {}
    else:
        images, overrides = images_from_manifest(
            getattr(args, "repo", None), getattr(args, "manifest", None)
        )
    keep, days = DEFAULT_KEEP, DEFAULT_UNTAGGED_DAYS
    functions: list[Any] = []
    parameters: list[str] = []
    if not args.images:
        keep, days = manifest_lifecycle(
            getattr(args, "repo", None), getattr(args, "manifest", None)
        )
        functions, parameters = manifest_deploys(
            getattr(args, "repo", None), getattr(args, "manifest", None), env
        )
    session = make_session(region=args.region)
    actions = bootstrap(
        images,
        overrides,
        bucket=settings.bucket,
        env=env,
        dry_run=args.dry_run,
        session=session,
        context_expiry_days=args.expire_days,
        secret_refs=args.secret or (),
        keep_versions=keep,
        untagged_days=days,
        functions=functions,
        parameters=parameters,
    )
    for action in actions:
        print(action)
    counts = {s: sum(1 for a in actions if a.status == s) for s in (CREATED, UPDATED, UNCHANGED)}
    summary = ", ".join(f"{n} {_PLANNED[s] if args.dry_run else s}" for s, n in counts.items())
    print(("dry run: " if args.dry_run else "") + summary)
    return 0
