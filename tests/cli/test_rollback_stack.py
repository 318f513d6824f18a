"""Deploys through an alias, a function owned by infrastructure code, SSM publishing, rollback
and gc, end to end on the real local stack (dockerd builds, the registry, moto for Lambda and
SSM), through the CLI and a real Dagster instance (the CLI's own, under BUILD_ASSETS_HOME).

One scenario, one tiny image, three versions of it: the steps depend on each other.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from build_assets.aws.clients import make_client
from build_assets.dagster.sensor import stale_at
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine import registry as reg
from build_assets.project import Project
from tests.cli.test_plan_cli import run_cli
from tests.gitutil import commit_all, make_repo, prepend

pytestmark = pytest.mark.stack

LIVE, INFRA, PLAIN = "rb-app-live", "rb-app-infra", "rb-app-plain"
MANIFEST = f"""\
images:
  app:
    dockerfile: app/Dockerfile
    source_paths: [app]
    lambda:
      - {{name: {LIVE}, alias: live}}
      - {{name: {INFRA}, deploy: none}}
      - {PLAIN}
"""
FILES = {
    "images.yaml": MANIFEST,
    "app/Dockerfile": "FROM scratch\nCOPY app/handler.py /var/task/\n",
    "app/handler.py": "def handler(event, context):\n    return 1\n",
}


def _cli(world, *args: str):
    repo, home, registry = world
    return run_cli(*args, cwd=repo, home=home, registry=registry)


def _ok(world, *args: str) -> str:
    proc = _cli(world, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _one_line_error(world, *args: str) -> str:
    proc = _cli(world, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def _new_version(repo: Path, note: str) -> None:
    prepend(repo, "app/handler.py", f"# {note}")
    commit_all(repo, note)


@pytest.fixture
def world(stack_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # the CLI's instance: <home>/dagster
    registry = f"{stack_env.registry}/rb-{uuid.uuid4().hex[:8]}"
    repo = make_repo(tmp_path / "repo", FILES)
    return repo, tmp_path / "state", registry


def test_alias_deploys_rollback_holds_and_gc_keeps_published_versions(world) -> None:
    repo, home, registry = world
    lam, ssm = make_client("lambda"), make_client("ssm")
    repository = f"{registry}/app"
    parameter = "/build-assets/dev/app/image-uri"

    # 1. first build: published to SSM; the alias function is created at version 1
    _ok(world, "materialize", "--json")
    first = ssm.get_parameter(Name=parameter)["Parameter"]
    uri1 = first["Value"]
    assert uri1.startswith(f"{repository}@sha256:")
    assert uri1 == f"{repository}@{reg.manifest_digest(repository, _tag(world))}"
    assert lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"] == "1"
    # infrastructure code creates its function from the parameter (docs/deploy.md)
    role = lam.get_function(FunctionName=LIVE)["Configuration"]["Role"]
    lam.create_function(FunctionName=INFRA, PackageType="Image", Code={"ImageUri": uri1}, Role=role)
    # a function with no earlier image cannot be rolled back: one line
    assert "has no earlier image" in _one_line_error(world, "rollback", LIVE)

    # 2. a new version: the alias moves to version 2; the infrastructure's function is not
    #    touched, and `status` shows it lags
    _new_version(repo, "v2")
    _ok(world, "materialize", "--json")
    uri2 = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    assert uri2 != uri1
    assert lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"] == "2"
    assert lam.get_function(FunctionName=INFRA)["Code"]["ImageUri"] == uri1
    full = json.loads(_ok(world, "status", "--json"))
    (image,) = full["images"]
    assert (image["ssm_parameter"], image["published"]) == (parameter, True)
    status = {f["function"]: f for f in full["lambdas"]}
    assert status[INFRA]["deploy"] == "none" and not status[INFRA]["up_to_date"]
    assert status[INFRA]["current_image_uri"] == uri1
    assert status[LIVE]["up_to_date"] and status[LIVE]["alias"] == "live"

    # 3. rollback: one line, the alias back on version 1, observed in Dagster
    out = _ok(world, "rollback", LIVE)
    assert out == f"{LIVE}:live: {uri2} -> {uri1}\n"
    assert lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"] == "1"
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        (obs,) = instance.fetch_observations(AssetKey(["lambda", LIVE]), limit=5).records
        meta = obs.asset_observation.metadata
        assert (meta["rollback_from"].value, meta["rollback_to"].value) == (uri2, uri1)

    #    a plain function ($LATEST, no versions) goes back to what the journal says it ran
    assert _ok(world, "rollback", PLAIN) == f"{PLAIN}: {uri2} -> {uri1}\n"
    assert lam.get_function(FunctionName=PLAIN)["Code"]["ImageUri"] == uri1
    assert lam.list_versions_by_function(FunctionName=PLAIN)["Versions"][-1]["Version"] == "$LATEST"

    # 4. the rollback holds: nothing is stale (the sensor asks the same rule), and even an
    #    explicit materialize leaves the alias where the rollback put it
    assert "Nothing is stale" in _ok(world, "materialize")
    project = Project.from_env(repo=str(repo), registry=registry, home=str(home))
    versions = project.versions()
    assert stale_at(project, versions, ImageAssetTranslator()) == []
    _ok(world, "materialize", "--select", LIVE, "--json")
    assert lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"] == "1"
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(AssetKey(["lambda", LIVE]))
        meta = event.asset_materialization.metadata
        assert meta["held_by_rollback"].value is True and meta["image_uri"].value == uri1
    status = {f["function"]: f for f in json.loads(_ok(world, "status", "--json"))["lambdas"]}
    assert status[LIVE]["held"]["image_uri"] == uri1
    assert _ok(world, "status").count("held by a rollback") == 2

    # 5. infrastructure code catches up; gc keeps every image a published version or alias
    #    runs, however small --keep is: v1 only runs behind alias live (version 1)
    lam.update_function_code(FunctionName=INFRA, ImageUri=uri2)
    tags = {reg.manifest_digest(repository, t): t for t in reg.list_tags(repository)}
    tag1, tag2 = (tags[u.split("@", 1)[1]] for u in (uri1, uri2))
    # the plain function forward to v2 by tag (still held): only LIVE:1 runs v1 now
    assert _ok(world, "rollback", PLAIN, "--to", tag2) == f"{PLAIN}: {uri1} -> {uri2}\n"
    _new_version(repo, "v3 (not built yet)")
    (image,) = json.loads(_ok(world, "status", "--json"))["images"]
    assert image["published"] is False  # not built yet, so not published
    report = json.loads(_ok(world, "gc", "--json", "--keep", "1"))["repositories"][0]
    assert (report["kept"], report["deleted"]) == ([tag2], [])
    assert report["protected"] == {tag1: f"Lambda function {LIVE}:1 (alias live)"}
    assert {tag1, tag2} <= set(reg.list_tags(repository))

    # 6. a new image version ends the hold: the alias moves to the new version
    _ok(world, "materialize", "--json")
    uri3 = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    assert uri3 not in (uri1, uri2)
    alias = lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"]
    assert alias == "3" and lam.get_function(FunctionName=LIVE, Qualifier="live")
    status = {f["function"]: f for f in json.loads(_ok(world, "status", "--json"))["lambdas"]}
    assert status[LIVE]["held"] is None and status[LIVE]["up_to_date"]
    assert lam.get_function(FunctionName=PLAIN)["Code"]["ImageUri"] == uri3

    # 7. rollback --to a tag, then --release; bad input is one line each
    assert _ok(world, "rollback", LIVE, "--to", tag1) == f"{LIVE}:live: {uri3} -> {uri1}\n"
    assert _ok(world, "rollback", LIVE, "--release") == f"{LIVE}: hold released\n"
    _ok(world, "materialize", "--json")  # released: the current version goes out again
    assert lam.get_alias(FunctionName=LIVE, Name="live")["FunctionVersion"] == "3"
    assert "not a Lambda function" in _one_line_error(world, "rollback", "nope")
    assert "deploy: none" in _one_line_error(world, "rollback", INFRA)
    assert "is not in" in _one_line_error(world, "rollback", LIVE, "--to", "git-000000000000")


def _tag(world) -> str:
    repo, home, registry = world
    return Project.from_env(repo=str(repo), registry=registry).versions()["app"].tag
