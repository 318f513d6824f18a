"""The seed's test plan through the production backend, on the local stack.

`build-assets bootstrap --env dev` makes the bucket, ECR repositories and CodeBuild projects in
moto; every image is then built by the stack's local CodeBuild (context zip in S3, the
buildspec running build_image.sh, docker push, digest read back from ECR) and the functions
are pointed at the result. Each scenario is checked the way the seed's verification script
asks, from the AWS APIs only: which `<image>-dev-img-builder` projects got a new build
(`list_builds_for_project`), the base tags, each function's `Code.ImageUri`, and no build at
all on the revert. ECR is moto's, which the stack's registry (`stack.ecr_registry`) keeps in
step with every push, as ECR's own registry and API are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from build_assets.aws.clients import make_client
from build_assets.cli.demo import SEED_STEPS, make_demo_repo, run_demo
from build_assets.engine.registry import get_blob, get_manifest
from build_assets.stack.local import StackInfo

pytestmark = pytest.mark.stack

NAMESPACE = "cb-e2e"
BASES = ["base-receipt-dynamo", "base-receipt-label", "base-receipt-agent"]
HARMONIZE, CREATE = "metadata-harmonizer-harmonize", "create-labels-create"
IMAGES = [*BASES, HARMONIZE, CREATE]
FUNCTIONS = {
    HARMONIZE: "metadata-harmonizer-dev-harmonize-metadata",
    CREATE: "create-labels-dev-create",
}


def _project(image: str) -> str:
    return f"{image}-dev-img-builder"


class Aws:
    """The seed's verification questions, asked of the (local) AWS APIs."""

    def __init__(self) -> None:
        self.cb, self.ecr, self.fn = (make_client(s) for s in ("codebuild", "ecr", "lambda"))

    def builds(self) -> dict[str, list[str]]:
        return {
            i: self.cb.list_builds_for_project(projectName=_project(i), sortOrder="DESCENDING")[
                "ids"
            ]
            for i in IMAGES
        }

    def images(self, image: str) -> dict[str, str]:
        details = self.ecr.describe_images(repositoryName=f"{NAMESPACE}/{image}")["imageDetails"]
        return {t: d["imageDigest"] for d in details for t in d.get("imageTags", [])}

    def function_images(self) -> dict[str, str]:
        return {
            fn: self.fn.get_function(FunctionName=fn)["Code"]["ImageUri"]
            for fn in FUNCTIONS.values()
        }

    def build(self, build_id: str) -> dict[str, Any]:
        return self.cb.batch_get_builds(ids=[build_id])["builds"][0]


def _log(build: dict[str, Any]) -> str:
    events = make_client("logs").get_log_events(
        logGroupName=build["logs"]["groupName"], logStreamName=build["logs"]["streamName"]
    )["events"]
    return "".join(e["message"] for e in events)


def _labels(repository: str, tag: str) -> dict[str, str]:
    config = get_blob(repository, get_manifest(repository, tag)["config"]["digest"])
    return json.loads(config)["config"]["Labels"]


