"""Versions, aliases, the drift check, SSM publishing and the deployer policy, against a real
moto server over HTTP (Lambda, ECR, SSM, IAM), and the manifest's new fields.

Where moto 5 falls short (checked on moto 5.2): `publish_version` copies the function
shallowly, so every published version's `Code.ImageUri` follows `$LATEST` after a later
`update_function_code`, and `create_alias` accepts names Lambda refuses. build-assets
records a version's image in its description (immutable, as the version), which real Lambda
and moto keep per version, and checks alias names itself; the tests below assert both.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from build_assets.aws import deploy_policy as dp
from build_assets.aws.bootstrap import bootstrap
from build_assets.core.functions import FunctionSpec, function_specs
from build_assets.core.manifest import parse_manifest
from build_assets.engine import release as rel
from build_assets.engine.deploy import ensure_local_execution_role
from build_assets.engine.publish import description_of, parse_description, publish_image
from build_assets.errors import ManifestError
from tests.aws_plugin import ACCOUNT, REGION, REGISTRY, push_image

FN = "orders-fn"


@pytest.fixture
def images(aws: boto3.Session) -> list[str]:
    """Three digest-pinned image URIs of one ECR repository."""
    aws.client("ecr").create_repository(repositoryName="orders")
    return [f"{REGISTRY}/orders@{push_image(aws, 'orders', f'git-{c * 12}')}" for c in "abc"]


@pytest.fixture
def lam(aws: boto3.Session) -> Any:
    return aws.client("lambda")


@pytest.fixture
def role(aws: boto3.Session) -> str:
    return ensure_local_execution_role(aws.client("iam"))


def _release(lam: Any, role: str, uri: str, alias: str = "live") -> rel.Release:
    spec = FunctionSpec(FN, "orders", alias=alias)
    return rel.release_alias(lam, spec, uri, create_if_missing=True, role_arn=role)


def test_alias_deploys_publish_a_version_each_and_point_the_alias(
    lam: Any, role: str, images: list[str]
) -> None:
    first, second, _ = images
    one = _release(lam, role, first)
    assert (one.changed, one.version, one.previous_version, one.image) == (True, "1", None, first)
    two = _release(lam, role, second)
    assert (two.version, two.previous_version, two.previous_image) == ("2", "1", first)
    assert lam.get_alias(FunctionName=FN, Name="live")["FunctionVersion"] == "2"
    assert rel.running_image(lam, FN, "live") == second

    calls: list[str] = []
    for op in ("UpdateFunctionCode", "PublishVersion", "UpdateAlias"):
        lam.meta.events.register(f"before-call.lambda.{op}", lambda op=op, **kw: calls.append(op))
    again = _release(lam, role, second)
    assert (again.changed, again.version, calls) == (False, "2", [])

    # moto's shortfall (module docstring): version 1's Code.ImageUri follows $LATEST ...
    assert lam.get_function(FunctionName=FN, Qualifier="1")["Code"]["ImageUri"] == second
    # ... its description, written at publish time, still says what it runs
    versions = rel.published_versions(lam, FN)
    assert {n: v.image for n, v in versions.items()} == {"1": first, "2": second}


def test_deployed_images_lists_latest_every_version_and_alias(
    lam: Any, role: str, images: list[str]
) -> None:
    first, second, third = images
    _release(lam, role, first)
    _release(lam, role, second)
    lam.update_alias(FunctionName=FN, Name="live", FunctionVersion="1")  # a hand rollback
    lam.update_function_code(FunctionName=FN, ImageUri=third)  # $LATEST moves on, unpublished
    found = rel.deployed_images(lam, FN)
    assert found[third] == f"Lambda function {FN}"
    assert found[first] == f"Lambda function {FN}:1 (alias live)"
    assert found[second] == f"Lambda function {FN}:2"
    assert rel.deployed_images(lam, "no-such-function") == {}


def test_drift_check_reads_the_alias_and_never_updates(
    lam: Any, role: str, images: list[str]
) -> None:
    first, second, _ = images
    _release(lam, role, first)  # what infrastructure code deployed
    calls: list[str] = []
    lam.meta.events.register("before-call.lambda.UpdateFunctionCode", lambda **kw: calls.append(1))
    spec = FunctionSpec(FN, "orders", alias="live", deploy="none")
    lagging = rel.drift_check(lam, spec, second)
    assert (lagging.in_sync, lagging.image, lagging.version, calls) == (False, first, "1", [])
    assert rel.drift_check(lam, spec, first).in_sync
    missing = rel.drift_check(lam, FunctionSpec("absent", "orders", deploy="none"), first)
    assert (missing.image, missing.in_sync) == (None, False)


def test_ssm_publish_writes_once_and_overwrites_on_a_new_image(
    aws: boto3.Session, images: list[str]
) -> None:
    ssm = aws.client("ssm")
    name = "/build-assets/dev/orders/image-uri"
    text = description_of("git-aaaaaaaaaaaa", "a" * 64, "f" * 40)
    assert publish_image(ssm, name, images[0], text).changed
    assert not publish_image(ssm, name, images[0], text).changed
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == images[0]
    assert publish_image(ssm, name, images[1], description_of("git-b", "b", None)).changed
    history = ssm.get_parameter_history(Name=name)["Parameters"]
    assert [h["Value"] for h in history] == images[:2]
    assert parse_description(history[0]["Description"]) == {
        "tag": "git-aaaaaaaaaaaa",
        "version": "a" * 64,
        "commit": "f" * 40,
    }


MANIFEST = """\
images:
  orders:
    dockerfile: Dockerfile
    lambda:
      - plain-fn
      - {name: live-fn, alias: live}
      - {name: infra-fn, alias: prod, deploy: none}
  refunds:
    dockerfile: Dockerfile
    lambda: refunds-fn
