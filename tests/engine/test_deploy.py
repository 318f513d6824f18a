"""Lambda deploys against a real moto server over HTTP (Lambda, ECR and IAM all on moto).

The plugin sets MOTO_LAMBDA_STUB_ECR=false, so moto checks that the image exists in its ECR.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from build_assets.engine.deploy import DeployResult, deploy_function, ensure_local_execution_role
from build_assets.errors import UserError
from tests.aws_plugin import REGISTRY, push_image


@pytest.fixture
def images(aws: boto3.Session) -> tuple[str, str]:
    """Two digest-pinned image URIs of one ECR repository."""
    aws.client("ecr").create_repository(repositoryName="harmonize")
    out = []
    for tag in ("git-aaaaaaaaaaaa", "git-bbbbbbbbbbbb"):
        digest = push_image(aws, "harmonize", tag)
        out.append(f"{REGISTRY}/harmonize@{digest}")
    assert out[0] != out[1]
    return out[0], out[1]


@pytest.fixture
def lam(aws: boto3.Session) -> Any:
    return aws.client("lambda")


@pytest.fixture
def role(aws: boto3.Session) -> str:
    return ensure_local_execution_role(aws.client("iam"))


def test_create_update_unchanged(lam: Any, role: str, images: tuple[str, str]) -> None:
    first, second = images
    created = deploy_function(lam, "harmonize-fn", first, create_if_missing=True, role_arn=role)
    assert created.created and created.changed
    assert (created.previous_image, created.new_image) == (None, first)
    assert lam.get_function(FunctionName="harmonize-fn")["Configuration"]["PackageType"] == "Image"

    updated = deploy_function(lam, "harmonize-fn", second)
    assert updated == DeployResult(
        "harmonize-fn", first, second, True, updated.resolved_image_uri, created=False
    )
    assert updated.resolved_image_uri and updated.resolved_image_uri.endswith(
        second.rsplit("@", 1)[1]
    )
    assert lam.get_function(FunctionName="harmonize-fn")["Code"]["ImageUri"] == second

    calls: list[str] = []
    lam.meta.events.register(
        "before-call.lambda.UpdateFunctionCode", lambda **kw: calls.append("update")
    )
    same = deploy_function(lam, "harmonize-fn", second)
    assert (same.changed, same.previous_image, same.new_image) == (False, second, second)
    assert calls == []


def test_missing_function_without_create_is_a_user_error(lam: Any, images: tuple[str, str]) -> None:
    with pytest.raises(UserError, match="Lambda function ghost does not exist"):
        deploy_function(lam, "ghost", images[0])


def test_tag_uri_is_refused(lam: Any) -> None:
    with pytest.raises(UserError, match="must be pinned by digest"):
        deploy_function(lam, "fn", f"{REGISTRY}/harmonize:git-aaaaaaaaaaaa")


def test_image_missing_from_ecr_is_one_line(lam: Any, role: str, images: tuple[str, str]) -> None:
    deploy_function(lam, "fn", images[0], create_if_missing=True, role_arn=role)
    ghost = f"{REGISTRY}/harmonize@sha256:" + "0" * 64
    with pytest.raises(UserError) as err:
        deploy_function(lam, "fn", ghost)
    (line,) = err.value.lines
    assert line.startswith("cannot update Lambda function code (fn): ")


def test_zip_function_is_refused(aws: boto3.Session, lam: Any, role: str) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("h.py", "def handler(e, c): return 1\n")
    lam.create_function(
        FunctionName="zippy",
        Runtime="python3.12",
        Role=role,
        Handler="h.handler",
        Code={"ZipFile": buf.getvalue()},
    )
    with pytest.raises(UserError, match="zippy is a Zip function"):
        deploy_function(lam, "zippy", f"{REGISTRY}/x@sha256:" + "1" * 64)


def test_local_role_is_reused(aws: boto3.Session) -> None:
    iam = aws.client("iam")
    arn = ensure_local_execution_role(iam)
    assert ensure_local_execution_role(iam) == arn
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["build-assets-local-lambda"]
