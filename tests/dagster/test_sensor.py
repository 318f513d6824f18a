"""`git_push_sensor` with a real bare remote, a developer clone pushing real commits, a
server clone the sensor fetches into, a real Dagster instance and real runs.

Builds use the simulated builder (a test double of the Builder protocol: no Docker here;
the local end-to-end tests cover real builds) and Lambda functions are deployed to the
real moto server of tests/aws_plugin.py."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    build_sensor_context,
    evaluate_automation_conditions,
)

from build_assets.core.versioning import commit_versions
from build_assets.dagster.assets import COMMIT_TAG
from build_assets.dagster.automation import (
    AutomatedImageAssetTranslator,
    image_automation_condition,
)
from build_assets.dagster.location import build_definitions, load_versions
from build_assets.dagster.materialize import all_keys, run_materialization
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.sensor import (
    build_git_push_sensor,
    ensure_sensor_ref,
    parse_cursor,
    run_key_for,
    sensor_ref,
)
from build_assets.dagster.translator import ImageAssetTranslator
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.errors import UserError
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
    resource = SimulatedBuilds(repo=str(server), backend="local", registry="reg.test")
    with DagsterInstance.ephemeral() as instance:
        yield dev, remote, server, resource, instance


def tick(world, cursor: str | None, remote: str | None = None, ref: str | None = None):
    """Evaluate one tick; return (run requests, skip message, new cursor).

    The code location is loaded from the server clone's working tree, or at `ref`."""
    dev, remote_path, server, resource, instance = world
    defs = build_definitions(resource, with_sensor=False, ref=ref)
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
        tags={**request.tags, "dagster/run_key": request.run_key},  # as the daemon tags it
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
    assert request.run_key.startswith(f"{sha}:") and request.tags[COMMIT_TAG] == sha
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
    assert len(requests) == 1 and requests[0].tags[COMMIT_TAG] == newest
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
    assert cursor == first and rewind.tags[COMMIT_TAG] == first and sha != first
    # the rewound image's tag is still in the registry: only its function must go back
    assert names(rewind.asset_selection) == {FN_HARMONIZE.path[-1]}
    summary = execute(world, rewind)
    assert summary.built == [] and summary.cached == []  # the old tag still exists
    assert summary.functions_updated == [FN_HARMONIZE.path[-1]]


def test_fetch_failure_is_a_skip_with_the_reason(world, tmp_path: Path) -> None:
    requests, skip, cursor = tick(world, None, remote=str(tmp_path / "no-such-remote"))
    assert requests == [] and "git fetch" in skip and cursor is None
    _, _, cursor = tick(world, None)
    requests, skip, same = tick(world, cursor, remote="http://127.0.0.1:1/monorepo.git")
    assert requests == [] and skip.startswith("git fetch") and same == cursor  # kept: retried


def test_run_pinned_to_its_commit_ignores_a_dirty_working_tree(world) -> None:
    dev, remote, server, resource, instance = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    sha = push(dev, remote, HANDLER, "# pushed change")
    # the server's working tree holds other, uncommitted content in the same context
    prepend(server, HANDLER, "# local edit on the server")
    (server / HANDLER).with_name("scratch.py").write_text("untracked = True\n")
    [request], _, _ = tick(world, cursor)
    execute(world, request)
    at_commit = commit_versions(server, sha)[HARMONIZE]
    worktree = load_versions(resource)[HARMONIZE]
    assert worktree.version != at_commit.version
    for key in (AssetKey(["image", HARMONIZE]), FN_HARMONIZE):
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.asset_materialization is not None
        meta = event.asset_materialization.metadata
        assert meta["version"].value == at_commit.version
    image_meta = instance.get_latest_materialization_event(
        AssetKey(["image", HARMONIZE])
    ).asset_materialization.metadata  # type: ignore[union-attr]
    assert image_meta["tag"].value == at_commit.tag
    assert image_meta["git_commit"].value == sha
    built = [r for r in BUILDER.started if r.image == HARMONIZE]
    assert built[-1].tag == at_commit.tag
    # the sensor compares with what was built: nothing left to do at this commit
    requests, skip, _ = tick(world, sha)
    assert requests == [] and "still at" in skip


