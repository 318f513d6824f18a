"""End to end on the real local stack: Docker engine + OCI registry + moto (S3/IAM/Lambda).

The seed's test plan, run through Dagster exactly as `build-assets demo` runs it, asserting
from build records, registry tags and Lambda functions — not from our own summaries alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from build_assets.aws.clients import make_client
from build_assets.cli.demo import SEED_STEPS, run_demo
from build_assets.engine.records import BuildRecords
from build_assets.engine.registry import manifest_digest

pytestmark = pytest.mark.stack

BASES = {"base-receipt-dynamo", "base-receipt-label", "base-receipt-agent"}
HARMONIZE = "metadata-harmonizer-harmonize"
CREATE = "create-labels-create"
ALL_IMAGES = BASES | {HARMONIZE, CREATE}
FN_HARMONIZE = "metadata-harmonizer-dev-harmonize-metadata"
FN_CREATE = "create-labels-dev-create"


def _function_image(name: str) -> str:
    client = make_client("lambda")  # a fresh session: it reads this test's AWS_ENDPOINT_URL
    return client.get_function(FunctionName=name)["Code"]["ImageUri"]


def test_seed_test_plan_end_to_end(stack_env, tmp_path: Path) -> None:
    images_after: dict[str, dict[str, str]] = {}

    def snapshot(report) -> None:
        images_after[report.name] = {
            FN_HARMONIZE: _function_image(FN_HARMONIZE),
            FN_CREATE: _function_image(FN_CREATE),
        }

    reports = {r.name: r for r in run_demo(tmp_path, namespace="e2e", on_step=snapshot)}
    assert [s.name for s in SEED_STEPS] == list(reports)
    for r in reports.values():
        assert r.success, r.problems

    initial = reports["Initial"]
    assert set(initial.built) == ALL_IMAGES and initial.cached == []
    assert set(initial.functions_updated) == {FN_HARMONIZE, FN_CREATE}

    # Test 1: a handler edit rebuilds exactly one Lambda image and updates its function only
    t1 = reports["Test 1"]
    assert t1.built == [HARMONIZE]
    assert t1.functions_updated == [FN_HARMONIZE]
    assert images_after["Test 1"][FN_CREATE] == images_after["Initial"][FN_CREATE]
    assert images_after["Test 1"][FN_HARMONIZE] != images_after["Initial"][FN_HARMONIZE]

    # Test 2: receipt_agent is not in any base: the Lambda image only, no base
    t2 = reports["Test 2"]
    assert t2.built == [HARMONIZE]
    assert not BASES & set(t2.built)

    # Test 3: receipt_dynamo is in every base: all bases, then every dependent Lambda image
    t3 = reports["Test 3"]
    assert set(t3.built) == ALL_IMAGES
    assert set(t3.functions_updated) == {FN_HARMONIZE, FN_CREATE}

    # Revert: original tags come back, nothing is built, functions point at the originals
    rev = reports["Revert"]
    # every tag is in the registry: nothing is built; the images Dagster recorded at Test 3's
    # versions are recorded again at the originals (cached), so nothing shows Unsynced
    assert rev.built == [] and set(rev.cached) == ALL_IMAGES
    assert set(rev.functions_updated) == {FN_HARMONIZE, FN_CREATE}
    assert rev.tags == initial.tags
    assert images_after["Revert"] == images_after["Initial"]

    # Independent evidence: build records and registry tags
    records = BuildRecords(tmp_path / "state" / "builds.sqlite").recent(100)
    real_builds = [r for r in records if not r.cached and r.status == "SUCCEEDED"]
    assert len(real_builds) == 5 + 1 + 1 + 5
    registry = stack_env.registry + "/e2e"
    for name, tag in initial.tags.items():
        assert manifest_digest(f"{registry}/{name}", tag) is not None

    # Lambda images are pinned by digest and built bases in dependency order
    assert "@sha256:" in images_after["Initial"][FN_HARMONIZE]
    order = [r.image for r in sorted(real_builds[-5:], key=lambda r: r.started_at)]
    assert order.index("base-receipt-dynamo") < order.index("base-receipt-label")
    assert order.index("base-receipt-label") < order.index("base-receipt-agent")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _failing_repo(root: Path) -> Path:
    on_base = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
    files = {
        "images.yaml": (
            "images:\n"
            "  base:\n    dockerfile: d/base/Dockerfile\n    source_paths: [pkg]\n"
            "  sibling:\n    dockerfile: d/sibling/Dockerfile\n    base: base\n"
            "  bad:\n    dockerfile: d/bad/Dockerfile\n    base: base\n"
            "  bad-child:\n    dockerfile: d/child/Dockerfile\n    base: bad\n"
        ),
        "pkg/a.py": "A = 1\n",
        "d/base/Dockerfile": "FROM scratch\nCOPY pkg /pkg\n",
        "d/sibling/Dockerfile": on_base + "COPY d/sibling/Dockerfile /s\n",
        # fails inside the build: the stage it copies from is in no registry that answers
        "d/bad/Dockerfile": on_base + "COPY --from=127.0.0.1:9/no/such:image /x /x\n",
        "d/child/Dockerfile": on_base + "COPY d/child/Dockerfile /c\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def test_failed_build_holds_back_dependents_not_siblings(stack_env, tmp_path: Path) -> None:
    from dagster import DagsterInstance

    from build_assets.dagster.location import load_versions
    from build_assets.dagster.materialize import all_keys, run_materialization, stale_keys
    from build_assets.dagster.resources import ImageBuildResource
    from build_assets.dagster.translator import ImageAssetTranslator

    repo = _failing_repo(tmp_path / "repo")
    resource = ImageBuildResource(
        repo=str(repo), registry=f"{stack_env.registry}/fail", backend="local"
    )
    tr = ImageAssetTranslator()
    with DagsterInstance.ephemeral() as instance:
        versions = load_versions(resource)
        first = run_materialization(
            all_keys(versions, tr), instance=instance, versions=versions, resource=resource
        )
        assert not first.success
        assert sorted(first.built) == ["base", "sibling"]
        problem = "\n".join(first.problems)
        assert "bad: build FAILED" in problem and "127.0.0.1:9" in problem  # log tail shown
        assert "bad-child: not built: base bad failed" in problem

        (repo / "d/bad/Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY d /y\n")
        versions = load_versions(resource)
        stale = stale_keys(resource.project(), versions, tr)
        assert sorted(k.path[-1] for k in stale) == ["bad", "bad-child"]
        second = run_materialization(stale, instance=instance, versions=versions, resource=resource)
        assert second.success, second.problems
        assert sorted(second.built) == ["bad", "bad-child"]
