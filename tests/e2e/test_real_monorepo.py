"""An existing monorepo adopted as it is (`tests/monorepos/adopt`): a root `.dockerignore` of
`*` plus re-includes written for another build, three independent bases `FROM` an external
image sharing one package, Lambda Dockerfiles taking their base as `ARG BASE_IMAGE_URI` +
`FROM ${BASE_IMAGE_URI:-…}`, arm64 images, a handler-only Lambda, the team's own CodeBuild
project names. Every silent failure of issue 9 is a clear error or a correct answer here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from build_assets.core.plan import plan_since
from build_assets.core.versioning import commit_versions, worktree_versions
from build_assets.errors import ManifestError
from tests.gitutil import commit_all, git, prepend, replace_in, write

FIXTURE = Path(__file__).resolve().parents[1] / "monorepos" / "adopt"
BASES = ["base-a", "base-b", "base-c"]
LAMBDAS = ["svc-x", "svc-y", "svc-z"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "adopt"
    shutil.copytree(FIXTURE, root)
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "adopted as it is", date="2001-01-01T00:00:00Z")
    return root


def versions(repo: Path) -> dict[str, str]:
    return {img.name: img.version for img in worktree_versions(repo)}


def since_head(repo: Path) -> dict[str, list[str]]:
    """{image: reasons} of the images that changed since HEAD."""
    entries = plan_since(worktree_versions(repo), commit_versions(repo, "HEAD"))
    return {e.name: e.reasons for e in entries if e.changed}


def problems(err: pytest.ExceptionInfo[ManifestError], repo: Path) -> list[str]:
    """The error's lines with the manifest named relative to the repo."""
    return [line.replace(f"{repo}/", "") for line in err.value.lines]


