"""ECR lifecycle policies written by `bootstrap`, against a real moto server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from build_assets.aws.bootstrap import bootstrap
from build_assets.aws.bootstrap_actions import Action
from build_assets.aws.bootstrap_inputs import manifest_lifecycle
from build_assets.aws.ecr_lifecycle import DEFAULT_KEEP, DEFAULT_UNTAGGED_DAYS, KEPT_PREFIXES
from build_assets.core.manifest import load_manifest
from tests.aws.test_bootstrap import BUCKET, _no_sleep
from tests.gitutil import seed_repo

IMAGES = ["base-a", "svc-b"]


def _run(aws: boto3.Session, **kw) -> dict[str, Action]:
    actions = bootstrap(IMAGES, None, bucket=BUCKET, session=aws, sleep=_no_sleep, **kw)
    return {a.name: a for a in actions if a.kind == "ecr-repository"}


def _policy(aws: boto3.Session, repository: str) -> dict:
    text = aws.client("ecr").get_lifecycle_policy(repositoryName=repository)
    return json.loads(text["lifecyclePolicyText"])


def test_new_repositories_get_the_policy_and_a_rerun_changes_nothing(aws) -> None:
    _run(aws, keep_versions=25, untagged_days=3)
    for repo in IMAGES:
        rules = {r["rulePriority"]: r["selection"] for r in _policy(aws, repo)["rules"]}
        assert rules[1] == {
            "tagStatus": "untagged",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": 3,
        }
        assert rules[2]["tagPrefixList"] == ["git-"]
        assert rules[2]["countType"] == "imageCountMoreThan" and rules[2]["countNumber"] == 25
        assert {r["tagPrefixList"][0] for p, r in rules.items() if p > 1} == set(KEPT_PREFIXES)
    again = _run(aws, keep_versions=25, untagged_days=3)
    assert {a.status for a in again.values()} == {"unchanged"}


def test_changed_numbers_update_the_policy_dry_run_only_reports(aws) -> None:
    _run(aws)
    planned = _run(aws, keep_versions=4, dry_run=True)
    assert planned["svc-b"].status == "updated"
    assert planned["svc-b"].changes == ("lifecycle policy (keep 4, untagged 7d)",)
    assert _policy(aws, "svc-b")["rules"][1]["selection"]["countNumber"] == DEFAULT_KEEP
    _run(aws, keep_versions=4)
    assert _policy(aws, "svc-b")["rules"][1]["selection"]["countNumber"] == 4


def test_an_existing_repository_without_a_policy_gets_one(aws) -> None:
    aws.client("ecr").create_repository(repositoryName="svc-b", imageTagMutability="IMMUTABLE")
    aws.client("ecr").put_image_scanning_configuration(
        repositoryName="svc-b", imageScanningConfiguration={"scanOnPush": True}
    )
    actions = _run(aws)
    assert actions["svc-b"].status == "updated"
    assert actions["svc-b"].changes == ("lifecycle policy (keep 10, untagged 7d)",)


def test_numbers_come_from_the_manifest(tmp_path: Path) -> None:
    repo = seed_repo(tmp_path / "repo")
    manifest = repo / "images.yaml"
    assert manifest_lifecycle(load_manifest(manifest, repo)) == (
        DEFAULT_KEEP,
        DEFAULT_UNTAGGED_DAYS,
    )
    manifest.write_text(manifest.read_text() + "lifecycle: {keep: 30, untagged_days: 2}\n")
    assert manifest_lifecycle(load_manifest(manifest, repo)) == (30, 2)
