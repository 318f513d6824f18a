"""The IAM service role the CodeBuild projects run as, `build-assets-<env>-codebuild`: trusted by
CodeBuild for this account only, with an inline policy allowing only the context bucket's
`contexts/`, the images' repositories and log groups, and the build secrets named."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from build_assets.aws.bootstrap_actions import CREATED, status_of, tag_list
from build_assets.aws.clients import aws_errors, error_code

POLICY_NAME = "build-assets-codebuild"
ECR_PUSH_PULL = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
]


def role_name(env: str) -> str:
    """The service role of an environment's CodeBuild projects."""
    return f"build-assets-{env}-codebuild"


def trust_policy(account: str) -> dict[str, Any]:
    """CodeBuild may assume the role, for builds of `account` only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codebuild.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            }
        ],
    }


@dataclass(frozen=True)
class Scope:
    """Where the role's permissions apply: the account, the bucket, the images' resources."""

    partition: str
    region: str
    account: str
    bucket: str
    projects: Sequence[str]  # CodeBuild project names (their log groups)
    repositories: Sequence[str]  # ECR repository names
    secret_refs: Sequence[str] = ()  # ssm:/name | secretsmanager:arn-or-name

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"


def role_policy(scope: Scope) -> dict[str, Any]:
    """Least privilege: the bucket's contexts/, these repositories, these log groups."""
    log_groups = [scope.arn("logs", f"log-group:/aws/codebuild/{p}") for p in scope.projects]
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadContexts",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": [f"arn:{scope.partition}:s3:::{scope.bucket}/contexts/*"],
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
            "Action": list(ECR_PUSH_PULL),
            "Resource": [scope.arn("ecr", f"repository/{r}") for r in scope.repositories],
        },
        {
            "Sid": "BuildLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": log_groups + [f"{g}:*" for g in log_groups],
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements + _secret_statements(scope)}


def _secret_statements(scope: Scope) -> list[dict[str, Any]]:
    """Read access to exactly the SSM parameters and Secrets Manager secrets named."""
    ssm = [x.split(":", 1)[1] for x in scope.secret_refs if x.startswith("ssm:")]
    sm = [x.split(":", 1)[1] for x in scope.secret_refs if x.startswith("secretsmanager:")]
    statements: list[dict[str, Any]] = []
    if ssm:
        statements.append(
            {
                "Sid": "BuildSecretsParameters",
                "Effect": "Allow",
                "Action": ["ssm:GetParameters"],
                "Resource": [scope.arn("ssm", f"parameter/{name.lstrip('/')}") for name in ssm],
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
                    else scope.arn("secretsmanager", f"secret:{ref}-*")
                    for ref in sm
                ],
            }
        )
    return statements


def ensure_role(
    iam: Any, name: str, env: str, trust: dict[str, Any], policy: dict[str, Any], *, dry_run: bool
) -> tuple[str, list[str]]:
    """Create the role with its inline policy, or bring both in line: (status, changes)."""
    with aws_errors("read IAM role", name):
        try:
            role = iam.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            role = None
    if role is None:
        if not dry_run:
            with aws_errors("create IAM role", name):
                iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(trust),
                    Description=f"build-assets CodeBuild service role ({env})",
                    Tags=tag_list(),
                )
                iam.put_role_policy(
                    RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
                )
        return CREATED, []
    changes = []
    with aws_errors("update IAM role", name):
        if _document(role.get("AssumeRolePolicyDocument")) != trust:
            changes.append("trust policy")
            if not dry_run:
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        if _inline_policy(iam, name) != policy:
            changes.append("inline policy")
            if not dry_run:
                iam.put_role_policy(
                    RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
                )
    return status_of(changes), changes


def _inline_policy(iam: Any, name: str) -> Any:
    """The role's `POLICY_NAME` document, or None when it has none."""
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        return None
    return _document(current.get("PolicyDocument"))


def _document(doc: Any) -> Any:
    """An IAM policy document as a dict (boto3 decodes them; strings are parsed)."""
    if isinstance(doc, str):
        from urllib.parse import unquote

        try:
            return json.loads(doc)
        except ValueError:
            return json.loads(unquote(doc))
    return doc
