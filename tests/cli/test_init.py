"""`build-assets init` on `tests/monorepos/adopt` with its manifest removed: the proposed
manifest gives the seed's scenarios the same answers as the hand-written one; init never
overwrites a manifest. And repositories are named by the manifest's naming template
everywhere (Project, the scheduler), as `bootstrap` names them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from build_assets.core.plan import plan_since
from build_assets.core.versioning import commit_versions, worktree_versions
from build_assets.engine.scheduler import BuildScheduler
from build_assets.project import Project
from tests.gitutil import commit_all, git, prepend, write
from tests.importtime import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "monorepos" / "adopt"
# the information the Dockerfiles cannot give: which base image their tooling passes
BASES = ["--base", "services-x=bases-a", "--base", "services-y=bases-b"]
BASES += ["--base", "services-z=bases-c"]


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`build-assets ARGS` in `repo`, its state folder beside it."""
    return run_cli(*args, cwd=repo, home=repo.parent / "home")[0]


def copy(tmp_path: Path, name: str, manifest: bool) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURE, root)
    if not manifest:
        (root / "images.yaml").unlink()
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "as it is")
    return root


def scenarios(repo: Path) -> list[dict[str, list[str]]]:
    """The seed's scenarios: {dockerfile of each changed image: reasons} per step."""

    def changed() -> dict[str, list[str]]:
        current = worktree_versions(repo)
        entries = plan_since(current, commit_versions(repo, "HEAD"))
        where = {img.name: img.spec.dockerfile for img in current}  # names differ: paths
        return {
            where[e.name]: [" ".join(where.get(w, w) for w in r.split(" ")) for r in e.reasons]
            for e in entries
            if e.changed
        }

    out = []
    prepend(repo, "services/x/handler.py", "# Test 1: a comment")
    out.append(changed())
    git(repo, "checkout", "--", ".")
    write(repo, {"lambda_only/lambda_only/__init__.py": "def helper():\n    return 2\n"})
    out.append(changed())
    git(repo, "checkout", "--", ".")
    write(repo, {"shared/shared/__init__.py": "VERSION = 2\n"})
    out.append(changed())
    git(repo, "checkout", "--", ".")
    out.append(changed())
    return out


def test_init_gives_the_same_answers_as_the_hand_written_manifest(tmp_path: Path) -> None:
    hand = copy(tmp_path, "hand", manifest=True)
    proposed = copy(tmp_path, "proposed", manifest=False)

    out = cli(proposed, "init", "--no-lock", *BASES)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    text = (proposed / "images.yaml").read_text()
    assert "  bases-a:\n    dockerfile: bases/a/Dockerfile\n" in text
    assert "    source_paths: [shared, pkg_a]  # from the COPY/ADD sources" in text
    assert "    base: bases-a  # given with --base" in text
    # the root .dockerignore (`*` + re-includes) would empty svc-y / svc-z: a guess says so
    assert text.count("dockerignore: false  # guess:") == 2
    assert "platform: linux/arm64" in text and "\nplatform:" not in text  # left to the user
    plan = cli(proposed, "plan")
    assert plan.returncode == 0, plan.stderr
    commit_all(proposed, "init")

    expected = scenarios(hand)
    got = scenarios(proposed)
    assert got == expected
    assert got[2]["services/x/Dockerfile"] == ["base bases/a/Dockerfile changed"]
    assert set(got[0]) == {"services/x/Dockerfile"}  # Test 1: one Lambda image
    assert set(got[1]) == {"services/x/Dockerfile", "services/y/Dockerfile"}  # no base
    assert len(got[2]) == 6  # the shared package: every base and every dependent
    assert got[3] == {}  # revert: nothing


def test_init_without_hints_names_each_guess_and_plan_runs_clean(tmp_path: Path) -> None:
    repo = copy(tmp_path, "plain", manifest=False)
    out = cli(repo, "init")  # tries the public registry: unreachable here, no lock written
    assert out.returncode == 0, out.stderr
    assert "bases.lock not written: run build-assets bases update" in out.stdout
    assert not (repo / "bases.lock").exists()
    text = (repo / "images.yaml").read_text()
    assert text.count("# guess: built on public.ecr.aws/lambda/python:3.12 (the FROM") == 3
    assert "\n    base:" not in text
    assert cli(repo, "plan").returncode == 0


def test_init_never_overwrites_a_manifest(tmp_path: Path) -> None:
    repo = copy(tmp_path, "has", manifest=True)
    before = (repo / "images.yaml").read_text()
    out = cli(repo, "init", "--no-lock")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"build-assets: error: {repo}/images.yaml: already exists; init never overwrites a manifest"
    )
    assert (repo / "images.yaml").read_text() == before


def test_init_with_no_dockerfile_or_a_bad_hint_is_one_line(tmp_path: Path) -> None:
    repo = copy(tmp_path, "hint", manifest=False)
    out = cli(repo, "init", "--no-lock", "--base", "nope=bases-a")
    assert out.returncode == 2
    assert out.stderr.strip() == "build-assets: error: --base: no proposed image named nope"
    assert not (repo / "images.yaml").exists()


def test_repositories_follow_the_naming_template(tmp_path: Path) -> None:
    repo = copy(tmp_path, "named", manifest=True)
    text = (repo / "images.yaml").read_text()
    text = text.replace("naming:\n", 'naming:\n  repository: "team/{image}-{env}"\n').replace(
        "    dockerignore: false\n    platform",
        '    dockerignore: false\n    repository: "z"\n    platform',
    )
    (repo / "images.yaml").write_text(text)
    project = Project.from_env(
        repo=str(repo), registry="127.0.0.1:5999", env="qa", home=str(tmp_path / "home")
    )
    versions = project.versions()
    assert project.repository("svc-x") == "127.0.0.1:5999/team/svc-x-qa"
    assert project.repository("svc-z") == "127.0.0.1:5999/z"
    assert project.request_for(versions["base-a"]).repository == "127.0.0.1:5999/team/base-a-qa"
    assert versions.manifest.repository_name("svc-x", "qa") == "team/svc-x-qa"
    scheduler = BuildScheduler(project.builder(), project.registry, env="qa")
    # a run names its requests by the manifest of the versions it builds
    list(scheduler.run(versions, []))
    assert scheduler.request_for(versions["svc-x"], None).repository == (
        "127.0.0.1:5999/team/svc-x-qa"
    )


@pytest.fixture(autouse=True)
def _no_stack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("BUILD_ASSETS_"):
            monkeypatch.delenv(key)
