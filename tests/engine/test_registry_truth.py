"""The registry is the truth for what is built, also for `plan` (issue 13).

Real local builds on the stack (Docker engine + registry): each pushed image carries its
provenance as OCI labels, its content list is an artifact in the same repository, and
`last-build` points at the last build. A fresh machine (new clone, empty state folder) then
runs `plan` and gets the same answer and the same reasons as the machine that built.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from build_assets.core.versioning import worktree_versions
from build_assets.engine import provenance as pv
from build_assets.engine.registry import get_blob, get_manifest
from build_assets.project import Project
from tests.cli.test_plan_cli import run_cli
from tests.gitutil import (
    ALL_IMAGES,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    clone,
    commit_all,
    prepend,
    seed_repo,
)

pytestmark = pytest.mark.stack


def _build(repo: Path, registry: str, names=ALL_IMAGES) -> dict[str, str]:
    """Build `names` for real through the project's scheduler; image -> status."""
    project = Project.from_env(repo=str(repo), registry=registry)
    versions = project.versions()
    return {o.name: o.status for o in project.scheduler().run(versions, names)}


def _plan(repo: Path, home: Path, registry: str) -> dict[str, dict]:
    proc = run_cli("plan", "--json", cwd=repo, home=home, registry=registry)
    assert proc.returncode == 0, proc.stderr
    return {e["name"]: e for e in json.loads(proc.stdout)["images"]}


def test_fresh_machine_plans_like_the_builder(stack_env, tmp_path: Path) -> None:
    registry = f"{stack_env.registry}/truth-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "state"  # stack_env points BUILD_ASSETS_HOME here
    repo = seed_repo(tmp_path / "builder")
    assert set(_build(repo, registry).values()) == {"built"}

    # The image carries its provenance as labels; the content list is an artifact by digest.
    versions = worktree_versions(repo)
    img = versions[HARMONIZE]
    manifest = get_manifest(f"{registry}/{HARMONIZE}", img.tag)
    config = json.loads(get_blob(f"{registry}/{HARMONIZE}", manifest["config"]["digest"]))
    labels = config["config"]["Labels"]
    assert labels["org.build-assets.version"] == img.version
    assert labels["org.build-assets.base-version"] == img.base_version
    assert json.loads(labels["org.build-assets.identity"]) == img.identity
    prov = pv.fetch(f"{registry}/{HARMONIZE}", pv.provenance_tag(img.version))
    assert prov == pv.Provenance.of(img)
    assert prov.digest == labels["org.build-assets.provenance"]

    # Built and committed: the builder and a fresh machine both say nothing to do.
    fresh_home = tmp_path / "fresh-state"
    fresh = clone(repo, tmp_path / "fresh")
    for where, state in ((repo, home), (fresh, fresh_home)):
        entries = _plan(where, state, registry)
        assert [n for n, e in entries.items() if e["changed"]] == [], entries

    # A change is built on the builder, then a further change is made on both machines.
    prepend(repo, DYNAMO, "# built change")
    commit_all(repo, "built change")
    assert _build(repo, registry)[HARMONIZE] == "built"
    prepend(repo, HANDLER, "# pending handler edit")
    prepend(repo, DYNAMO, "# pending dynamo edit")
    fresh = clone(repo, tmp_path / "fresh2")  # the built commit, plus the same pending edits
    prepend(fresh, HANDLER, "# pending handler edit")
    prepend(fresh, DYNAMO, "# pending dynamo edit")
    shutil.rmtree(fresh_home, ignore_errors=True)

    on_builder = _plan(repo, home, registry)
    on_fresh = _plan(fresh, fresh_home, registry)
    assert on_fresh == on_builder  # same answer, same reasons, no build records on the fresh one
    assert not (fresh_home / "builds.sqlite").exists()
    assert on_fresh[HARMONIZE]["reasons"] == [
        f"{HANDLER} modified",
        "base base-receipt-agent changed",
    ]
    assert on_fresh["base-receipt-dynamo"]["reasons"] == [f"{DYNAMO} modified"]
    assert all(e["changed"] for e in on_fresh.values())

    # Deleting the builder's build records changes nothing either.
    (home / "builds.sqlite").unlink()
    assert _plan(repo, home, registry) == on_builder


def test_provenance_round_trip_and_pointer(stack_env, tmp_path: Path) -> None:
    """Publishing is idempotent per version; the pointer follows the last build."""
    registry = f"{stack_env.registry}/prov-{uuid.uuid4().hex[:8]}"
    repo = seed_repo(tmp_path / "repo")
    first = worktree_versions(repo)["base-receipt-dynamo"]
    prepend(repo, DYNAMO, "# second")
    second = worktree_versions(repo)["base-receipt-dynamo"]
    repository = f"{registry}/base-receipt-dynamo"
    assert pv.fetch(repository, pv.POINTER_TAG) is None
    pv.publish(repository, pv.Provenance.of(first))
    pv.publish(repository, pv.Provenance.of(first))
    assert pv.fetch(repository, pv.POINTER_TAG).version == first.version
    pv.publish(repository, pv.Provenance.of(second))
    assert pv.fetch(repository, pv.POINTER_TAG).version == second.version
    assert pv.fetch(repository, pv.provenance_tag(first.version)) == pv.Provenance.of(first)
    cache = pv.ProvenanceCache(tmp_path / "cache")
    states = pv.registry_states(registry, [("base-receipt-dynamo", second.tag)], cache)
    assert states["base-receipt-dynamo"].digest is None  # no image: only provenance
    assert states["base-receipt-dynamo"].last == pv.Provenance.of(second)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_plan_reads_repositories_named_by_the_manifest(stack_env, tmp_path: Path) -> None:
    """With `naming.repository`, builds push to, and `plan` asks, the templated repositories:
    the current tags and the `last-build` provenance both live there."""
    registry = f"{stack_env.registry}/named-{uuid.uuid4().hex[:8]}"
    repo = seed_repo(tmp_path / "builder")
    manifest = repo / "images.yaml"
    manifest.write_text('naming:\n  repository: "team/{image}-{env}"\n' + manifest.read_text())
    commit_all(repo, "name repositories")
    assert set(_build(repo, registry).values()) == {"built"}
    assert get_manifest(f"{registry}/team/{HARMONIZE}-dev", pv.POINTER_TAG) is not None

    fresh = clone(repo, tmp_path / "fresh")
    entries = _plan(fresh, tmp_path / "fresh-state", registry)
    assert [n for n, e in entries.items() if e["changed"]] == [], entries
    prepend(fresh, HANDLER, "# pending handler edit")
    entries = _plan(fresh, tmp_path / "fresh-state", registry)
    assert [n for n, e in entries.items() if e["changed"]] == [HARMONIZE]
    assert entries[HARMONIZE]["reasons"] == [f"{HANDLER} modified"]
