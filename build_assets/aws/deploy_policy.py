"""The managed IAM policy of whoever runs build-assets' deploys (the Dagster host's role):
publish built images to SSM and deploy the manifest's functions, nothing else.

- `ssm:GetParameter`, `ssm:PutParameter` on exactly the manifest's `publish.ssm` parameters;
- on every manifest function: read it, its versions and aliases (the drift check, rollback,
  and `gc`, which keeps every image a function runs);
- `lambda:UpdateFunctionCode` only on functions build-assets deploys (not `deploy: none`),
  `lambda:PublishVersion`, `CreateAlias`, `UpdateAlias` only on those with an alias;
- `ecr:BatchGetImage`, `ecr:GetDownloadUrlForLayer` on the repositories those functions'
  images live in (Lambda checks the caller can read the image it is given).

`bootstrap` creates it as `build-assets-<env>-deployer` (a new default version when it
differs) and attaches it to nothing: attach it to the role the Dagster host runs as.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from build_assets.core.functions import FunctionSpec

READ_FUNCTION = [
    "lambda:GetAlias",
    "lambda:GetFunction",
    "lambda:GetFunctionConfiguration",
    "lambda:ListAliases",
    "lambda:ListVersionsByFunction",
]
ALIAS_ACTIONS = ["lambda:CreateAlias", "lambda:PublishVersion", "lambda:UpdateAlias"]
MAX_POLICY_VERSIONS = 5  # IAM keeps at most five versions of a managed policy


def policy_name(env: str) -> str:
    return f"build-assets-{env}-deployer"


def deployer_policy(
    partition: str,
    region: str,
    account: str,
    functions: Sequence[FunctionSpec],
    parameters: Sequence[str],
    repositories: Mapping[str, str],
) -> dict[str, Any]:
    """The policy document; `repositories`: image -> its ECR repository name."""
    fn_arn = f"arn:{partition}:lambda:{region}:{account}:function:"

    def arns(specs: Sequence[FunctionSpec], qualified: bool = False) -> list[str]:
        names = sorted({s.name for s in specs})
        out = [f"{fn_arn}{n}" for n in names]
        return out + [f"{fn_arn}{n}:*" for n in names] if qualified else out

    statements: list[dict[str, Any]] = []
    if parameters:
        statements.append(
            {
                "Sid": "PublishImageUris",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:PutParameter"],
                "Resource": [
                    f"arn:{partition}:ssm:{region}:{account}:parameter/{n.lstrip('/')}"
                    for n in sorted(set(parameters))
                ],
            }
        )
    if functions:
        statements.append(
            {
                "Sid": "ReadFunctions",
                "Effect": "Allow",
                "Action": READ_FUNCTION,
                "Resource": arns(functions, qualified=True),
            }
        )
    deployed = [f for f in functions if not f.owned_by_infrastructure]
    if deployed:
        statements.append(
            {
                "Sid": "DeployFunctions",
                "Effect": "Allow",
                "Action": ["lambda:UpdateFunctionCode"],
                "Resource": arns(deployed),
            }
        )
        statements.append(
            {
                "Sid": "ReadDeployedImages",
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": [
                    f"arn:{partition}:ecr:{region}:{account}:repository/{repositories[i]}"
                    for i in sorted({f.image for f in deployed})
                ],
            }
        )
    aliased = [f for f in deployed if f.alias]
    if aliased:
        statements.append(
            {
                "Sid": "ReleaseThroughAliases",
                "Effect": "Allow",
                "Action": ALIAS_ACTIONS,
                "Resource": arns(aliased, qualified=True),
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_policy(iam: Any, arn: str, name: str, document: dict[str, Any], *, dry_run: bool):
    """Create the managed policy, or give it a new default version when it differs.
    Returns (status, changes) with status created | updated | unchanged."""
    import json

    from botocore.exceptions import ClientError

    from build_assets.aws.clients import error_code

    try:
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        if not dry_run:
            iam.create_policy(
                PolicyName=name,
                PolicyDocument=json.dumps(document),
                Description="build-assets: publish images to SSM, deploy the manifest's functions",
            )
        return "created", []
    current = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
    doc = current["PolicyVersion"]["Document"]
    if isinstance(doc, str):
        from urllib.parse import unquote

        doc = json.loads(unquote(doc))
    if doc == document:
        return "unchanged", []
    if not dry_run:
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted(
            (v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"]
        )
        if len(versions) >= MAX_POLICY_VERSIONS and old:
            iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])
        iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True
        )
    return "updated", ["policy document"]
