"""`build-assets bootstrap` against a real moto server over HTTP.

Everything runs on moto except CodeBuild's UpdateProject, which moto 5.2 does not implement:
`test_changed_override_updates_project` wraps the client and emulates it by delete + create.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

import boto3
import pytest

from build_assets.aws.bootstrap import bootstrap
from build_assets.aws.bootstrap_actions import Action
from build_assets.aws.context_bucket import LIFECYCLE_RULE_ID
from build_assets.aws.service_role import POLICY_NAME
from build_assets.cli.bootstrap import add_cli
from build_assets.errors import UserError
from tests.aws_plugin import ACCOUNT, REGION

IMAGES = ["base-receipt-dynamo", "base-receipt-label", "harmonize"]
BUCKET = "ba-contexts-test"


def run(aws: boto3.Session, **kw: Any) -> list[Action]:
    kw.setdefault("bucket", BUCKET)
    images = kw.pop("images", IMAGES)
    overrides = kw.pop("overrides", None)
    return bootstrap(images, overrides, session=aws, sleep=_no_sleep, **kw)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def summary(actions: list[Action]) -> list[tuple[str, str, str]]:
    return [(a.kind, a.name, a.status) for a in actions]


def snapshot(aws: boto3.Session) -> dict[str, Any]:
    """Everything bootstrap can create, as plain data (to prove a run changed nothing)."""
    s3, ecr, iam, cb = (aws.client(x) for x in ("s3", "ecr", "iam", "codebuild"))
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    repos = sorted(
        (
            r["repositoryName"],
            r["imageTagMutability"],
            r["imageScanningConfiguration"]["scanOnPush"],
        )
        for r in ecr.describe_repositories()["repositories"]
    )
    roles = sorted(r["RoleName"] for r in iam.list_roles()["Roles"])
    projects = sorted(cb.list_projects()["projects"])
    out: dict[str, Any] = {"buckets": buckets, "repos": repos, "roles": roles, "projects": projects}
    if projects:
        out["project_defs"] = json.dumps(
            cb.batch_get_projects(names=projects)["projects"], sort_keys=True, default=str
        )
    if BUCKET in buckets:
        out["lifecycle"] = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    return out


def test_creates_exactly_the_expected_resources(aws: boto3.Session) -> None:
    actions = run(aws)
    role = "build-assets-dev-codebuild"
    projects = [f"{i}-dev-img-builder" for i in IMAGES]
    assert summary(actions) == (
        [("s3-bucket", BUCKET, "created")]
        + [("ecr-repository", i, "created") for i in IMAGES]
        + [("iam-role", role, "created")]
        + [("codebuild-project", p, "created") for p in projects]
    )
    s3, ecr, iam, cb = (aws.client(x) for x in ("s3", "ecr", "iam", "codebuild"))

    # S3: encrypted, private, contexts/ expire
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]
    sse = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    pab = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["Filter"] == {"Prefix": "contexts/"} and rule["Expiration"] == {"Days": 30}

    # ECR: one immutable, scanned repository per image
    repos = ecr.describe_repositories()["repositories"]
    assert sorted(r["repositoryName"] for r in repos) == sorted(IMAGES)
    assert {r["imageTagMutability"] for r in repos} == {"IMMUTABLE"}
    assert all(r["imageScanningConfiguration"]["scanOnPush"] for r in repos)

    # IAM: one role, trusted by CodeBuild, policy scoped to these resources only
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == [role]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "codebuild.amazonaws.com"}
    doc = iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["ReadContexts"]["Resource"] == [f"arn:aws:s3:::{BUCKET}/contexts/*"]
    assert by_sid["ReadContexts"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert by_sid["EcrLogin"]["Resource"] == ["*"]
    assert by_sid["EcrPushPull"]["Resource"] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{i}" for i in IMAGES
    ]
    groups = [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/codebuild/{p}" for p in projects]
    assert by_sid["BuildLogs"]["Resource"] == groups + [f"{g}:*" for g in groups]
    assert all("*" not in s["Resource"] for sid, s in by_sid.items() if sid != "EcrLogin")

    # CodeBuild: one privileged project per image, running as that role
    assert sorted(cb.list_projects()["projects"]) == sorted(projects)
    for project in cb.batch_get_projects(names=projects)["projects"]:
        env = project["environment"]
        assert env["privilegedMode"] is True
        assert env["computeType"] == "BUILD_GENERAL1_SMALL"
        assert env["image"] == "aws/codebuild/standard:7.0"
        assert project["serviceRole"] == f"arn:aws:iam::{ACCOUNT}:role/{role}"
        assert project["timeoutInMinutes"] == 60


def test_second_run_changes_nothing(aws: boto3.Session) -> None:
    run(aws)
    before = snapshot(aws)
    again = run(aws)
    assert {a.status for a in again} == {"unchanged"}
    assert len(again) == 1 + len(IMAGES) + 1 + len(IMAGES)
    assert snapshot(aws) == before


def test_dry_run_on_empty_account_plans_everything_and_creates_nothing(aws: boto3.Session) -> None:
    empty = snapshot(aws)
    planned = run(aws, dry_run=True)
    assert {a.status for a in planned} == {"created"}
    assert all(str(a).startswith("would create") for a in planned)
    assert snapshot(aws) == empty


def test_dry_run_reports_drift_without_fixing_it(aws: boto3.Session) -> None:
    run(aws)
    ecr = aws.client("ecr")
    ecr.put_image_tag_mutability(repositoryName="harmonize", imageTagMutability="MUTABLE")
    aws.client("s3").delete_public_access_block(Bucket=BUCKET)
    drifted = snapshot(aws)
    planned = {(a.kind, a.name): a for a in run(aws, dry_run=True)}
    assert planned[("ecr-repository", "harmonize")].status == "updated"
    assert planned[("ecr-repository", "harmonize")].changes == ("immutable tags",)
    assert "would update" in str(planned[("ecr-repository", "harmonize")])
    assert planned[("s3-bucket", BUCKET)].changes == ("public access block",)
    assert snapshot(aws) == drifted

    fixed = {(a.kind, a.name): a.status for a in run(aws)}
    assert fixed[("ecr-repository", "harmonize")] == "updated"
    assert fixed[("s3-bucket", BUCKET)] == "updated"
    assert {a.status for a in run(aws)} == {"unchanged"}


def test_new_image_extends_the_policy_and_leaves_the_rest(aws: boto3.Session) -> None:
    run(aws)
    actions = {(a.kind, a.name): a for a in run(aws, images=[*IMAGES, "validate"])}
    assert actions[("ecr-repository", "validate")].status == "created"
    assert actions[("codebuild-project", "validate-dev-img-builder")].status == "created"
    assert actions[("iam-role", "build-assets-dev-codebuild")].changes == ("inline policy",)
    unchanged = [a for a in actions.values() if a.status == "unchanged"]
    assert len(unchanged) == 1 + 2 * len(IMAGES)


def test_lifecycle_change_keeps_foreign_rules(aws: boto3.Session) -> None:
    run(aws)
    s3 = aws.client("s3")
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    foreign = {
        "ID": "keep-me",
        "Filter": {"Prefix": "other/"},
        "Status": "Enabled",
        "Expiration": {"Days": 3},
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [foreign, *rules]}
    )
    (bucket,) = [a for a in run(aws, context_expiry_days=7) if a.kind == "s3-bucket"]
    assert bucket.status == "updated"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules[LIFECYCLE_RULE_ID]["Expiration"] == {"Days": 7}
    assert "keep-me" in rules


class _UpdateProjectEmulated:
    """Real moto CodeBuild client, plus UpdateProject (not implemented by moto 5.2) emulated as
    delete + create, so the update path is observable through moto's BatchGetProjects."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.updates: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_project(self, **kw: Any) -> dict[str, Any]:
        self.updates.append(kw["name"])
        self._client.delete_project(name=kw["name"])
        return self._client.create_project(**kw)


