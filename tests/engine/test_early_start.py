"""Early start on the stack's local CodeBuild, with provisioning: a dependent's build starts
before its base ends, waits for the base's tag and pins the digest it resolved; a base that
fails stops its early-started dependents (STOPPED in CodeBuild, `blocked` in our report).

The estimates handed to the scheduler are deliberately too short (the base is expected to end
half a second after it starts): the dependent starts almost at once and can only be right by
waiting. Nothing is stubbed: real builds, real registry, the CodeBuild API over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from build_assets.aws.bootstrap import bootstrap
from build_assets.aws.clients import bucket_name, make_client, make_session
from build_assets.core.versioning import worktree_versions
from build_assets.engine.builders.codebuild import CodeBuildBuilder
from build_assets.engine.builders.local import LocalDockerBuilder
from build_assets.engine.early_start import EarlyStartPlan, lead_from_builds
from build_assets.engine.registry import get_blob, get_manifest
from build_assets.engine.scheduler import BLOCKED, BUILT, BuildScheduler
from build_assets.stack.local import StackInfo, set_codebuild_knobs
from tests.aws.test_codebuild_failures import DEFAULT_KNOBS, _log_lines, _repo
from tests.images import shell_image

ON_BASE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
TOO_EARLY = 0.5  # seconds: every estimate handed to the scheduler here is far too short


@pytest.fixture
def provisioning(stack_env: StackInfo) -> Iterator[None]:
    """Every local CodeBuild build spends 3 s in PROVISIONING."""
    address = stack_env.services["codebuild"].address
    set_codebuild_knobs(address, provisioning_s=3)
    yield
    set_codebuild_knobs(address, **DEFAULT_KNOBS)


def _run(
    stack_env: StackInfo, repo: Path, images: list[str], estimates: dict[str, float]
) -> tuple[dict[str, Any], list[str]]:
    bootstrap(images, env="dev")
    session = make_session()
    builder = CodeBuildBuilder(
        bucket_name(session, "dev", None),
        "dev",
        session=session,
        poll_interval=0.5,
        max_poll_interval=1.0,
    )
    events: list[str] = []
    scheduler = BuildScheduler(
        builder, stack_env.registry, max_concurrent=4, estimates=estimates, on_event=events.append
    )
    versions = worktree_versions(repo)
    return {o.name: o for o in scheduler.run(versions, images)}, events


def _build(build_id: str) -> dict[str, Any]:
    return make_client("codebuild").batch_get_builds(ids=[build_id])["builds"][0]


def _labels(image_uri: str) -> dict[str, str]:
    repository, tag = image_uri.rsplit(":", 1)
    manifest = get_manifest(repository, tag)
    return json.loads(get_blob(repository, manifest["config"]["digest"]))["config"]["Labels"]


def test_a_dependent_starts_early_waits_for_its_base_and_pins_its_digest(
    stack_env: StackInfo, tmp_path: Path, provisioning: None
) -> None:
    shell = shell_image(stack_env.registry, tmp_path, "es-shell")
    repo = _repo(
        tmp_path / "repo",
        {
            "es-base": {"dockerfile": "d/base/Dockerfile"},
            "es-app": {"dockerfile": "d/app/Dockerfile", "base": "es-base"},
        },
        {
            "d/base/Dockerfile": f"FROM {shell}\nRUN sleep 2\nCOPY d/base/Dockerfile /b\n",
            "d/app/Dockerfile": ON_BASE + "COPY d/app/Dockerfile /a\n",
        },
    )
    outcomes, events = _run(stack_env, repo, ["es-base", "es-app"], {"es-base": TOO_EARLY})
    assert {n: o.status for n, o in outcomes.items()} == {"es-base": BUILT, "es-app": BUILT}
    assert any(e.startswith("es-app: starting early") for e in events)
    base, app = outcomes["es-base"].result, outcomes["es-app"].result
    assert base is not None and app is not None
    base_build, app_build = _build(base.build_id or ""), _build(app.build_id or "")
    assert app_build["startTime"] < base_build["endTime"]  # started while its base built
    log = _log_lines(app_build)
    assert any(line.startswith("build_image: waiting for base") for line in log)
    assert f"build_image: base {base.image_uri} is {base.pinned_uri}" in " ".join(log)
    # what a base-first build is given as BASE_IMAGE, recorded in the image's provenance
    labels = _labels(app.image_uri)
    assert labels["org.build-assets.base-image"] == base.pinned_uri
    assert labels["org.build-assets.base-version"] == outcomes["es-base"].image.version


def test_a_failed_base_stops_its_early_started_dependents_as_blocked(
    stack_env: StackInfo, tmp_path: Path, provisioning: None
) -> None:
    shell = shell_image(stack_env.registry, tmp_path, "esf-shell")
    repo = _repo(
        tmp_path / "repo",
        {
            "esf-base": {"dockerfile": "d/base/Dockerfile"},
            "esf-app": {"dockerfile": "d/app/Dockerfile", "base": "esf-base"},
            "esf-leaf": {"dockerfile": "d/leaf/Dockerfile", "base": "esf-app"},
        },
        {
            "d/base/Dockerfile": f"FROM {shell}\nRUN sleep 2 && exit 1\n",
            "d/app/Dockerfile": ON_BASE + "COPY d/app/Dockerfile /a\n",
            "d/leaf/Dockerfile": ON_BASE + "COPY d/leaf/Dockerfile /l\n",
        },
    )
    images = ["esf-base", "esf-app", "esf-leaf"]
    estimates = {n: TOO_EARLY for n in images}
    outcomes, events = _run(stack_env, repo, images, estimates)
    assert outcomes["esf-base"].status == "failed"
    assert {n: (outcomes[n].status, outcomes[n].reason) for n in ("esf-app", "esf-leaf")} == {
        "esf-app": (BLOCKED, "base esf-base failed"),
        "esf-leaf": (BLOCKED, "base esf-app failed"),
    }
    cb = make_client("codebuild")
    for name in ("esf-app", "esf-leaf"):
        assert any(e.startswith(f"{name}: starting early") for e in events)
        ids = cb.list_builds_for_project(projectName=f"{name}-dev-img-builder")["ids"]
        assert len(ids) == 1
        stopped = _until_complete(cb, ids[0])
        assert stopped["buildStatus"] == "STOPPED"


def _until_complete(cb: Any, build_id: str) -> dict[str, Any]:
    from tests.aws.test_codebuild_failures import _until

    done: Callable[[], Any] = lambda: (  # noqa: E731
        (b := cb.batch_get_builds(ids=[build_id])["builds"][0])["buildComplete"] and b
    )
    return _until(done, 30, f"build {build_id} to end")


# -- the plan's arithmetic, and who starts early --------------------------------------------


def _cb_build(status: str, **phases: float) -> dict[str, Any]:
    return {
        "buildStatus": status,
        "phases": [{"phaseType": k, "durationInSeconds": v} for k, v in phases.items()],
    }


def test_lead_is_the_median_start_up_of_recent_successful_builds() -> None:
    builds = [
        _cb_build("SUCCEEDED", QUEUED=1, PROVISIONING=20, DOWNLOAD_SOURCE=2, BUILD=50),
        _cb_build("FAILED", QUEUED=1, PROVISIONING=200, BUILD=1),
        _cb_build("SUCCEEDED", QUEUED=0, PROVISIONING=30, DOWNLOAD_SOURCE=1, BUILD=40),
        _cb_build("SUCCEEDED", QUEUED=5, PROVISIONING=40, DOWNLOAD_SOURCE=3, BUILD=40),
    ]
    assert lead_from_builds(builds) == 31  # 23, 31, 48: the failed build does not count
    assert lead_from_builds([]) is None


def test_a_chain_starts_each_level_its_lead_before_its_base_should_push() -> None:
    estimates = {"a": 100.0, "b": 60.0, "c": 60.0}
    bases = {"b": "a", "c": "b"}
    plan = EarlyStartPlan(estimates, lambda n: 20.0, bases.get, margin=0.0)
    plan.started["a"] = 1000.0
    assert plan.start_time("b", "a") == 1080.0  # a should end at 1100
    plan.started["b"] = 1080.0
    # b waits for a (until 1100), then works 60 - 20 s: ends at 1140; c starts at 1120
    assert plan.expected_end("b") == 1140.0
    assert plan.start_time("c", "b") == 1120.0
    unknown = EarlyStartPlan({}, lambda n: None, bases.get)
    unknown.started["a"] = 1000.0
    assert unknown.start_time("b", "a") is None  # no estimate of the base: base-first
    margin = EarlyStartPlan(estimates, lambda n: 20.0, bases.get, margin=0.5)
    margin.started["a"] = 1000.0
    assert margin.start_time("b", "a") == 1070.0  # half the lead earlier still


def test_only_a_builder_with_a_start_up_cost_starts_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # a builder made offline needs one
    local = LocalDockerBuilder(work_dir=tmp_path)
    assert not BuildScheduler(local, "reg").early_start
    codebuild = CodeBuildBuilder("bucket", "dev", s3=1, codebuild=1, ecr=1, logs=1)
    assert BuildScheduler(codebuild, "reg").early_start
    assert not BuildScheduler(codebuild, "reg", early_start=False).early_start
