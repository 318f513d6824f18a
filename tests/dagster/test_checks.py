"""Asset checks on a real Dagster instance, a real git repo and the real moto server:
drift of a Lambda function (pointed at another image through the AWS API directly), the
registry check, ECR scan findings, and the stopped schedule of the periodic checks.

Builds use the simulated builder (as tests/dagster/test_sensor.py);
tests/dagster/test_component.py runs the
checks after real builds on the local stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    materialize,
)

from build_assets.dagster.assets import build_images_asset
from build_assets.dagster.checks import DRIFT, IN_REGISTRY, build_image_checks, scan_check
from build_assets.dagster.location import build_definitions, load_versions
from build_assets.dagster.resources import ImageBuildResource
from build_assets.engine.builders.simulated import SimulatedBuilder
from tests.aws_plugin import push_image
from tests.gitutil import ALL_IMAGES, HARMONIZE, LAMBDA_HARMONIZE, seed_repo

BUILDER = SimulatedBuilder()
FN = AssetKey(["lambda", LAMBDA_HARMONIZE])
IMG = AssetKey(["image", HARMONIZE])


class SimulatedBuilds(ImageBuildResource):
    def make_builder(self):
        return BUILDER


@pytest.fixture
def world(tmp_path: Path, aws, monkeypatch):
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "TRUE")  # images live in no ECR here
    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("BUILD_ASSETS_REF", raising=False)
    BUILDER.pushed.clear()
    repo = seed_repo(tmp_path / "repo")
    resource = SimulatedBuilds(repo=str(repo), backend="local", registry="reg.test")
    defs = build_definitions(resource, with_sensor=False)
    with DagsterInstance.ephemeral() as instance:
        yield defs, resource, instance, aws


def run(world, selection) -> None:
    defs, resource, instance, _ = world
    versions = load_versions(resource)
    result = materialize(
        [build_images_asset(versions), build_image_checks(versions)],
        instance=instance,
        resources={"image_builds": resource},
        selection=selection,
        raise_on_error=False,
    )
    assert result.success


def latest(world, key: AssetKey, name: str):
    instance = world[2]
    found = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [AssetCheckKey(key, name)]
    )
    record = found[AssetCheckKey(key, name)]
    return record.event.asset_check_evaluation


def test_drift_fails_naming_both_images_then_passes_after_rematerializing(world) -> None:
    defs, resource, instance, session = world
    everything = AssetSelection.assets(
        *defs.get_repository_def().asset_graph.materializable_asset_keys
    )
    run(world, everything)  # builds, deploys; the checks of every asset run in the same run
    evaluation = latest(world, FN, DRIFT)
    assert evaluation.passed, evaluation.description
    deployed = evaluation.metadata["expected_image"].value
    assert deployed.startswith(f"reg.test/{HARMONIZE}@sha256:")
    for name in ALL_IMAGES:
        assert latest(world, AssetKey(["image", name]), IN_REGISTRY).passed

    # someone deploys another image by hand, with the AWS API
    other = "reg.test/hand-made@sha256:" + "e" * 64
    session.client("lambda").update_function_code(FunctionName=LAMBDA_HARMONIZE, ImageUri=other)
    run(world, AssetSelection.checks(AssetCheckKey(FN, DRIFT)))  # on demand: checks only
    evaluation = latest(world, FN, DRIFT)
    assert not evaluation.passed
    assert evaluation.severity == AssetCheckSeverity.ERROR
    assert other in evaluation.description and deployed in evaluation.description
    assert evaluation.metadata["running_image"].value == other

    run(world, AssetSelection.assets(FN))  # re-materialize the function: its check runs too
    evaluation = latest(world, FN, DRIFT)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["running_image"].value == deployed


def test_registry_check_fails_when_the_tag_moved(world) -> None:
    defs, resource, instance, _ = world
    run(world, AssetSelection.assets(*[AssetKey(["image", n]) for n in ALL_IMAGES]))
    assert latest(world, IMG, IN_REGISTRY).passed
    uri = next(u for u in BUILDER.pushed if f"/{HARMONIZE}:" in u)
    BUILDER.pushed[uri] = "sha256:" + "0" * 64  # the tag now names another manifest
    run(world, AssetSelection.checks(AssetCheckKey(IMG, IN_REGISTRY)))
    evaluation = latest(world, IMG, IN_REGISTRY)
    assert not evaluation.passed and "sha256:" + "0" * 64 in evaluation.description
    del BUILDER.pushed[uri]
    run(world, AssetSelection.checks(AssetCheckKey(IMG, IN_REGISTRY)))
    assert "is not in the registry" in latest(world, IMG, IN_REGISTRY).description


def test_periodic_checks_schedule_is_stopped_and_selects_registry_and_drift(world) -> None:
    defs = world[0]
    (schedule,) = defs.schedules
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    job = defs.get_job_def(schedule.job_name)
    names = {k.name for k in job.asset_layer.asset_graph.asset_check_keys}
    assert names >= {IN_REGISTRY, DRIFT}


def test_scan_findings_on_ecr(aws) -> None:
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName="scanned")
    digest = push_image(aws, "scanned", "git-abc")
    recorded = {
        "image_uri": "123.dkr.ecr.us-east-1.amazonaws.com/scanned:git-abc",
        "digest": digest,
    }
    key = AssetKey(["image", "scanned"])
    before = scan_check(key, recorded, fail_on="CRITICAL", warn_on="HIGH", ecr=ecr)
    assert not before.passed and before.severity == AssetCheckSeverity.WARN
    assert "no scan findings" in (before.description or "")
    ecr.start_image_scan(repositoryName="scanned", imageId={"imageDigest": digest})
    warned = scan_check(key, recorded, fail_on="CRITICAL", warn_on="HIGH", ecr=ecr)
    assert not warned.passed and warned.severity == AssetCheckSeverity.WARN
    assert warned.metadata["high"].value >= 1 and warned.metadata["critical"].value == 0
    failed = scan_check(key, recorded, fail_on="HIGH", warn_on="MEDIUM", ecr=ecr)
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