def test_changed_override_updates_project(aws: boto3.Session) -> None:
    run(aws)
    cb = _UpdateProjectEmulated(aws.client("codebuild"))
    overrides = {"harmonize": {"compute_type": "BUILD_GENERAL1_MEDIUM", "timeout_minutes": 30}}
    actions = run(aws, overrides=overrides, codebuild=cb)
    (changed,) = [a for a in actions if a.status != "unchanged"]
    assert (changed.name, changed.status) == ("harmonize-dev-img-builder", "updated")
    assert set(changed.changes) == {"environment", "timeoutInMinutes"}
    assert cb.updates == ["harmonize-dev-img-builder"]
    (proj,) = aws.client("codebuild").batch_get_projects(names=["harmonize-dev-img-builder"])[
        "projects"
    ]
    assert proj["environment"]["computeType"] == "BUILD_GENERAL1_MEDIUM"
    assert proj["timeoutInMinutes"] == 30
    assert {a.status for a in run(aws, overrides=overrides, codebuild=cb)} == {"unchanged"}


def test_env_names_the_projects_and_role(aws: boto3.Session) -> None:
    actions = run(aws, images=["app"], env="prod", bucket="ba-prod-contexts")
    assert ("codebuild-project", "app-prod-img-builder", "created") in summary(actions)
    assert ("iam-role", "build-assets-prod-codebuild", "created") in summary(actions)


def test_secrets_are_granted_by_reference(aws: boto3.Session) -> None:
    run(aws, images=["app"], secret_refs=["ssm:/ci/npm-token", "secretsmanager:ci/pypi"])
    doc = aws.client("iam").get_role_policy(
        RoleName="build-assets-dev-codebuild", PolicyName=POLICY_NAME
    )["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert by_sid["BuildSecretsParameters"]["Resource"] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/ci/npm-token"
    ]
    assert by_sid["BuildSecrets"]["Resource"] == [
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ci/pypi-*"
    ]


