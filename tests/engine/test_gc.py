"""`build-assets gc` on the real local registry (and moto's Lambda on the stack): old versions
go with their provenance; the newest N, the current version, what a Lambda function runs and
repositories with a build in flight stay."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from build_assets.aws.clients import make_client
from build_assets.core.versioning import worktree_versions
from build_assets.engine import provenance as pv
from build_assets.engine import registry as reg
from build_assets.engine.lease import Holder, SqliteLeaseStore
from build_assets.project import Project
from tests.cli.test_plan_cli import run_cli
from tests.gitutil import DYNAMO, HARMONIZE, LAMBDA_HARMONIZE, prepend, seed_repo

pytestmark = pytest.mark.stack
IMAGE = "base-receipt-dynamo"


def _push_image(repository: str, tag: str, created: str) -> str:
    """A tiny image (config only) at `tag`, built at `created`; its digest."""
    config = json.dumps({"created": created, "architecture": "amd64", "os": "linux"}).encode()
    digest = reg.put_blob(repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": pv.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": len(config),
        },
        "layers": [],
    }
    return reg.put_manifest(repository, tag, json.dumps(manifest).encode(), pv.OCI_MANIFEST)


@pytest.fixture
def world(stack_env, tmp_path: Path):
    return _world(stack_env, tmp_path)


def _world(stack_env, tmp_path: Path, ecr_mutability: str | None = None):
    """Five old versions and the current one of IMAGE, with provenance; in a repository of
    the stack's ECR API when `ecr_mutability` is given (as `bootstrap` makes them)."""
    registry = f"{stack_env.registry}/gc-{uuid.uuid4().hex[:8]}"
    repo = seed_repo(tmp_path / "repo")
    repository = f"{registry}/{IMAGE}"
    if ecr_mutability:
        make_client("ecr").create_repository(
            repositoryName=reg.parse_repository(repository).name,
            imageTagMutability=ecr_mutability,
        )
    old = []
    for i in range(5):  # five older versions of the base, oldest first
        prepend(repo, DYNAMO, f"# version {i}")
        img = worktree_versions(repo)[IMAGE]
        _push_image(repository, img.tag, f"2024-01-0{i + 1}T00:00:00Z")
        pv.publish(repository, pv.Provenance.of(img))
        old.append(img.tag)
    prepend(repo, DYNAMO, "# current")
    current = worktree_versions(repo)[IMAGE]
    _push_image(repository, current.tag, "2020-01-01T00:00:00Z")  # oldest date, still current
    return registry, repo, repository, old, current


def _gc(registry: str, repo: Path, home: Path, *args: str) -> dict[str, dict]:
    proc = run_cli("gc", "--json", *args, cwd=repo, home=home, registry=registry)
    assert proc.returncode == 0, proc.stderr
    return {r["image"]: r for r in json.loads(proc.stdout)["repositories"]}


def test_dry_run_then_delete_keeps_newest_current_and_lambda(world, tmp_path: Path) -> None:
    registry, repo, repository, old, current = world
    home = tmp_path / "state"
    # a Lambda function of the manifest runs the oldest version (pinned by digest)
    project = Project.from_env(repo=str(repo), registry=registry)
    pinned = f"{repository}@{reg.manifest_digest(repository, old[0])}"
    project.deployer().deploy(LAMBDA_HARMONIZE, pinned)

    planned = _gc(registry, repo, home, "--dry-run", "--keep", "2")[IMAGE]
    assert planned["kept"] == [old[4], old[3]]
    assert planned["deleted"] == [old[2], old[1]]
    assert planned["protected"] == {
        old[0]: f"Lambda function {LAMBDA_HARMONIZE}",
        current.tag: "current version",
    }
    assert set(reg.list_tags(repository)) >= set(old)  # dry run: nothing deleted

    done = _gc(registry, repo, home, "--keep", "2")[IMAGE]
    assert done["deleted"] == planned["deleted"]
    tags = set(reg.list_tags(repository))
    assert {old[4], old[3], old[0], current.tag} <= tags
    assert not {old[2], old[1]} & tags
    provenance = {t for t in tags if t.startswith(pv.PROVENANCE_PREFIX)}
    assert provenance == {pv.PROVENANCE_PREFIX + t[4:] for t in (old[4], old[3], old[0])}
    assert pv.POINTER_TAG in tags  # the last build's provenance stays


def test_lambda_image_is_never_deleted(world, tmp_path: Path) -> None:
    registry, repo, repository, old, current = world
    project = Project.from_env(repo=str(repo), registry=registry)
    # point the function of the manifest's harmonize image at a version in its repository
    harmonize_repo = f"{registry}/{HARMONIZE}"
    digests = [
        _push_image(harmonize_repo, f"git-{hashlib.sha256(str(i).encode()).hexdigest()[:12]}", d)
        for i, d in enumerate(["2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z"])
    ]
    project.deployer().deploy(LAMBDA_HARMONIZE, f"{harmonize_repo}@{digests[0]}")
    report = _gc(registry, repo, tmp_path / "state", "--keep", "1")[HARMONIZE]
    assert report["deleted"] == []
    assert list(report["protected"].values()) == [f"Lambda function {LAMBDA_HARMONIZE}"]
    assert reg.get_manifest(harmonize_repo, digests[0]) is not None


def test_repository_with_a_build_in_flight_is_left_alone(world, tmp_path: Path) -> None:
    registry, repo, repository, old, current = world
    home = tmp_path / "state"
    leases = SqliteLeaseStore(home / "leases.sqlite")
    # a running build of the label image uses the dynamo base: both are left alone
    label = worktree_versions(repo)["base-receipt-label"]
    assert leases.acquire(f"{registry}/base-receipt-label@{label.version}", Holder.current())
    reports = _gc(registry, repo, home, "--keep", "1")
    assert reports[IMAGE]["skipped"] == "a build is in flight"
    assert reports["base-receipt-label"]["skipped"] == "a build is in flight"
    assert set(old) <= set(reg.list_tags(repository))


def test_bad_keep_is_one_line(world, tmp_path: Path) -> None:
    registry, repo, *_ = world
    proc = run_cli("gc", "--keep", "0", cwd=repo, home=tmp_path / "s", registry=registry)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--keep" in proc.stderr


def test_gc_of_an_immutable_ecr_repository_keeps_registry_and_ecr_api_in_step(
    stack_env, tmp_path: Path
) -> None:
    """On the stack's ECR (issue 19): the pointer moved five times on an immutable repository,
    and what gc deletes through the registry is gone from the ECR API too."""
    registry, repo, repository, old, current = _world(stack_env, tmp_path, "IMMUTABLE")
    name = reg.parse_repository(repository).name
    ecr = make_client("ecr")

    def ecr_tags() -> set[str]:
        ids = ecr.list_images(repositoryName=name)["imageIds"]
        return {i["imageTag"] for i in ids if i.get("imageTag")}

    assert ecr_tags() == set(reg.list_tags(repository))
    assert pv.fetch(repository, pv.POINTER_TAG).version[:12] == old[4].removeprefix("git-")

    done = _gc(registry, repo, tmp_path / "state", "--keep", "2")[IMAGE]

    assert done["deleted"] == [old[2], old[1], old[0]]
    assert ecr_tags() == set(reg.list_tags(repository))
    assert not set(done["deleted"]) & ecr_tags()
    assert {old[4], old[3], current.tag, pv.POINTER_TAG} <= ecr_tags()
