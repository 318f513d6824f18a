"""External base images in the lineage, on the real local stack: the local registry plays the
upstream registry. A real image is pushed there, the monorepo's base Dockerfile uses it, a
`bases.lock` pins its digest; observations through a real Dagster instance record the digest
as the data version, and the pinned check fails, naming both digests, once upstream moves."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
)

from build_assets.dagster.location import build_definitions
from build_assets.dagster.resources import ImageBuildResource
from build_assets.dagster.upstream import CHECK, GROUP, build_upstream_assets, upstream_key
from build_assets.engine.registry import manifest_digest
from tests.gitutil import commit_all, seed_repo

pytestmark = pytest.mark.stack

DYNAMO_DOCKERFILE = "infra/base_images/dynamo/Dockerfile"


def push_upstream(registry: str, ref: str, content: str, tmp: Path) -> str:
    """Build a tiny image with the engine, push it to `registry/ref`, return its digest."""
    ctx = tmp / uuid.uuid4().hex
    ctx.mkdir()
    (ctx / "release").write_text(content)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY release /release\n")
    image = f"{registry}/{ref}"
    subprocess.run(
        ["docker", "build", "-q", "-t", image, str(ctx)], check=True, capture_output=True
    )
    subprocess.run(["docker", "push", "-q", image], check=True, capture_output=True)
    repository, tag = image.rsplit(":", 1)
    digest = manifest_digest(repository, tag)
    assert digest
    return digest


def test_external_base_is_an_observed_root_with_a_pinned_check(stack_env, tmp_path: Path) -> None:
    ref = f"{stack_env.registry}/up{uuid.uuid4().hex[:8]}/python:3.12"
    first = push_upstream(stack_env.registry, ref.split("/", 1)[1], "3.12.0", tmp_path)
    repo = seed_repo(tmp_path / "repo")
    (repo / DYNAMO_DOCKERFILE).write_text(
        f"# DynamoDB access layer on Python.\nFROM {ref}\n"
        "COPY receipt_dynamo /var/task/receipt_dynamo\n"
    )
    (repo / "bases.lock").write_text(f"bases:\n  {ref}: {first}\n")
    commit_all(repo, "external base")
    resource = ImageBuildResource(repo=str(repo), registry=stack_env.registry)

    defs = build_definitions(resource, with_sensor=False)
    graph = defs.get_repository_def().asset_graph
    key = upstream_key(ref)
    node = graph.get(key)
    assert node.group_name == GROUP and not node.parent_keys
    dynamo = graph.get(AssetKey(["image", "base-receipt-dynamo"]))
    assert key in dynamo.parent_keys
    assert dynamo.description == "DynamoDB access layer on Python."

    settings = resource.settings()
    upstream_def = build_upstream_assets(resource.project().versions(), settings.manifest)
    observe_job = Definitions(
        assets=[upstream_def], jobs=[define_asset_job("observe", AssetSelection.assets(key))]
    ).get_job_def("observe")
    with DagsterInstance.ephemeral() as instance:

        def observe_once():
            result = observe_job.execute_in_process(instance=instance, raise_on_error=False)
            assert result.success
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [AssetCheckKey(key, CHECK)]
            )[AssetCheckKey(key, CHECK)]
            event = instance.fetch_observations(key, limit=1).records[0]
            observation = event.asset_observation
            return observation.tags["dagster/data_version"], record.event.asset_check_evaluation

        version, check = observe_once()
        assert version == first and check.passed, check.description

        moved = push_upstream(stack_env.registry, ref.split("/", 1)[1], "3.12.1", tmp_path)
        assert moved != first
        version, check = observe_once()
        assert version == moved
        assert not check.passed
        assert "behind upstream" in check.description
        assert first in check.description and moved in check.description


PINNED = "sha256:" + "a" * 64
LOCKED = "sha256:" + "b" * 64


def test_a_digest_pinned_from_gets_one_answer_from_the_lock_and_the_upstream_assets(
    tmp_path: Path,
) -> None:
    """`FROM repo@sha256:…` is an external base pinned where it is named: the lock's rule and
    the upstream assets read it alike (one rule, `core.lock.image_bases`); the lock pins only
    the tag reference, the upstream asset of the pinned one carries the Dockerfile's digest.
    No registry is asked (nothing is observed)."""
    from build_assets.core import lock
    from build_assets.core.versioning import worktree_versions
    from build_assets.dagster import upstream
    from tests.gitutil import make_repo

    repo = make_repo(
        tmp_path / "repo",
        {
            "images.yaml": "images:\n  app:\n    dockerfile: app/Dockerfile\n",
            "app/Dockerfile": (
                f"FROM example.com/tools/python@{PINNED} AS py\n"
                "FROM example.com/lambda/base:1\nCOPY --from=py /x /x\n"
            ),
            "bases.lock": f"bases:\n  example.com/lambda/base:1: {LOCKED}\n",
        },
    )
    versions = worktree_versions(repo)
    image = versions["app"]
    spec = image.spec
    by_lock = lock.image_bases(
        image.dockerfile, spec.build_args, spec.base, spec.base_arg, versions.manifest.images
    )
    assert upstream.image_bases(versions, "app") == by_lock
    assert [(e.reference, e.digest) for e in by_lock] == [
        ("example.com/tools/python", PINNED),
        ("example.com/lambda/base:1", None),
    ]
    # the lock pins (and the version hashes) only the one not pinned where it is named
    assert [e.reference for e in image.externals] == ["example.com/lambda/base:1"]
    assert image.identity["external_bases"] == {"example.com/lambda/base:1": LOCKED}
    assert upstream.external_bases(versions, "app") == [e.reference for e in by_lock]
    found = {u.reference: u.pinned for u in upstream.upstreams(versions, repo / "images.yaml")}
    assert found == {"example.com/tools/python": PINNED, "example.com/lambda/base:1": LOCKED}
