"""Point Lambda functions at a digest-pinned image and prove it took effect.

`deploy_function` is idempotent: a function already on the URI is left alone. Otherwise it checks
that the image is a single-platform manifest (Lambda refuses an image index), waits
for any update in flight, calls `update_function_code(ImageUri=...)`, waits `function_updated_v2`
and reads the function back (`Code.ImageUri`, `Code.ResolvedImageUri`). Creating a missing
function is for the local stack only (production functions belong to infrastructure code).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from build_assets.aws.clients import aws_errors, error_code, user_error
from build_assets.errors import UserError

log = logging.getLogger(__name__)

LOCAL_ROLE_NAME = "build-assets-local-lambda"
_LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class DeployResult:
    """Outcome of one function deploy."""

    function: str
    previous_image: str | None  # Code.ImageUri before (None when the function was created)
    new_image: str  # Code.ImageUri after
    changed: bool
    resolved_image_uri: str | None  # Code.ResolvedImageUri after
    created: bool = False


def _digest_of(uri: str | None) -> str | None:
    return uri.rsplit("@", 1)[1] if uri and "@" in uri else None


def _wait(lambda_client: Any, waiter: str, function_name: str, max_attempts: int) -> None:
    try:
        lambda_client.get_waiter(waiter).wait(
            FunctionName=function_name, WaiterConfig={"Delay": 2, "MaxAttempts": max_attempts}
        )
    except WaiterError as exc:
        last = (exc.last_response or {}).get("Configuration", {})
        reason = last.get("LastUpdateStatusReason") or last.get("StateReason") or str(exc)
        raise UserError(f"Lambda {function_name}: update did not complete: {reason}") from exc


def media_type_of(image_uri_pinned: str) -> str | None:
    """The manifest media type of `repository@sha256:...` (None when it is not found): from
    ECR's `batch_get_image` on ECR, else a HEAD on the registry."""
    from build_assets.engine import registry as reg

    repository, _, digest = image_uri_pinned.partition("@")
    ref = reg.parse_repository(repository)
    if not reg.is_ecr(ref.host):
        return reg.manifest_media_type(repository, digest)
    from build_assets.aws.clients import make_client

    ecr = make_client("ecr", region_name=ref.host.split(".")[3])
    with aws_errors("read the image manifest from ECR", image_uri_pinned):
        try:
            images = ecr.batch_get_image(
                registryId=ref.host.split(".")[0],
                repositoryName=ref.name,
                imageIds=[{"imageDigest": digest}],
                acceptedMediaTypes=list(reg.MANIFEST_TYPES),
            ).get("images", [])
        except ClientError as exc:
            if error_code(exc) == "RepositoryNotFoundException":
                return None
            raise
    if not images:
        return None
    found = images[0].get("imageManifestMediaType")
    return found or json.loads(images[0].get("imageManifest") or "{}").get("mediaType")


def lambda_image_problem(
    function_name: str, image_uri_pinned: str, media_type: str | None
) -> str | None:
    """Why Lambda cannot run the image (it takes a single-platform image manifest only)."""
    from build_assets.core.mediatypes import INDEX_TYPES

    if media_type not in INDEX_TYPES:
        return None
    return (
        f"Lambda {function_name}: {image_uri_pinned} is an image index ({media_type}), which"
        " Lambda refuses (it runs a single-platform image manifest only): rebuild it without"
        " attestations, `docker buildx build --provenance=false --sbom=false`"
        " (build_image.sh passes them)"
    )


def _runnable(
    function_name: str, image_uri_pinned: str, media_type: Callable[[str], str | None]
) -> None:
    problem = lambda_image_problem(function_name, image_uri_pinned, media_type(image_uri_pinned))
    if problem:
        raise UserError(problem)