@pytest.mark.parametrize(
    ("images", "overrides", "message"),
    [
        (["Bad/Name"], None, "image names must be"),
        (["app"], {"ghost": {"image": "x"}}, "overrides for unknown images: ghost"),
        (["app"], {"app": {"memory": 3}}, "app: unknown CodeBuild settings memory"),
    ],
)
def test_invalid_input_is_one_user_error(
    aws: boto3.Session, images: list[str], overrides: Any, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        run(aws, images=images, overrides=overrides)


def test_bucket_of_another_account_is_a_user_error(aws: boto3.Session) -> None:
    """moto answers HeadBucket with 404/200 only; a 403 (someone else's bucket) is injected."""
    from botocore.stub import Stubber

    s3 = aws.client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("head_bucket", "403", http_status_code=403)
        with pytest.raises(UserError, match=f"S3 bucket {BUCKET} exists but is not accessible"):
            run(aws, s3=s3)


def test_cli_registers_bootstrap_and_prints_actions(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="build-assets")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    args = parser.parse_args(
        ["bootstrap", "--image", "app", "--bucket", BUCKET, "--dry-run", "--env", "qa"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "would create codebuild-project app-qa-img-builder" in [" ".join(o.split()) for o in out]
    assert out[-1] == "dry run: 4 would create, 0 would update, 0 unchanged"
    assert aws.client("s3").list_buckets()["Buckets"] == []


def test_cli_reads_images_and_overrides_from_the_manifest(
    aws: boto3.Session, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("build_assets.core.manifest")
    from build_assets.cli.main import main

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM $BASE_IMAGE\n")
    (tmp_path / "images.yaml").write_text(
        "images:\n"
        "  base:\n"
        "    dockerfile: base/Dockerfile\n"
        "    codebuild: {compute_type: BUILD_GENERAL1_MEDIUM, timeout_minutes: 90}\n"
        "  fn:\n"
        "    dockerfile: fn/Dockerfile\n"
        "    base: base\n"
    )
    argv = ["bootstrap", "--repo", str(tmp_path), "--bucket", BUCKET]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "7 created, 0 updated, 0 unchanged"
    projects = aws.client("codebuild").batch_get_projects(
        names=["base-dev-img-builder", "fn-dev-img-builder"]
    )["projects"]
    settings = {
        p["name"]: (p["environment"]["computeType"], p["timeoutInMinutes"]) for p in projects
    }
    assert settings == {
        "base-dev-img-builder": ("BUILD_GENERAL1_MEDIUM", 90),
        "fn-dev-img-builder": ("BUILD_GENERAL1_SMALL", 60),
    }
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 created, 0 updated, 7 unchanged"


def test_cli_user_errors_are_one_line(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from build_assets.cli.main import main

    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert main(["bootstrap", "--image", "app", "--bucket", BUCKET]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "build-assets: error: no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION)\n"
    )


def test_missing_credentials_are_one_line(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from build_assets.cli.main import main

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["bootstrap", "--image", "app", "--bucket", BUCKET]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("build-assets: error: cannot read caller identity (sts): no usable AWS")


def test_a_fleet_and_the_docker_server_when_the_manifest_asks(
    aws: boto3.Session, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verified against moto's CreateProject/BatchGetProjects: the project's environment
    carries the reserved-capacity fleet and the Docker server (moto runs neither)."""
    from build_assets.cli.main import main

    fleet = f"arn:aws:codebuild:{REGION}:{ACCOUNT}:fleet/warm:0f0e0d0c"
    for name in ("base", "fn"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "images.yaml").write_text(
        "images:\n"
        "  base:\n"
        "    dockerfile: base/Dockerfile\n"
        f"    codebuild: {{fleet: '{fleet}', docker_server: BUILD_GENERAL1_MEDIUM}}\n"
        "  fn:\n"
        "    dockerfile: fn/Dockerfile\n"
    )
    argv = ["bootstrap", "--repo", str(tmp_path), "--bucket", BUCKET]
    assert main(argv) == 0
    capsys.readouterr()
    cb = aws.client("codebuild")
    projects = cb.batch_get_projects(names=["base-dev-img-builder", "fn-dev-img-builder"])
    env = {p["name"]: p["environment"] for p in projects["projects"]}
    assert env["base-dev-img-builder"]["fleet"] == {"fleetArn": fleet}
    assert env["base-dev-img-builder"]["dockerServer"]["computeType"] == "BUILD_GENERAL1_MEDIUM"
    assert "fleet" not in env["fn-dev-img-builder"]
    assert "dockerServer" not in env["fn-dev-img-builder"]
    assert main(argv) == 0
    again = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"0 created, 0 updated, \d+ unchanged", again), again  # nothing moves
    with pytest.raises(UserError, match="fleet must be a fleet ARN"):
        run(aws, overrides={"harmonize": {"fleet": "warm"}})
