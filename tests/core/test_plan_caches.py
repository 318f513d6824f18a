"""The small caches and batched git calls behind a fast `plan` (issue 10): each gives the
answer the slow way gives, and a tampered or foreign entry is never trusted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from build_assets.core import secrets, versioncache
from build_assets.core.gitrepo import RefFiles, WorktreeScan, read_file_at, resolve_commit_tree
from build_assets.core.versioning import worktree_versions
from tests.gitutil import commit_all, make_repo, write
from tests.importtime import run_cli, run_importtime

MANIFEST = """images:
  base:
    dockerfile: base/Dockerfile
    source_paths: [shared]
  app:
    dockerfile: app/Dockerfile
    base: base
    source_paths: [app, shared]
"""


def _repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {
            "images.yaml": MANIFEST,
            "base/Dockerfile": "FROM scratch\n",
            "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
            "app/main.py": "x = 1\n",
            "app/keys/id_rsa": "k\n",
            "app/cert.pem.example": "template\n",
            "shared/lib.py": "y = 1\n",
            "shared/.env": "A=1\n",
            "shared/.npmrc": "registry=x\n",  # a token file without a token
            "shared/a b/.env.local": "B=1\n",
        },
    )


def _plan(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("plan", "--json", *args, cwd=repo, home=repo.parent / "home")[0]


def test_manifest_document_cache_round_trip_and_refusals(tmp_path: Path) -> None:
    git_dir = tmp_path / "git"
    git_dir.mkdir()
    doc = {"images": {"a": {"dockerfile": "a/Dockerfile", "source_paths": ["a"]}}}
    versioncache.save_manifest_doc(git_dir, b"text", doc)
    assert versioncache.load_manifest_doc(git_dir, b"text") == doc
    assert versioncache.load_manifest_doc(git_dir, b"other text") is None  # another manifest
    entry = git_dir / versioncache.MANIFEST_DOC
    data = json.loads(entry.read_text())
    data["body"]["value"]["images"]["a"]["dockerfile"] = "b/Dockerfile"  # edited by hand
    entry.write_text(json.dumps(data))
    assert versioncache.load_manifest_doc(git_dir, b"text") is None
    entry.unlink()
    versioncache.save_manifest_doc(git_dir, b"ints", {"images": {1: "x"}})  # JSON changes it
    assert not entry.exists()


def test_suspects_cache_is_keyed_by_tree_and_rules(tmp_path: Path) -> None:
    git_dir = tmp_path / "git"
    git_dir.mkdir()
    versioncache.save_suspects(git_dir, "t1", "r1", ["a/.env"])
    assert versioncache.load_suspects(git_dir, "t1", "r1") == ["a/.env"]
    assert versioncache.load_suspects(git_dir, "t2", "r1") is None
    assert versioncache.load_suspects(git_dir, "t1", "r2") is None


def test_candidates_screen_is_could_be_secret() -> None:
    paths = [
        "id_rsa",
        "a/id_rsa",
        "a/xid_rsa",
        "a/.env",
        "a/.env.local",
        "a/b.env.x/file",
        "a/.aws/credentials",
        "a/credentials",
        "k.pem",
        "k.pem.example",
        "a/.npmrc",
        "a/config.json",
        "a/.docker/config.json",
        "plain.py",
    ]
    assert [paths[i] for i in secrets.candidates(paths)] == [
        p for p in paths if secrets.could_be_secret(p)
    ]


def test_files_screened_matches_files_where_for_shared_contexts(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    write(repo, {"shared/new.key": "untracked\n"})
    versions = worktree_versions(repo)
    for img in versions:
        slow = img.files_where(secrets.could_be_secret)
        assert img.files_screened(secrets.candidates) == slow
    app = versions.images["app"]
    assert [f.path for f in app.files_screened(secrets.candidates)] == [
        "app/keys/id_rsa",
        "shared/.env",
        "shared/.npmrc",
        "shared/a b/.env.local",
        "shared/new.key",
    ]
    assert secrets.image_secrets(app) == [
        "app/keys/id_rsa",
        "shared/.env",
        "shared/a b/.env.local",
        "shared/new.key",
    ]


def test_ref_files_answers_as_one_question_at_a_time(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    write(repo, {"images.yaml": MANIFEST + "# edited\n"})
    commit_all(repo, "second")
    ids = resolve_commit_tree(repo, "HEAD~1")
    got = RefFiles(repo, "HEAD~1", ["images.yaml", "bases.lock", "app", "shared/a b/.env.local"])
    commit, tree, texts = got.result()  # type: ignore[misc]
    assert (commit, tree) == (ids.commit, ids.tree)
    assert texts == [
        read_file_at(repo, ids.commit, "images.yaml"),
        None,  # absent
        None,  # a folder
        "B=1\n",
    ]
    assert RefFiles(repo, "no-such-ref", ["images.yaml"]).result() is None
    assert RefFiles(repo, "HEAD\nHEAD", ["images.yaml"]).result() is None


def test_plan_since_first_computation_then_cached_match_the_full_path(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    write(repo, {"shared/lib.py": "y = 2\n", "app/main.py": "x = 2\n"})
    commit_all(repo, "edit")
    assert _plan(repo).returncode == 0  # the clean tree's versions cached
    git_dir = repo / ".git"
    for name in (versioncache.COMMITS, versioncache.SUSPECTS):
        path = git_dir / name
        if path.is_dir():
            for entry in path.iterdir():
                entry.unlink()
        else:
            path.unlink(missing_ok=True)
    first = _plan(repo, "--since", "HEAD~1")  # REF computed, then the diff path
    cached = _plan(repo, "--since", "HEAD~1")
    assert first.returncode == cached.returncode == 0, first.stderr + cached.stderr
    assert (git_dir / versioncache.SUSPECTS).exists()
    # the full computation: no cache of any kind
    for path in git_dir.glob("build-assets-*"):
        if path.is_dir():
            for entry in path.iterdir():
                entry.unlink()
            path.rmdir()
        else:
            path.unlink()
    full = _plan(repo, "--since", "HEAD~1")
    assert json.loads(first.stdout) == json.loads(cached.stdout) == json.loads(full.stdout)
    assert first.stderr == cached.stderr == full.stderr
    images = {img["name"]: img for img in json.loads(full.stdout)["images"]}
    assert images["base"]["reasons"] == ["shared/lib.py modified"]
    assert images["app"]["reasons"] == [
        "app/main.py modified",
        "shared/lib.py modified",
        "base base changed",
    ]
    assert "app/keys/id_rsa" in full.stderr and "shared/a b/.env.local" in full.stderr


def test_scan_is_unaffected_by_a_planted_manifest_document(tmp_path: Path) -> None:
    """A cache entry for other bytes is never used: a plan after the manifest changed sees
    the new paths (the scan covers them)."""
    repo = _repo(tmp_path)
    assert _plan(repo).returncode == 0
    write(repo, {"images.yaml": MANIFEST.replace("[app, shared]", "[app, shared, extra]")})
    write(repo, {"extra/x.py": "z = 1\n"})
    proc = _plan(repo)
    assert proc.returncode == 0, proc.stderr
    fresh = worktree_versions(repo)
    got = {img["name"]: img["version"] for img in json.loads(proc.stdout)["images"]}
    assert got == {img.name: img.version for img in fresh}
    assert WorktreeScan(repo, ["extra"]).changes  # untracked: seen by a scan covering it


def test_cached_plan_imports_no_yaml_parser(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _plan(repo).returncode == 0  # parses the manifest, fills the caches
    for args in ([], ["--since", "HEAD"]):
        _, imported = run_importtime("plan", "--json", *args, cwd=repo, home=repo.parent / "home")
        assert "build_assets.core.gitrepo" in imported  # the listing is read right
        assert "yaml" not in imported and "pydantic" not in imported