def test_seed_test_plan_through_the_local_codebuild(stack_env: StackInfo, tmp_path: Path) -> None:
    naming = f"\nnaming: {{repository: '{NAMESPACE}/{{image}}'}}\n"
    repo = make_demo_repo(tmp_path / "monorepo", manifest_extra=naming)
    env = {**os.environ, "BUILD_ASSETS_BACKEND": "codebuild"}
    boot = subprocess.run(
        [sys.executable, "-m", "build_assets", "bootstrap", "--env", "dev"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert boot.returncode == 0, boot.stderr
    # the bucket and the role may exist already (the session's moto is shared); these are new
    lines = set(boot.stdout.splitlines())
    for image in IMAGES:
        assert f"created      ecr-repository     {NAMESPACE}/{image}" in lines, boot.stdout
        assert f"created      codebuild-project  {_project(image)}" in lines, boot.stdout

    aws = Aws()
    assert aws.builds() == {i: [] for i in IMAGES}
    seen: dict[str, dict[str, Any]] = {}
    before = {"builds": aws.builds()}

    def snapshot(report: Any) -> None:
        seen[report.name] = {
            "builds": aws.builds(),
            "functions": aws.function_images(),
            "bases": {b: aws.images(b) for b in BASES},
            "tags": dict(report.tags),
        }

    reports = {
        r.name: r
        for r in run_demo(
            tmp_path, backend="codebuild", repo=repo, namespace=NAMESPACE, on_step=snapshot
        )
    }
    assert list(reports) == [s.name for s in SEED_STEPS]
    for r in reports.values():
        assert r.success, r.problems

    def new_builds(step: str, previous: dict[str, Any]) -> dict[str, list[str]]:
        now = seen[step]["builds"]
        return {i: now[i][: len(now[i]) - len(previous["builds"][i])] for i in IMAGES if now[i]}

    def rebuilt(step: str, previous: dict[str, Any]) -> set[str]:
        return {i for i, ids in new_builds(step, previous).items() if ids}

    # Initial: one build per project, each SUCCEEDED; what it exported is what ECR has and
    # what the function runs
    assert rebuilt("Initial", before) == set(IMAGES)
    initial = seen["Initial"]
    for image in IMAGES:
        (build_id,) = initial["builds"][image]
        build = aws.build(build_id)
        assert build["buildStatus"] == "SUCCEEDED" and build["currentPhase"] == "COMPLETED"
        exported = {v["name"]: v["value"] for v in build["exportedEnvironmentVariables"]}
        tag = initial["tags"][image]
        assert exported["BUILD_ASSETS_DIGEST"] == aws.images(image)[tag]
        if image in FUNCTIONS:
            uri = initial["functions"][FUNCTIONS[image]]
            assert uri == (
                f"{stack_env.registry}/{NAMESPACE}/{image}@{exported['BUILD_ASSETS_DIGEST']}"
            )

    # Test 1 and Test 2: only the harmonize project builds; base tags and ECR bases unchanged
    for step, previous in (("Test 1", initial), ("Test 2", seen["Test 1"])):
        assert rebuilt(step, previous) == {HARMONIZE}, step
        assert len(new_builds(step, previous)[HARMONIZE]) == 1
        now = seen[step]
        for base in BASES:
            assert now["tags"][base] == initial["tags"][base], (step, base)
            assert now["bases"][base] == initial["bases"][base], (step, base)
        assert now["functions"][FUNCTIONS[CREATE]] == previous["functions"][FUNCTIONS[CREATE]]
        assert now["functions"][FUNCTIONS[HARMONIZE]] != previous["functions"][FUNCTIONS[HARMONIZE]]

    # Test 3: every base and both Lambda images, each base built on the new one below it:
    # started after it ended, or started early and waited for its tag (docs/codebuild.md),
    # either way pinned by the digest ECR has for it
    t3 = seen["Test 3"]
    assert rebuilt("Test 3", seen["Test 2"]) == set(IMAGES)
    for lower, upper in zip(BASES, BASES[1:], strict=False):
        low, up = aws.build(t3["builds"][lower][0]), aws.build(t3["builds"][upper][0])
        pinned = f"{stack_env.registry}/{NAMESPACE}/{lower}@{aws.images(lower)[t3['tags'][lower]]}"
        waited = f"build_image: base {stack_env.registry}/{NAMESPACE}/{lower}:" in _log(up)
        assert up["startTime"] >= low["endTime"] or waited, (lower, upper)
        labels = _labels(f"{stack_env.registry}/{NAMESPACE}/{upper}", t3["tags"][upper])
        assert labels["org.build-assets.base-image"] == pinned
    for base in BASES:
        assert t3["tags"][base] != initial["tags"][base]
    for fn in FUNCTIONS.values():
        assert t3["functions"][fn] != seen["Test 2"]["functions"][fn]

    # Revert: no build started anywhere; the functions run the initial images again
    rev = seen["Revert"]
    assert rev["builds"] == t3["builds"]
    assert rev["tags"] == initial["tags"]
    assert rev["functions"] == initial["functions"]
    assert reports["Revert"].built == []

    # the build log is in CloudWatch where the build says
    last = aws.build(t3["builds"][HARMONIZE][0])
    events = make_client("logs").get_log_events(
        logGroupName=last["logs"]["groupName"], logStreamName=last["logs"]["streamName"]
    )["events"]
    text = "".join(e["message"] for e in events)
    assert f"BUILD_ASSETS_DIGEST={aws.images(HARMONIZE)[t3['tags'][HARMONIZE]]}" in text