def run_cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env["BUILD_ASSETS_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "build_assets", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


# --- the seed's scenarios on the adopted repo -------------------------------------------------


def test_seed_scenarios_and_revert(repo: Path) -> None:
    start = versions(repo)
    prepend(repo, "services/x/handler.py", "# Test 1: a comment")
    assert since_head(repo) == {"svc-x": ["services/x/handler.py modified"]}

    git(repo, "checkout", "--", ".")
    write(repo, {"lambda_only/lambda_only/__init__.py": "def helper():\n    return 2\n"})
    assert since_head(repo) == {  # Test 2: a package only Lambdas ship, no base
        "svc-x": ["lambda_only/lambda_only/__init__.py modified"],
        "svc-y": ["lambda_only/lambda_only/__init__.py modified"],
    }

    git(repo, "checkout", "--", ".")
    prepend(repo, "shared/shared/__init__.py", "# Test 3: the package every base ships")
    changed = since_head(repo)
    assert sorted(changed) == sorted(BASES + LAMBDAS)
    assert changed["base-a"] == ["shared/shared/__init__.py modified"]
    assert changed["svc-x"] == ["base base-a changed"]

    git(repo, "checkout", "--", ".")
    assert versions(repo) == start  # revert: the same tags, nothing to build


def test_base_arg_and_platform_come_from_what_the_repo_says(repo: Path) -> None:
    vs = worktree_versions(repo)
    assert [vs[n].base_arg for n in LAMBDAS] == ["BASE_IMAGE_URI"] * 3
    assert vs["base-a"].platform == "linux/arm64" and vs["svc-z"].platform == "linux/amd64"
    assert vs.manifest.project_name("svc-x", "dev") == "svc-x-dev-harmonize-img-builder"
    assert vs.manifest.project_name("svc-y", "prod") == "svc-y-prod-img-builder"
    # the bases ship their package, not pkg_a/notes (excluded by the root .dockerignore)
    assert [f.path for f in vs["base-a"].files] == [
        "bases/a/Dockerfile",
        "pkg_a/pkg_a/__init__.py",
        "shared/pyproject.toml",
        "shared/shared/__init__.py",
    ]


def test_platform_is_part_of_the_version(repo: Path) -> None:
    before = versions(repo)
    replace_in(repo, "images.yaml", "    platform: linux/amd64\n", "")
    after = versions(repo)
    assert {n for n in before if before[n] != after[n]} == {"svc-z"}
    assert since_head(repo) == {"svc-z": ["platform changed to linux/arm64"]}


# --- the silent failures, now clear -----------------------------------------------------------


def test_root_dockerignore_emptying_a_lambda_context_is_one_line_per_problem(repo: Path) -> None:
    replace_in(repo, "images.yaml", "    dockerignore: false\n    platform", "    platform")
    with pytest.raises(ManifestError) as err:
        worktree_versions(repo)
    assert problems(err, repo) == [
        "images.yaml: image 'svc-z': services/z/Dockerfile:3: COPY source"
        " 'services/z/handler.py' matches no file of the build context"
        " (excluded by .dockerignore:2 `*`)",
        "images.yaml: image 'svc-z', field 'source_paths': 'services/z/handler.py' contributes"
        " no file to the build context (excluded by .dockerignore:2 `*`)",
    ]
    # the same holds at a commit (sensor, materialize of a pinned ref)
    commit_all(repo, "svc-z without its own ignore rule")
    with pytest.raises(ManifestError) as err:
        commit_versions(repo, "HEAD")
    assert err.value.lines[0].startswith("images.yaml@HEAD: image 'svc-z': services/z/Dockerfile:3")


def test_copy_of_a_file_outside_source_paths(repo: Path) -> None:
    replace_in(repo, "images.yaml", "    source_paths: [services/y, lambda_only]\n", "")
    replace_in(
        repo,
        "images.yaml",
        "    base: base-b\n",
        "    base: base-b\n    source_paths: [services/y]\n",
    )
    with pytest.raises(ManifestError) as err:
        worktree_versions(repo)
    assert problems(err, repo) == [
        "images.yaml: image 'svc-y': services/y/Dockerfile:3: COPY source 'lambda_only'"
        " matches no file of the build context (not under source_paths)"
    ]


def test_base_on_a_dockerfile_that_takes_no_base_arg(repo: Path) -> None:
    write(
        repo,
        {
            "services/z/Dockerfile": "FROM public.ecr.aws/lambda/python:3.12\nCOPY"
            " services/z/handler.py /var/task/\n"
        },
    )
    with pytest.raises(ManifestError) as err:
        worktree_versions(repo)
    [line] = problems(err, repo)
    assert line.startswith(
        "images.yaml: image 'svc-z', field 'base': services/z/Dockerfile:1:"
        " `FROM public.ecr.aws/lambda/python:3.12` takes no build arg"
    )


def test_dockerfile_specific_ignore_file_replaces_the_root_one_and_is_versioned(
    repo: Path,
) -> None:
    before = versions(repo)
    assert "dockerignore" in worktree_versions(repo)["svc-x"].identity
    write(repo, {"services/x/Dockerfile.dockerignore": "**/__pycache__\nlambda_only\n"})
    with pytest.raises(ManifestError) as err:
        worktree_versions(repo)
    assert problems(err, repo)[0] == (
        "images.yaml: image 'svc-x': services/x/Dockerfile:3: COPY source 'lambda_only'"
        " matches no file of the build context (excluded by"
        " services/x/Dockerfile.dockerignore:2 `lambda_only`)"
    )
    (repo / "services/x/Dockerfile.dockerignore").unlink()
    with pytest.raises(ManifestError):  # back to the root `*`: the handler is excluded
        worktree_versions(repo)
    write(repo, {"services/x/Dockerfile.dockerignore": "**/__pycache__\n"})
    assert versions(repo) == before


def test_reasons_after_an_ignore_edit_say_included_or_excluded(repo: Path) -> None:
    replace_in(repo, ".dockerignore", "pkg_a/notes\n", "")
    assert since_head(repo) == {
        "base-a": ["pkg_a/notes/design.md now included by .dockerignore:4 `!pkg_a/`"],
        "svc-x": ["base base-a changed"],
    }
    git(repo, "checkout", "--", ".")
    replace_in(repo, ".dockerignore", "!pkg_c/\n", "!pkg_c/\nshared/pyproject.toml\n")
    changed = since_head(repo)
    assert sorted(changed) == sorted(BASES + ["svc-x", "svc-y", "svc-z"])
    assert changed["base-b"] == [
        "shared/pyproject.toml now excluded by .dockerignore:7 `shared/pyproject.toml`"
    ]


# --- --manifest anywhere ----------------------------------------------------------------------


def test_manifest_outside_the_repo_is_the_same_on_both_sides(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "images.yaml"
    outside.parent.mkdir()
    shutil.copy(repo / "images.yaml", outside)
    replace_in(repo, "images.yaml", "platform: linux/arm64\n", "platform: linux/amd64\n")
    commit_all(repo, "the repo's own manifest differs")
    prepend(repo, "services/x/handler.py", "# edit")
    home = tmp_path / "home"
    proc = run_cli(
        "plan", "--manifest", str(outside), "--since", "HEAD", "--json", cwd=repo, home=home
    )
    assert proc.returncode == 0, proc.stderr
    changed = [e["name"] for e in json.loads(proc.stdout)["images"] if e["changed"]]
    assert changed == ["svc-x"]  # not every image: the repo's images.yaml is not used
    table = run_cli("plan", "--manifest", str(outside), "--since", "HEAD", cwd=repo, home=home)
    assert "is outside the repository: the same manifest is used for HEAD" in table.stdout


def test_uncommitted_manifest_given_explicitly_makes_every_image_new(
    repo: Path, tmp_path: Path
) -> None:
    shutil.copy(repo / "images.yaml", repo / "new.yaml")
    proc = run_cli(
        "plan", "--manifest", "new.yaml", "--since", "HEAD", "--json", cwd=repo, home=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)["images"]
    assert all(e["changed"] and e["reasons"] == ["new image"] for e in entries)


# --- real builds on the local stack -----------------------------------------------------------


@pytest.mark.stack
def test_real_builds_pass_the_base_under_the_dockerfiles_arg(
    repo: Path, local_stack, tmp_path: Path
) -> None:
    """The public registry is unreachable here: a Lambda image can only build if its base
    reaches `BASE_IMAGE_URI` (else `FROM ${BASE_IMAGE_URI:-public.ecr.aws/…}` would pull)."""
    from build_assets.engine.builders.local import LocalDockerBuilder
    from build_assets.engine.scheduler import BuildScheduler

    # offline roots: the bases' own ARG default points at the public runtime
    for base in BASES:
        line = f"    dockerfile: bases/{base[-1]}/Dockerfile\n"
        replace_in(repo, "images.yaml", line, line + "    build_args: {PYTHON_BASE: scratch}\n")
    replace_in(repo, "images.yaml", "platform: linux/arm64\n", "")  # the engine's own
    commit_all(repo, "offline")
    registry = f"{local_stack.registry}/issue9-{tmp_path.name[-12:].lower()}"
    builder = LocalDockerBuilder(tmp_path / "builder", registry_host=local_stack.registry)
    vs = worktree_versions(repo)
    first = {o.name: o for o in BuildScheduler(builder, registry).run(vs, ["base-a", "svc-x"])}
    assert {n: o.status for n, o in first.items()} == {"base-a": "built", "svc-x": "built"}, {
        n: (o.error and o.error.log_tail[-600:]) for n, o in first.items()
    }

    def layers(uri: str) -> list[str]:
        subprocess.run(["docker", "pull", "-q", uri], check=True, capture_output=True)
        out = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", uri],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)

    base_layers = layers(first["base-a"].result.image_uri)
    lambda_layers = layers(first["svc-x"].result.image_uri)
    assert lambda_layers[: len(base_layers)] == base_layers  # built on base-a, not elsewhere
    assert len(lambda_layers) == len(base_layers) + 2  # lambda_only + handler

    prepend(repo, "services/x/handler.py", "# Test 1")
    vs = worktree_versions(repo)
    again = {
        o.name: o.status for o in BuildScheduler(builder, registry).run(vs, ["base-a", "svc-x"])
    }
    assert again == {"base-a": "cached", "svc-x": "built"}
    git(repo, "checkout", "--", ".")
    vs = worktree_versions(repo)
    back = {
        o.name: o.status for o in BuildScheduler(builder, registry).run(vs, ["base-a", "svc-x"])
    }
    assert back == {"base-a": "cached", "svc-x": "cached"}


# --- bootstrap with the team's names and arm64 (moto over HTTP) --------------------------------


def test_bootstrap_uses_the_manifest_names_and_platforms_and_adopts_existing(
    repo: Path, aws
) -> None:
    from build_assets.aws.bootstrap import bootstrap
    from build_assets.aws.bootstrap_inputs import images_from_manifest
    from build_assets.core.manifest import load_manifest

    replace_in(
        repo,
        "images.yaml",
        'naming:\n  codebuild_project: "{image}-{env}-img-builder"\n',
        'naming:\n  codebuild_project: "{image}-{env}-img-builder"\n  repository: "team/{image}"\n',
    )
    images, overrides = images_from_manifest(load_manifest(repo / "images.yaml", repo))
    cb = aws.client("codebuild")
    existing = "svc-x-dev-harmonize-img-builder"  # the team's project, made before adoption
    aws.client("ecr").create_repository(repositoryName="team/svc-x")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"unexpected sleep({seconds})")

    actions = bootstrap(images, overrides, bucket="issue9-ctx", session=aws, sleep=no_sleep)
    by_name = {(a.kind, a.name): a.status for a in actions}
    assert by_name[("codebuild-project", existing)] == "created"
    assert by_name[("ecr-repository", "team/svc-x")] == "updated"  # adopted, settings fixed
    assert by_name[("ecr-repository", "team/base-a")] == "created"
    projects = {
        p["name"]: p
        for p in cb.batch_get_projects(
            names=[existing, "svc-z-dev-img-builder", "base-a-dev-img-builder"]
        )["projects"]
    }
    assert projects[existing]["environment"]["type"] == "ARM_CONTAINER"
    assert "aarch64" in projects[existing]["environment"]["image"]
    assert projects["svc-z-dev-img-builder"]["environment"]["type"] == "LINUX_CONTAINER"
    assert projects["base-a-dev-img-builder"]["environment"]["type"] == "ARM_CONTAINER"
    again = bootstrap(images, overrides, bucket="issue9-ctx", session=aws, sleep=no_sleep)
    assert {a.status for a in again} == {"unchanged"}  # adopted: nothing duplicated