"""


def test_lambda_items_as_names_and_mappings() -> None:
    manifest = parse_manifest(MANIFEST, "images.yaml")
    assert manifest.images["orders"].lambdas == ("plain-fn", "live-fn", "infra-fn")
    assert manifest.images["refunds"].lambdas == ("refunds-fn",)
    specs = function_specs(manifest)
    assert specs["plain-fn"] == FunctionSpec("plain-fn", "orders")
    assert specs["live-fn"] == FunctionSpec("live-fn", "orders", "live", "direct")
    assert specs["infra-fn"].owned_by_infrastructure and specs["infra-fn"].alias == "prod"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "images:\n  a:\n    dockerfile: D\n    lambda: [{name: f, alias: '12'}]\n",
            "images.yaml: image 'a', field 'lambda': function 'f': bad alias '12' (Lambda takes"
            " 1-128 letters, digits, '-' or '_', not only digits)",
        ),
        (
            "images:\n  a:\n    dockerfile: D\n    lambda: [{name: f, alias: 'a b'}]\n",
            "images.yaml: image 'a', field 'lambda': function 'f': bad alias 'a b' (Lambda takes"
            " 1-128 letters, digits, '-' or '_', not only digits)",
        ),
        (
            "images:\n  a:\n    dockerfile: D\n    lambda: f\n"
            "  b:\n    dockerfile: D\n    lambda: [{name: f, alias: live}]\n",
            "images.yaml: image 'b', field 'lambda': function 'f' is already deployed by image 'a'",
        ),
        (
            "publish: {ssm: '/x/{image}/{nope}'}\nimages:\n  a:\n    dockerfile: D\n",
            "images.yaml: field 'publish.ssm': bad template '/x/{image}/{nope}' (placeholders:"
            " {image}, {env}; 'nope')",
        ),
        (
            "publish: {ssm: '/build-assets/shared'}\nimages:\n  a:\n    dockerfile: D\n",
            "images.yaml: field 'publish.ssm': '/build-assets/shared' must contain {image} (each"
            " image needs its own parameter)",
        ),
    ],
)
def test_bad_deploy_fields_are_one_line(text: str, line: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(text, "images.yaml")
    assert err.value.lines == [line]


def test_bad_deploy_value_names_the_field() -> None:
    text = "images:\n  a:\n    dockerfile: D\n    lambda: [{name: f, deploy: sometimes}]\n"
    with pytest.raises(ManifestError) as err:
        parse_manifest(text, "images.yaml")
    assert len(err.value.lines) == 1
    assert "field 'lambda." in err.value.lines[0] and "'sometimes'" in err.value.lines[0]


def test_publish_off_and_default_names() -> None:
    from build_assets.core.functions import ssm_name, ssm_template

    on = parse_manifest("images:\n  a:\n    dockerfile: D\n", "images.yaml")
    assert ssm_name(ssm_template(on), "prod", "a") == "/build-assets/prod/a/image-uri"
    off = parse_manifest("publish: {ssm: false}\nimages:\n  a:\n    dockerfile: D\n", "m")
    assert ssm_template(off) is None


def test_deployer_policy_is_least_privilege_and_idempotent(aws: boto3.Session) -> None:
    specs = list(function_specs(parse_manifest(MANIFEST, "images.yaml")).values())
    params = ["/build-assets/dev/orders/image-uri", "/build-assets/dev/refunds/image-uri"]

    def run(functions=specs) -> list:
        return bootstrap(
            ["orders", "refunds"],
            bucket="bkt",
            functions=functions,
            parameters=params,
            sleep=lambda s: None,
        )

    assert run()[-1].status == "created"
    iam = aws.client("iam")
    arn = f"arn:aws:iam::{ACCOUNT}:policy/{dp.policy_name('dev')}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    by_sid = {s["Sid"]: s for s in (json.loads(doc) if isinstance(doc, str) else doc)["Statement"]}
    fn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
    assert by_sid["PublishImageUris"]["Action"] == ["ssm:GetParameter", "ssm:PutParameter"]
    assert by_sid["PublishImageUris"]["Resource"] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{p}" for p in params
    ]
    # infra-fn (deploy: none) is read, never updated; only live-fn releases through an alias
    assert by_sid["DeployFunctions"]["Resource"] == [
        f"{fn}{n}" for n in ("live-fn", "plain-fn", "refunds-fn")
    ]
    assert by_sid["ReleaseThroughAliases"]["Resource"] == [f"{fn}live-fn", f"{fn}live-fn:*"]
    assert f"{fn}infra-fn" in by_sid["ReadFunctions"]["Resource"]
    assert all(
        a.startswith("lambda:Get") or a.startswith("lambda:List")
        for a in by_sid["ReadFunctions"]["Action"]
    )
    assert by_sid["ReadDeployedImages"]["Resource"] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{r}" for r in ("orders", "refunds")
    ]
    assert all(r != "*" for s in by_sid.values() for r in s["Resource"])

    assert run()[-1].status == "unchanged"
    fewer = [s for s in specs if s.name != "live-fn"]
    assert run(fewer)[-1].status == "updated"
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert sum(v["IsDefaultVersion"] for v in versions) == 1 and len(versions) == 2


def test_new_lambda_fields_change_no_version(tmp_path) -> None:
    from build_assets.core.versioning import worktree_versions
    from tests.gitutil import LAMBDA_HARMONIZE, commit_all, replace_in, seed_repo

    repo = seed_repo(tmp_path / "repo")
    before = {img.name: img.version for img in worktree_versions(repo)}
    replace_in(
        repo,
        "images.yaml",
        f"lambda: {LAMBDA_HARMONIZE}",
        f"lambda: [{{name: {LAMBDA_HARMONIZE}, alias: live, deploy: none}}]",
    )
    with open(repo / "images.yaml", "a") as fh:
        fh.write("publish: {ssm: false}\n")
    commit_all(repo, "deploy fields")
    after = worktree_versions(repo)
    assert {img.name: img.version for img in after} == before
    assert function_specs(after.manifest)[LAMBDA_HARMONIZE].owned_by_infrastructure


def test_rollback_falls_back_to_the_build_records(aws: boto3.Session, tmp_path, monkeypatch):
    """No published version and no journal entry: the newest other successful build."""
    from build_assets.engine.records import SUCCEEDED, BuildRecord, BuildRecords
    from build_assets.engine.rollback import rollback
    from build_assets.project import Project
    from tests.gitutil import HARMONIZE, LAMBDA_HARMONIZE, seed_repo

    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "state"))
    project = Project.from_env(repo=str(seed_repo(tmp_path / "repo")), registry=REGISTRY)
    aws.client("ecr").create_repository(repositoryName=HARMONIZE)
    old, new = (push_image(aws, HARMONIZE, f"git-{c * 12}") for c in "ab")
    repository = project.repository(HARMONIZE)
    lam = aws.client("lambda")
    lam.create_function(
        FunctionName=LAMBDA_HARMONIZE,
        PackageType="Image",
        Code={"ImageUri": f"{repository}@{new}"},
        Role=ensure_local_execution_role(aws.client("iam")),
    )
    records = BuildRecords(project.settings.records_path)
    for tag, digest in (("git-aaaaaaaaaaaa", old), ("git-bbbbbbbbbbbb", new)):
        records.add(BuildRecord(HARMONIZE, tag[4:], tag, REGISTRY, SUCCEEDED, digest=digest))
    done = rollback(project, LAMBDA_HARMONIZE)
    assert (done.old, done.new) == (f"{repository}@{new}", f"{repository}@{old}")
    assert lam.get_function(FunctionName=LAMBDA_HARMONIZE)["Code"]["ImageUri"] == done.new
    version = project.versions()[HARMONIZE].version
    assert done.held_at == version
    # held at the current version: the stale rule leaves it alone (registry look-ups aside)
    from build_assets.engine.function_deploy import settle_stale

    versions = project.versions()
    fn = next(t for t in project.targets(versions) if t.name == LAMBDA_HARMONIZE)
    assert settle_stale(project, versions, [fn], {HARMONIZE: new}) == []
    other = type(fn)(fn.kind, fn.name, fn.image, "0" * 64)  # a new version ends the hold
    assert settle_stale(project, versions, [other], {HARMONIZE: new}) == [other]


def test_publishing_is_best_effort_and_tried_once_when_ssm_is_down(tmp_path, monkeypatch):
    """SSM unreachable (a closed port): every image is still built and yielded ok, with the
    reason; the run stops trying after the first failure. The simulated builder stands in
    for Docker here: what is under test is the run's publishing, not the build."""
    import socket

    from build_assets.engine.build_run import BuildRun
    from build_assets.engine.builders.simulated import SimulatedBuilder
    from build_assets.project import Project
    from build_assets.settings import Settings
    from tests.gitutil import seed_repo

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    settings = Settings.resolve(
        repo=str(seed_repo(tmp_path / "repo")), registry="reg.test", home=str(tmp_path / "s")
    )
    project = Project(settings, builder=SimulatedBuilder())
    versions = project.versions()
    images = [t for t in project.targets(versions) if t.is_image]
    calls: list[str] = []
    monkeypatch.setattr(
        "build_assets.engine.publish.publish_image",
        lambda *a, _real=publish_image: calls.append(a[1]) or _real(*a),
    )
    done = list(BuildRun(project, versions, images).execute())
    assert sorted(d.target.name for d in done) == sorted(t.name for t in images)
    assert all(d.ok and d.published is None for d in done)
    assert all("cannot reach" in (d.publish_error or "") for d in done)
    assert calls == ["/build-assets/dev/base-receipt-dynamo/image-uri"]
