"""After a revert or a force-push back to built commits, Dagster shows nothing Unsynced (issue 18).

The registry is the truth for "built": at a reverted commit every image's tag is still in the
registry, so only the Lambda functions are stale by that rule. Yet the images' latest
materializations in Dagster carry the newer code versions, and the UI would show every image
Unsynced with nothing to build. `materialize`, the git sensor and the automation condition
therefore also select the targets whose Dagster-recorded code version differs from the
current one; their run records them as `cached` (no build), and Dagster's own staleness
(GraphQL `assetNodes { staleStatus }`) is FRESH everywhere afterwards.

Real parts: the stack's Docker engine, registry and moto; real git repositories; real Dagster
instances (on disk, so the GraphQL workspace can read them). The two commits' images are
built once for the module (c0, and c1 with a change to the package in every base); each test
then records them in its own Dagster instance, which costs registry look-ups only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions

from build_assets.dagster.assets import COMMIT_TAG
from build_assets.dagster.automation import AutomatedImageAssetTranslator
from build_assets.dagster.location import build_definitions, load_versions
from build_assets.dagster.materialize import all_keys, run_materialization
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.sensor import build_git_push_sensor, ensure_sensor_ref, sensor_ref
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.project import Project
from build_assets.stack.local import StackInfo
from tests.gitutil import (
    ALL_IMAGES,
    DYNAMO,
    LAMBDA_CREATE,
    LAMBDA_HARMONIZE,
    clone,
    commit_all,
    git,
    prepend,
    seed_repo,
)
from tests.staleness import stale_statuses

pytestmark = pytest.mark.stack

IMAGE_KEYS = {f"image/{name}" for name in ALL_IMAGES}
LAMBDA_KEYS = {f"lambda/{LAMBDA_HARMONIZE}", f"lambda/{LAMBDA_CREATE}"}
FUNCTIONS = {LAMBDA_HARMONIZE, LAMBDA_CREATE}


class Built:
    """The module's monorepo: commit c0, and c1 (receipt_dynamo edited: every image changes),
    both built for real in `registry`."""

    def __init__(self, repo: Path, c0: str, c1: str, registry: str) -> None:
        self.repo, self.c0, self.c1, self.registry = repo, c0, c1, registry


@pytest.fixture(scope="module")
def built(local_stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("revert")
    registry = f"{local_stack.registry}/revert-{uuid.uuid4().hex[:8]}"
    repo = seed_repo(work / "repo")
    c0 = git(repo, "rev-parse", "HEAD")
    prepend(repo, DYNAMO, "# in every base")
    c1 = commit_all(repo, "dynamo change")
    for commit in (c0, c1):
        project = Project.from_env(repo=str(repo), registry=registry, home=str(work / "state"))
        versions = project.versions(commit)
        outcomes = project.scheduler().run(versions, ALL_IMAGES)
        assert {o.name: o.status for o in outcomes} == dict.fromkeys(ALL_IMAGES, "built")
    return Built(repo, c0, c1, registry)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A Dagster instance on disk (the GraphQL workspace needs one it can hand to a process)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.local_temp(str(home)) as inst:
        yield inst


def _keys(keys) -> set[str]:
    return {k.to_user_string() for k in keys}


def _statuses(instance: DagsterInstance, resource: ImageBuildResource, ref: str | None = None):
    """Staleness as the UI shows it, for the location loaded at `ref` (else the working tree)."""
    defs = build_definitions(resource, ref=ref, with_sensor=False, with_checks=False)
    return stale_statuses(instance, defs)


# --- build-assets materialize --------------------------------------------------------------


def _materialize(repo: Path, built: Built, dagster_home: Path, *args: str) -> dict:
    env = {
        **os.environ,  # stack_env: DOCKER_HOST, AWS_* of the stack's moto, BUILD_ASSETS_HOME
        "BUILD_ASSETS_REGISTRY": built.registry,
        "DAGSTER_HOME": str(dagster_home),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "build_assets", "materialize", "--json", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_materialize_after_a_revert_records_the_images_cached_and_nothing_is_unsynced(
    built: Built, stack_env: StackInfo, tmp_path: Path
) -> None:
    repo = clone(built.repo, tmp_path / "work")
    home = tmp_path / "dagster_home"
    for commit in (built.c0, built.c1):  # recorded in Dagster at c0, then at c1
        git(repo, "checkout", "-q", commit)
        summary = _materialize(repo, built, home, "--all")
        assert summary["built"] == [] and sorted(summary["cached"]) == sorted(ALL_IMAGES)
    git(repo, "checkout", "-q", built.c0)  # the revert
    resource = ImageBuildResource(repo=str(repo), registry=built.registry)
    with DagsterInstance.from_ref(_ref(home)) as instance:
        before = _statuses(instance, resource)
    # every image recorded at c1, loaded at c0: Unsynced in the UI, though all tags exist
    assert {k for k, s in before.items() if s == "STALE"} == IMAGE_KEYS | LAMBDA_KEYS, before

    summary = _materialize(repo, built, home)  # the default: what is stale
    assert summary["built"] == []  # nothing to build: every tag is in the registry
    assert sorted(summary["cached"]) == sorted(ALL_IMAGES)  # recorded again, at c0
    assert set(summary["functions_updated"]) == FUNCTIONS  # back on c0's images
    with DagsterInstance.from_ref(_ref(home)) as instance:
        after = _statuses(instance, resource)
        entries = instance.all_logs(summary["run_id"])
    assert after == dict.fromkeys(IMAGE_KEYS | LAMBDA_KEYS, "FRESH"), after
    # the run's plan: one short log line, the table as markdown metadata of an observation
    line = "Plan at the working tree: 0 to build, 5 cached, 0 blocked"
    assert line in [e.user_message for e in entries]
    [observed] = [e.asset_observation for e in entries if e.asset_observation]
    assert observed.description == line
    rows = re.findall(
        r"^\| (\S+) \| (\w+) \| \S+ \| (\w+) \|", observed.metadata["plan"].value, re.M
    )
    assert sorted(r for r in rows if r[0] != "target") == sorted(  # the header row
        [(name, "image", "cached") for name in ALL_IMAGES]
        + [(fn, "lambda", "deploy") for fn in FUNCTIONS]
    )
    assert _materialize(repo, built, home) == {"stale": [], "message": "nothing is stale"}


def _ref(home: Path):
    from dagster._core.instance.ref import InstanceRef

    return InstanceRef.from_dir(str(home))


# --- the git sensor ------------------------------------------------------------------------


def test_sensor_after_a_force_push_back_requests_the_images_as_cached(
    built: Built, stack_env: StackInfo, tmp_path: Path, instance: DagsterInstance
) -> None:
    """The server follows the branch (BUILD_ASSETS_REF = the sensor's ref): the location,
    and each run's load, see the fetched commit, so runs record the commit's code versions."""
    dev = clone(built.repo, tmp_path / "dev")
    git(dev, "reset", "-q", "--hard", built.c0)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(dev, "push", "-q", str(remote), "HEAD:main")
    server = clone(remote, tmp_path / "server")
    ref = sensor_ref("main")
    resource = ImageBuildResource(  # BUILD_ASSETS_REF: the location follows the fetched tip
        repo=str(server), registry=built.registry, home=str(tmp_path / "state"), ref=ref
    )
    sensor = build_git_push_sensor(remote=str(remote), branch="main")

    def tick(cursor: str | None):
        from dagster import build_sensor_context

        defs = build_definitions(resource, ref=ref, with_sensor=False, with_checks=False)
        context = build_sensor_context(
            instance=instance, cursor=cursor, resources={"image_builds": resource}, definitions=defs
        )
        data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.cursor

    def execute(request):  # as the daemon runs it: the location loaded at the sensor's ref
        summary = run_materialization(
            request.asset_selection,
            instance=instance,
            versions=load_versions(resource, ref),
            resource=resource,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        assert summary.success, summary.problems
        return summary

    ensure_sensor_ref(server, str(remote), "main")  # the location loads at this ref
    _, cursor = tick(None)  # at c0
    versions = load_versions(resource, ref)
    run_materialization(
        all_keys(versions, ImageAssetTranslator()),
        instance=instance,
        versions=versions,
        resource=resource,
    )
    git(dev, "reset", "-q", "--hard", built.c1)
    git(dev, "push", "-q", str(remote), "HEAD:main")
    [forward], cursor = tick(cursor)
    # c1's tags are in the registry too: its images are selected for their recorded versions
    assert _keys(forward.asset_selection) == IMAGE_KEYS | LAMBDA_KEYS
    assert execute(forward).built == []

    git(dev, "reset", "-q", "--hard", built.c0)
    git(dev, "push", "-q", "--force", str(remote), "HEAD:main")
    [back], cursor = tick(cursor)
    assert back.tags[COMMIT_TAG] == built.c0 and cursor == built.c0
    assert _keys(back.asset_selection) == IMAGE_KEYS | LAMBDA_KEYS  # not only the functions
    before = _statuses(instance, resource, ref)
    assert {k for k, s in before.items() if s == "STALE"} == IMAGE_KEYS | LAMBDA_KEYS, before
    summary = execute(back)
    assert summary.built == [] and sorted(summary.cached) == sorted(ALL_IMAGES)
    assert set(summary.functions_updated) == FUNCTIONS
    after = _statuses(instance, resource, ref)
    assert after == dict.fromkeys(IMAGE_KEYS | LAMBDA_KEYS, "FRESH"), after
    requests, _ = tick(cursor)
    assert requests == []  # the tip did not move


# --- the automation condition --------------------------------------------------------------


def test_automation_requests_the_reverted_images_once_and_nothing_is_unsynced(
    built: Built, stack_env: StackInfo, tmp_path: Path, instance: DagsterInstance
) -> None:
    """Materialized at c1 by another process (a CLI run, a click) between two evaluations
    that both load c0: `code_version_changed()` sees no change, the records do."""
    repo = clone(built.repo, tmp_path / "work")
    git(repo, "checkout", "-q", built.c0)
    resource = ImageBuildResource(
        repo=str(repo), registry=built.registry, home=str(tmp_path / "state")
    )
    translator = AutomatedImageAssetTranslator()

    def defs():
        return build_definitions(resource, translator, with_sensor=False, with_checks=False)

    def run(keys) -> None:
        versions = load_versions(resource)
        summary = run_materialization(keys, instance=instance, versions=versions, resource=resource)
        assert summary.success and summary.built == [], summary

    first = evaluate_automation_conditions(defs=defs(), instance=instance)
    run(all_keys(load_versions(resource), translator))  # recorded at c0
    settled = evaluate_automation_conditions(defs=defs(), instance=instance, cursor=first.cursor)
    git(repo, "checkout", "-q", built.c1)
    run(all_keys(load_versions(resource), translator))  # another process, at c1
    git(repo, "checkout", "-q", built.c0)  # reverted before the next evaluation
    assert {k for k, s in stale_statuses(instance, defs()).items() if s == "STALE"} == (
        IMAGE_KEYS | LAMBDA_KEYS
    )

    result = evaluate_automation_conditions(defs=defs(), instance=instance, cursor=settled.cursor)
    keys = [AssetKey.from_user_string(k) for k in IMAGE_KEYS | LAMBDA_KEYS]
    requested = {k for k in keys if result.get_num_requested(k)}
    # the root base too: eager() never requests it (no dependency was updated) and its
    # loaded code version equals the previous evaluation's
    assert _keys(requested) == IMAGE_KEYS | LAMBDA_KEYS
    run(sorted(requested, key=lambda k: list(translator.keys(load_versions(resource))).index(k)))
    assert stale_statuses(instance, defs()) == dict.fromkeys(IMAGE_KEYS | LAMBDA_KEYS, "FRESH")
    again = evaluate_automation_conditions(defs=defs(), instance=instance, cursor=result.cursor)
    assert again.total_requested == 0  # recorded at c0 now: nothing more to ask


def test_resync_selects_only_targets_recorded_at_another_version() -> None:
    from build_assets.core.targets import IMAGE, LAMBDA, Target, resync_targets

    same, moved, never = (Target(IMAGE, n, n, "v2") for n in ("same", "moved", "never"))
    fn = Target(LAMBDA, "fn", "moved", "v2")
    recorded = {same: "v2", moved: "v1", never: None, fn: "v1"}
    assert resync_targets([same, moved, never, fn], recorded) == [moved, fn]
    assert resync_targets([same, moved], {}) == []  # nothing recorded: the registry decides