def test_new_image_waits_for_the_location_to_know_it(world) -> None:
    dev, remote, server, resource, instance = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    (dev / "infra/extra").mkdir(parents=True)
    (dev / "infra/extra/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    manifest = dev / "images.yaml"
    manifest.write_text(
        manifest.read_text()
        + "  extra-image:\n    dockerfile: infra/extra/Dockerfile\n"
        + "    base: base-receipt-agent\n    source_paths: [infra/extra]\n"
        + "    lambda: extra-dev-fn\n"
    )
    sha = commit_all(dev, "new image")
    git(dev, "push", "-q", str(remote), "main")
    # the loaded location (server working tree) does not know the new keys yet
    requests, skip, cursor = tick(world, cursor)
    assert requests == [] and "already built" in skip
    commit, pending = parse_cursor(cursor)
    assert commit == sha and names(pending) == {"extra-image", "extra-dev-fn"}
    requests, skip, same = tick(world, cursor)
    assert requests == [] and "waiting for a code location reload" in skip
    # after a reload at the fetched ref, the next tick requests exactly the new assets
    [request], _, cursor = tick(world, cursor, ref=sensor_ref("main"))
    assert names(request.asset_selection) == {"extra-image", "extra-dev-fn"}
    assert request.tags[COMMIT_TAG] == sha and request.run_key.startswith(sha)
    assert cursor == sha
    requests, skip, _ = tick(world, cursor, ref=sensor_ref("main"))
    assert requests == [] and "still at" in skip


class _FakeWebserver:
    """Records GraphQL requests; answers a reload mutation with a loaded location."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.received = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(json.loads(body))
                answer = {
                    "data": {
                        "reloadRepositoryLocation": {
                            "__typename": "WorkspaceLocationEntry",
                            "locationOrLoadError": {"__typename": "RepositoryLocation"},
                        }
                    }
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                outer.received.set()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_branch_move_asks_the_webserver_to_reload(world, monkeypatch) -> None:
    dev, remote, *_ = world
    web = _FakeWebserver()
    try:
        monkeypatch.setenv("BUILD_ASSETS_WEBSERVER", web.address)
        monkeypatch.setenv("BUILD_ASSETS_LOCATION_NAME", "build_assets")
        _, _, cursor = tick(world, None)  # first tick: the branch "moved" from nothing
        assert web.received.wait(30)
        [first] = web.requests
        assert "reloadRepositoryLocation" in first["query"]
        assert first["variables"] == {"name": "build_assets"}
        web.received.clear()
        requests, skip, _ = tick(world, cursor)  # unchanged: no reload
        assert "still at" in skip and len(web.requests) == 1
        push(dev, remote, HANDLER, "# change")
        [request], _, _ = tick(world, cursor)
        assert web.received.wait(30) and len(web.requests) == 2
    finally:
        web.close()


def test_reload_failure_is_only_logged(world, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BUILD_ASSETS_WEBSERVER", "127.0.0.1:1")  # nothing listens there
    requests, skip, cursor = tick(world, None)
    assert cursor is not None and (requests or skip)


def test_unknown_cursor_commit_and_broken_manifest_do_not_crash(world) -> None:
    dev, remote, server, resource, instance = world
    materialize_everything(world)
    requests, skip, cursor = tick(world, "f" * 40)  # e.g. a cursor from another clone
    assert requests == [] and "already built" in skip
    (dev / "images.yaml").write_text("images: [not, a, mapping]\n")
    sha = commit_all(dev, "broken manifest")
    git(dev, "push", "-q", str(remote), "main")
    requests, skip, cursor = tick(world, cursor)
    assert requests == [] and skip.startswith(f"commit {sha[:12]}:") and cursor == sha


def test_sensor_from_the_environment_in_the_code_location(world, monkeypatch) -> None:
    dev, remote, server, resource, instance = world
    monkeypatch.setenv("BUILD_ASSETS_GIT_REMOTE", str(remote))
    monkeypatch.setenv("BUILD_ASSETS_GIT_BRANCH", "main")
    monkeypatch.setenv("BUILD_ASSETS_SENSOR_INTERVAL", "15")
    defs = build_definitions(resource)
    sensor_def = defs.resolve_sensor_def("git_push_sensor")
    assert sensor_def.minimum_interval_seconds == 15
    materialize_everything(world)
    sha = push(dev, remote, HANDLER, "# via env config")
    context = build_sensor_context(
        instance=instance, resources={"image_builds": resource}, definitions=defs
    )
    data = sensor_def.evaluate_tick(context)
    [request] = data.run_requests or []
    assert request.tags[COMMIT_TAG] == sha and data.cursor == sha
    assert request.tags["build-assets/branch"] == "main"


def test_default_remote_is_the_clones_origin(world) -> None:
    dev, remote, server, resource, instance = world
    sha = push(dev, remote, HANDLER, "# via origin")
    sensor_def = build_git_push_sensor()  # origin / main
    context = build_sensor_context(
        instance=instance,
        resources={"image_builds": resource},
        definitions=build_definitions(resource, with_sensor=False),
    )
    data = sensor_def.evaluate_tick(context)
    assert data.cursor == sha and len(data.run_requests or []) == 1


def test_push_to_run_requested_latency(world, capsys) -> None:
    dev, remote, *_ = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    push(dev, remote, HANDLER, "# timed")
    start = time.perf_counter()
    [request], _, cursor = tick(world, cursor)
    took = time.perf_counter() - start
    start = time.perf_counter()
    _, skip, _ = tick(world, cursor)
    idle = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n  sensor tick after a push: {took:.3f}s; idle tick: {idle:.3f}s")
    assert took < 15 and idle < 15  # generous: shared CI machines


def test_automation_condition_requests_the_changed_image_and_dependents(tmp_path: Path) -> None:
    repo = seed_repo(tmp_path / "repo")
    resource = ImageBuildResource(repo=str(repo))
    translator = AutomatedImageAssetTranslator()
    defs = build_definitions(resource, translator, with_sensor=False)
    specs = {s.key: s for a in defs.assets or [] for s in a.specs}  # type: ignore[union-attr]
    assert all(s.automation_condition == image_automation_condition() for s in specs.values())
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing changed since the first look
        prepend(repo, HANDLER, "# handler")
        defs = build_definitions(resource, translator, with_sensor=False)
        handler = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = {k for k in specs if handler.get_num_requested(k)}
        assert names(requested) == {HARMONIZE, FN_HARMONIZE.path[-1]}
        again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=handler.cursor)
        assert again.total_requested == 0
        prepend(repo, DYNAMO, "# base")
        defs = build_definitions(resource, translator, with_sensor=False)
        base = evaluate_automation_conditions(defs=defs, instance=instance, cursor=again.cursor)
        requested = {k for k in specs if base.get_num_requested(k)}
        assert names(requested) == {
            *ALL_IMAGES,
            "metadata-harmonizer-dev-harmonize-metadata",
            "create-labels-dev-create",
        }


def test_location_tracking_the_sensor_ref_can_load_after_ensure(world) -> None:
    dev, remote, server, resource, instance = world
    assert git(server, "for-each-ref", sensor_ref("main")) == ""
    with pytest.raises(UserError, match="unknown git ref"):
        build_definitions(resource, ref=sensor_ref("main"), with_sensor=False)
    tip = ensure_sensor_ref(server, str(remote), "main")
    assert tip == git(dev, "rev-parse", "HEAD")
    assert ensure_sensor_ref(server, "no-such-remote", "main") == tip  # exists: no fetch
    defs = build_definitions(resource, ref=sensor_ref("main"), with_sensor=False)
    assert defs.resolve_asset_graph().get_all_asset_keys()


def test_rewind_to_a_commit_that_had_a_run_requests_a_new_run(world) -> None:
    """A -> B -> force-push A: A's run key was used, yet Lambda must go back to A's image."""
    dev, remote, server, resource, instance = world
    materialize_everything(world)
    _, _, cursor = tick(world, None)
    a = push(dev, remote, HANDLER, "# A")
    [run_a], _, cursor = tick(world, cursor)
    execute(world, run_a)
    push(dev, remote, HANDLER, "# B")
    [run_b], _, cursor = tick(world, cursor)
    execute(world, run_b)
    git(dev, "reset", "-q", "--hard", a)
    git(dev, "push", "-q", "--force", str(remote), "main")
    [again], _, cursor = tick(world, cursor)
    used = {r.tags.get("dagster/run_key") for r in instance.get_runs()}
    assert again.tags[COMMIT_TAG] == a and again.run_key not in used and cursor == a
    assert names(again.asset_selection) == {FN_HARMONIZE.path[-1]}  # A's image is built
    # a retried tick (same state) gets the same key: Dagster's dedup still protects retries
    assert run_key_for(a, list(again.asset_selection), instance) == again.run_key
    summary = execute(world, again)
    assert summary.cached == [] and summary.functions_updated == [FN_HARMONIZE.path[-1]]
    assert run_key_for(a, list(again.asset_selection), instance) != again.run_key
