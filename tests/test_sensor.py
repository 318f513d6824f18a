"""`git_push_sensor` with a real bare remote, a developer clone pushing real commits, a
server clone the sensor fetches into, a real Dagster instance and real runs.

Builds use the simulated builder (a test double of the Builder protocol: no Docker here;
the local end-to-end tests cover real builds) and Lambda functions are deployed to the
real moto server of tests/aws_plugin.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, build_sensor_context

from build_assets.assets import COMMIT_TAG
from build_assets.builders.simulated import SimulatedBuilder
from build_assets.location import build_definitions, load_versions
from build_assets.resources import ImageBuildResource
from build_assets.runner import all_keys, run_materialization
from build_assets.sensor import build_git_push_sensor
from build_assets.translator import ImageAssetTranslator
from build_assets.versioning import commit_versions
from tests.gitutil import (
    AGENT,
    ALL_IMAGES,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    commit_all,
    git,
    prepend,
    seed_repo,
)

BUILDER = SimulatedBuilder()
FN_HARMONIZE = AssetKey(["lambda", "metadata-harmonizer-dev-harmonize-metadata"])


class SimulatedBuilds(ImageBuildResource):
    """The real resource, with the simulated builder and a fixed registry."""

    def make_builder(self):
        return BUILDER

    def registry_prefix(self) -> str:
        return "reg.test"


@pytest.fixture
def world(tmp_path: Path, aws, monkeypatch):
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "TRUE")  # images live in no ECR here
    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("BUILD_ASSETS_REF", raising=False)
    BUILDER.pushed.clear()
    dev = seed_repo(tmp_path / "dev")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(dev, "push", "-q", str(remote), "main")
    server = tmp_path / "server"
    subprocess.run(["git", "clone", "-q", str(remote), str(server)], check=True)
    resource = SimulatedBuilds(repo=str(server), backend="local")
    with DagsterInstance.ephemeral() as instance:
        yield dev, remote, server, resource, instance


def tick(world, cursor: str | None, remote: str | None = None):
    """Evaluate one tick; return (run requests, skip message, new cursor)."""
    dev, remote_path, server, resource, instance = world
    defs = build_definitions(resource, with_sensor=False)
    sensor_def = build_git_push_sensor(remote=remote or str(remote_path), branch="main")
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"image_builds": resource}, definitions=defs
    )
    data = sensor_def.evaluate_tick(context)
    return list(data.run_requests or []), data.skip_message, data.cursor


def execute(world, request: RunRequest):
    """Run a requested run the way the daemon would: the server's code, the run's tags."""
    dev, remote, server, resource, instance = world
    versions = load_versions(resource)  # the server's working tree, not the pushed commit
    summary = run_materialization(
        request.asset_selection,
        instance=instance,
        versions=versions,
        resource=resource,
        tags=dict(request.tags),
    )
    assert summary.success, summary.problems
    return summary


def push(dev: Path, remote: Path, rel: str, line: str) -> str:
    prepend(dev, rel, line)
    sha = commit_all(dev, f"edit {rel}")
    git(dev, "push", "-q", str(remote), "main")
    return sha


def names(keys) -> set[str]:
    return {k.path[-1] for k in keys}


def materialize_everything(world) -> str:
    dev, remote, server, resource, instance = world
    versions = load_versions(resource)
    run_materialization(
        all_keys(versions, ImageAssetTranslator()),
        instance=instance,
        versions=versions,
        resource=resource,
    )
    return git(server, "rev-parse", "HEAD")


def test_no_change_push_requests_no_run(world) -> None:
    head = materialize_everything(world)
    requests, skip, cursor = tick(world, None)
    assert requests == [] and "already built" in skip and cursor == head
    requests, skip, cursor = tick(world, cursor)
    assert requests == [] and "still at" in skip
    dev, remote, *_ = world
    (dev / "README.md").write_text("docs only\n")  # outside every context
    sha = commit_all(dev, "docs")
    git(dev, "push", "-q", str(remote), "main")
    requests, skip, cursor = tick(world, cursor)
    assert requests == [] and cursor == sha


def test_handler_push_runs_that_image_and_its_function_at_the_commit(world) -> None:
    dev, remote, server, resource, instance = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    sha = push(dev, remote, HANDLER, "# handler change")
    [request], _, cursor = tick(world, cursor)
    assert names(request.asset_selection) == {HARMONIZE, FN_HARMONIZE.path[-1]}
    assert request.run_key == sha and request.tags[COMMIT_TAG] == sha
    summary = execute(world, request)
    # the commit's content was built, not the server's (unchanged) working tree
    assert summary.built == [HARMONIZE]
    assert summary.tags[HARMONIZE] == commit_versions(server, sha)[HARMONIZE].tag
    assert summary.tags[HARMONIZE] != load_versions(resource)[HARMONIZE].tag
    requests, skip, _ = tick(world, cursor)
    assert requests == [] and "still at" in skip


def test_base_push_runs_everything(world) -> None:
    dev, remote, *_ = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    push(dev, remote, DYNAMO, "# dynamo change")
    [request], _, _ = tick(world, cursor)
    assert names(request.asset_selection) == {
        *ALL_IMAGES,
        "metadata-harmonizer-dev-harmonize-metadata",
        "create-labels-dev-create",
    }


def test_two_pushes_between_ticks_make_one_run_for_the_newest(world) -> None:
    dev, remote, *_ = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    push(dev, remote, HANDLER, "# first")
    newest = push(dev, remote, AGENT, "# second")
    requests, _, cursor = tick(world, cursor)
    assert len(requests) == 1 and requests[0].run_key == newest
    assert names(requests[0].asset_selection) == {HARMONIZE, FN_HARMONIZE.path[-1]}
    assert cursor == newest


def test_force_push_rewind_is_compared_with_what_is_built(world) -> None:
    dev, remote, *_ = world
    first = materialize_everything(world)
    _, _, cursor = tick(world, None)
    sha = push(dev, remote, HANDLER, "# to be rewound")
    [request], _, cursor = tick(world, cursor)
    execute(world, request)
    git(dev, "reset", "-q", "--hard", first)
    git(dev, "push", "-q", "--force", str(remote), "main")
    [rewind], _, cursor = tick(world, cursor)
    assert cursor == first and rewind.run_key == first and sha != first
    assert names(rewind.asset_selection) == {HARMONIZE, FN_HARMONIZE.path[-1]}
    summary = execute(world, rewind)
    assert summary.built == [] and summary.cached == [HARMONIZE]  # the old tag still exists


def test_fetch_failure_is_a_skip_with_the_reason(world, tmp_path: Path) -> None:
    requests, skip, cursor = tick(world, None, remote=str(tmp_path / "no-such-remote"))
    assert requests == [] and "git fetch" in skip and cursor is None