def deploy_function(
    lambda_client: Any,
    function_name: str,
    image_uri_pinned: str,
    *,
    create_if_missing: bool = False,
    role_arn: str | None = None,
    max_wait_attempts: int = 150,
    media_type: Callable[[str], str | None] = media_type_of,
) -> DeployResult:
    """Make `function_name` run `image_uri_pinned` (repository@sha256:...); an image index
    (what buildx pushes with attestations on) is refused before the function is touched.
    `media_type` reads the manifest's media type (default `media_type_of`)."""
    if "@sha256:" not in image_uri_pinned:
        raise UserError(
            f"Lambda {function_name}: image must be pinned by digest: {image_uri_pinned}"
        )
    with aws_errors("read Lambda function", function_name):
        try:
            current = lambda_client.get_function(FunctionName=function_name)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            current = None

    if current is None:
        if not create_if_missing:
            raise UserError(
                f"Lambda function {function_name} does not exist (create it with your"
                " infrastructure code; only the local stack creates functions)"
            )
        if not role_arn:
            raise UserError(f"Lambda {function_name}: creating a function needs an execution role")
        _runnable(function_name, image_uri_pinned, media_type)
        with aws_errors("create Lambda function", function_name):
            lambda_client.create_function(
                FunctionName=function_name,
                PackageType="Image",
                Code={"ImageUri": image_uri_pinned},
                Role=role_arn,
                Publish=False,
            )
        _wait(lambda_client, "function_active_v2", function_name, max_wait_attempts)
        return _verified(lambda_client, function_name, image_uri_pinned, None, created=True)

    config = current.get("Configuration", {})
    if config.get("PackageType") != "Image":
        raise UserError(
            f"Lambda {function_name} is a {config.get('PackageType', 'Zip')} function, not an"
            " image function: it cannot run a container image"
        )
    previous = current.get("Code", {}).get("ImageUri")
    if previous == image_uri_pinned:
        log.info("%s already runs %s", function_name, image_uri_pinned)
        return DeployResult(
            function_name,
            previous,
            previous,
            changed=False,
            resolved_image_uri=current.get("Code", {}).get("ResolvedImageUri"),
        )
    _runnable(function_name, image_uri_pinned, media_type)
    if config.get("LastUpdateStatus") == "InProgress":
        _wait(lambda_client, "function_updated_v2", function_name, max_wait_attempts)
    with aws_errors("update Lambda function code", function_name):
        lambda_client.update_function_code(FunctionName=function_name, ImageUri=image_uri_pinned)
    _wait(lambda_client, "function_updated_v2", function_name, max_wait_attempts)
    log.info("%s: %s -> %s", function_name, previous, image_uri_pinned)
    return _verified(lambda_client, function_name, image_uri_pinned, previous, created=False)


def _verified(
    lambda_client: Any, function_name: str, wanted: str, previous: str | None, *, created: bool
) -> DeployResult:
    with aws_errors("read Lambda function", function_name):
        code = lambda_client.get_function(FunctionName=function_name).get("Code", {})
    now, resolved = code.get("ImageUri"), code.get("ResolvedImageUri")
    if now != wanted:
        raise UserError(f"Lambda {function_name} runs {now} after the update, not {wanted}")
    if resolved and _digest_of(resolved) != _digest_of(wanted):
        # real Lambda resolves a digest-pinned ECR URI to itself; emulators (moto, with a
        # non-ECR local registry) may not, so only an ECR mismatch is worth a warning
        level = logging.WARNING if ".dkr.ecr." in wanted else logging.DEBUG
        log.log(level, "%s: ResolvedImageUri %s differs from %s", function_name, resolved, wanted)
    return DeployResult(function_name, previous, now, True, resolved, created)


def ensure_local_execution_role(iam_client: Any, name: str = LOCAL_ROLE_NAME) -> str:
    """ARN of a throwaway Lambda execution role (created when missing) for the local stack."""
    try:
        return iam_client.get_role(RoleName=name)["Role"]["Arn"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise user_error(exc, "read IAM role", name) from exc
    with aws_errors("create IAM role", name):
        return iam_client.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(_LAMBDA_TRUST),
            Description="build-assets local stack: throwaway Lambda execution role",
        )["Role"]["Arn"]


def current_image(lambda_client: Any, function_name: str) -> str | None:
    """The image URI a function runs now (None when it does not exist); one-line errors."""
    with aws_errors("read Lambda function", function_name):
        try:
            code = lambda_client.get_function(FunctionName=function_name).get("Code", {})
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return None
    return code.get("ImageUri")


class Deployer:
    """Points Lambda functions at freshly built images (creates them on the local stack)."""

    def __init__(
        self,
        lambda_client: Any,
        *,
        create_missing: bool,
        role_arn: str | None,
        media_type: Callable[[str], str | None] | None = None,
    ) -> None:
        self._client = lambda_client
        self._create = create_missing
        self._role = role_arn
        self._media_type = media_type or media_type_of

    def deploy(self, function: str, image_uri_pinned: str) -> DeployResult:
        if self._create and not self._role:
            from build_assets.aws.clients import make_client

            self._role = ensure_local_execution_role(make_client("iam"))
        return deploy_function(
            self._client,
            function,
            image_uri_pinned,
            create_if_missing=self._create,
            role_arn=self._role,
            media_type=self._media_type,
        )
