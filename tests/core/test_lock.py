"""External bases pinned by digest in `bases.lock`, on the real local registry playing the
upstream registry: `bases update` pins, a new upstream image under the same tag re-pins, and
`plan --since HEAD` shows exactly the dependent cascade; a revert of the lock builds nothing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from build_assets.core.lock import (
    HEADER,
    LOCK_FILE,
    parse_lock,
    pin_literal_froms,
    pinned_reference,
)
from build_assets.core.versioning import worktree_versions
from build_assets.engine import registry as reg
from build_assets.engine.builders.base import make_request
from build_assets.errors import UserError
from build_assets.project import Project
from tests.gitutil import commit_all, git, replace_in, write
from tests.importtime import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "monorepos" / "adopt"
DIGEST = "sha256:" + "ab" * 32


def push_scratch(registry: str, repository: str, tag: str, content: str) -> str:
    """Push a one-file FROM-scratch image (OCI manifest, config and one layer) through the
    distribution API; return its manifest digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("release")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    repo = f"{registry}/{repository}"
    config_digest = reg.put_blob(repo, config)
    layer_digest = reg.put_blob(repo, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(manifest).encode()
    return reg.put_manifest(repo, tag, body, manifest["mediaType"])


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`build-assets ARGS` in `repo`, its state folder beside it."""
    return run_cli(*args, cwd=repo, home=repo.parent / "home")[0]


def changed_since_head(repo: Path) -> dict[str, list[str]]:
    out = cli(repo, "plan", "--since", "HEAD", "--json")
    assert out.returncode == 0, out.stderr
    return {i["name"]: i["reasons"] for i in json.loads(out.stdout)["images"] if i["changed"]}


def adopt_repo(tmp_path: Path, upstream: str) -> Path:
    """The adopt fixture with bases a and b FROM `upstream` (ARG default) and base c FROM
    scratch: svc-x / svc-y sit on a / b, svc-z on c."""
    root = tmp_path / "adopt"
    shutil.copytree(FIXTURE, root)
    for base in ("a", "b"):
        replace_in(root, f"bases/{base}/Dockerfile", "public.ecr.aws/lambda/python:3.12", upstream)
    replace_in(root, "bases/c/Dockerfile", "public.ecr.aws/lambda/python:3.12", "scratch")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "adopted")
    return root


@pytest.mark.stack
def test_bases_update_repins_and_marks_exactly_the_dependent_cascade(
    stack_env, tmp_path: Path
) -> None:
    ns = f"up{uuid.uuid4().hex[:8]}"
    upstream = f"{stack_env.registry}/{ns}/python:3.12"
    first = push_scratch(stack_env.registry, f"{ns}/python", "3.12", "3.12.0")
    repo = adopt_repo(tmp_path, upstream)
    unpinned = {i.name: i.version for i in worktree_versions(repo)}

    out = cli(repo, "bases", "update")
    assert out.returncode == 0, out.stderr
    assert f"{upstream}: pinned at {first[:19]}… (new; base-a, base-b + 2 dependents)" in out.stdout
    lock_text = (repo / LOCK_FILE).read_text()
    assert lock_text == f"{HEADER}bases:\n  {upstream}: {first}\n"
    pinned = worktree_versions(repo)
    assert {n for n, v in unpinned.items() if pinned[n].version != v} == {
        "base-a",
        "base-b",
        "svc-x",
        "svc-y",
    }  # base-c and svc-z have no external base: their versions did not move
    # the build gets the pinned reference in the arg its FROM names
    assert pinned["base-a"].pinned_args == {"PYTHON_BASE": pinned_reference(upstream, first)}
    request = make_request(pinned["base-a"], f"{stack_env.registry}/base-a")
    assert request.build_args["PYTHON_BASE"] == f"{stack_env.registry}/{ns}/python@{first}"
    assert pinned["base-c"].pinned_args == {}
    commit_all(repo, "pin bases")
    assert changed_since_head(repo) == {}

    # upstream publishes a patch under the same tag
    second = push_scratch(stack_env.registry, f"{ns}/python", "3.12", "3.12.1")
    assert second != first
    dry = cli(repo, "bases", "update", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{upstream}: {first[:19]}… -> {second[:19]}… (rebuilds base-a, base-b" in dry.stdout
    assert (repo / LOCK_FILE).read_text() == lock_text
    assert changed_since_head(repo) == {}

    assert cli(repo, "bases", "update").returncode == 0
    assert git(repo, "status", "--porcelain") == f" M {LOCK_FILE}"  # one reviewable change
    changed = changed_since_head(repo)
    assert set(changed) == {"base-a", "base-b", "svc-x", "svc-y"}
    assert changed["base-a"] == [f"{upstream} pinned at {second[:19]} in bases.lock"]
    assert changed["svc-x"] == ["base base-a changed"]

    again = cli(repo, "bases", "update")
    assert "is up to date" in again.stdout and "unchanged" in again.stdout

    git(repo, "checkout", "--", LOCK_FILE)  # revert: back to the committed versions
    assert changed_since_head(repo) == {}


def test_missing_and_unused_lock_entries_are_one_line_each(tmp_path: Path) -> None:
    repo = adopt_repo(tmp_path, "registry.example.com/lambda/python:3.12")
    (repo / LOCK_FILE).write_text(f"bases:\n  registry.example.com/old/python:3.11: {DIGEST}\n")
    out = cli(repo, "plan", "--since", "HEAD")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [
        f"build-assets: error: {repo}/{LOCK_FILE}: external base"
        " 'registry.example.com/lambda/python:3.12' (used by base-a, base-b) is not pinned:"
        " run `build-assets bases update`",
        f"build-assets: error: {repo}/{LOCK_FILE}: 'registry.example.com/old/python:3.11' is"
        " pinned but no image uses it any more: run `build-assets bases update`",
    ], out.stderr
    (repo / LOCK_FILE).write_text("bases:\n  x/y:1: sha256:nope\n")
    bad = cli(repo, "plan")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"build-assets: error: {repo}/{LOCK_FILE}: base 'x/y:1': 'sha256:nope' is not a"
        " sha256:<64 hex> digest"
    )


def test_unreachable_registry_writes_nothing(tmp_path: Path) -> None:
    repo = adopt_repo(tmp_path, "127.0.0.1:9/lambda/python:3.12")  # nothing listens on port 9
    out = cli(repo, "bases", "update")
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].startswith(
        "build-assets: error: 127.0.0.1:9/lambda/python:3.12: registry 127.0.0.1:9 not reachable"
    )
    assert not (repo / LOCK_FILE).exists()


def test_external_manifest_base_is_pinned_and_passed_in_its_arg(tmp_path: Path) -> None:
    repo = adopt_repo(tmp_path, "scratch")
    ref = "registry.example.com/lambda/python:3.12"
    replace_in(repo, "images.yaml", "    base: base-c\n", f"    base: {ref}\n")
    before = worktree_versions(repo)["svc-z"]
    assert before.base is None and before.pinned_args == {"BASE_IMAGE_URI": ref}
    (repo / LOCK_FILE).write_text(f"bases:\n  {ref}: {DIGEST}\n")
    after = worktree_versions(repo)["svc-z"]
    assert after.version != before.version
    assert after.pinned_args == {"BASE_IMAGE_URI": f"registry.example.com/lambda/python@{DIGEST}"}
    assert parse_lock((repo / LOCK_FILE).read_text(), LOCK_FILE) == {ref: DIGEST}
    commit_all(repo, "external base")
    assert changed_since_head(repo) == {}
    # a bad reference is one line
    replace_in(repo, "images.yaml", f"    base: {ref}\n", "    base: 'bad ref:1'\n")
    out = cli(repo, "plan")
    assert out.returncode == 2 and "field 'base': bad image reference 'bad ref:1'" in out.stderr


# --- a literal FROM builds exactly the locked base --------------------------------------------

PY = "python:3.12"
PINNED = f"python@{DIGEST}"


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        pytest.param(f"FROM {PY}\n", f"FROM {PINNED}\n", id="plain"),
        pytest.param(f"from {PY} AS build\n", f"from {PINNED} AS build\n", id="stage"),
        pytest.param(
            f"FROM --platform=linux/arm64 {PY}\n",
            f"FROM --platform=linux/arm64 {PINNED}\n",
            id="platform-flag",
        ),
        pytest.param(
            "ARG V=3.12\nFROM python:${V}\n", f"ARG V=3.12\nFROM {PINNED}\n", id="arg-in-tag"
        ),
        pytest.param(
            f"FROM {PY} AS a\nRUN x\nFROM a\nFROM {PY}\n",
            f"FROM {PINNED} AS a\nRUN x\nFROM a\nFROM {PINNED}\n",
            id="twice-and-a-stage",
        ),
        pytest.param("ARG B\nFROM ${B}\n", "ARG B\nFROM ${B}\n", id="from-an-arg-untouched"),
        pytest.param("FROM python:3.11\n", "FROM python:3.11\n", id="other-tag-untouched"),
    ],
)
def test_literal_froms_are_pinned_in_the_shipped_dockerfile(dockerfile, expected) -> None:
    pinned = pin_literal_froms(dockerfile.encode(), {PY: PINNED}, {}, "Dockerfile")
    assert pinned.decode() == expected


def test_a_from_naming_an_earlier_stage_is_that_stage_not_the_image() -> None:
    text = b"FROM python AS python\nRUN x\nFROM python\n"
    pinned = pin_literal_froms(text, {"python": PINNED}, {}, "Dockerfile")
    assert pinned.decode() == f"FROM {PINNED} AS python\nRUN x\nFROM python\n"


def test_a_from_it_cannot_rewrite_is_one_line() -> None:
    with pytest.raises(UserError, match=r"^svc/Dockerfile:1: cannot pin FROM python:3.12"):
        pin_literal_froms(f"FROM \\\n  {PY}\n".encode(), {PY: PINNED}, {}, "svc/Dockerfile")


def _first_layer_file(repository: str, tag: str, name: str) -> str:
    manifest = reg.get_manifest(repository, tag)
    assert manifest is not None
    layer = reg.get_blob(repository, manifest["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read().decode()


@pytest.mark.stack
def test_a_literal_from_builds_the_locked_digest_when_its_tag_moved(stack_env, tmp_path) -> None:
    registry = f"{stack_env.registry}/literal-{uuid.uuid4().hex[:8]}"
    locked = push_scratch(registry, "ext/base", "1", "locked release")
    external = f"{registry}/ext/base:1"
    repo = tmp_path / "repo"
    write(
        repo,
        {
            "images.yaml": "images:\n  app:\n    dockerfile: app/Dockerfile\n"
            "    source_paths: [app]\n",
            LOCK_FILE: f"bases:\n  {external}: {locked}\n",
            "app/Dockerfile": f"FROM {external}\nCOPY app/app.txt /app.txt\n",
            "app/app.txt": "hello\n",
        },
    )
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "app on a literal FROM")
    push_scratch(registry, "ext/base", "1", "a newer release")  # the tag moves on

    project = Project.from_env(repo=str(repo), registry=registry)
    versions = project.versions()
    [outcome] = project.scheduler().run(versions, ["app"])
    assert outcome.status == "built", outcome
    # The image starts from the locked base, as its version says, not from the moved tag.
    assert _first_layer_file(f"{registry}/app", versions["app"].tag, "release") == "locked release"
    # What was committed is untouched: only the shipped copy of the Dockerfile is pinned.
    assert (repo / "app/Dockerfile").read_text().startswith(f"FROM {external}\n")
