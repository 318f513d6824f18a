"""The version caches in `.git`: versions at a commit are computed once per tree and manifest,
shared between commits and a clean working tree, and an entry that is not exactly right
(truncated, of another scheme or key, edited by hand) is recomputed, never trusted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from build_assets.core import versioncache
from build_assets.core.gitrepo import read_file_at, resolve_commit_tree
from build_assets.core.plan import plan_since
from build_assets.core.versioning import commit_versions, worktree_versions
from build_assets.errors import ManifestError
from tests.gitutil import (
    AGENT,
    CREATE,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    LABEL,
    commit_all,
    git,
    prepend,
    replace_in,
    seed_repo,
    write,
)
from tests.importtime import run_cli, run_importtime, top_level


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


def forget(repo: Path) -> None:
    """Remove every cache entry of `repo`."""
    shutil.rmtree(repo / ".git" / versioncache.COMMITS, ignore_errors=True)
    (repo / ".git" / versioncache.FILE).unlink(missing_ok=True)


def entry_path(repo: Path, ref: str = "HEAD") -> Path:
    """The commit entry of `ref` with the repo's images.yaml."""
    ids = resolve_commit_tree(repo, ref)
    text = read_file_at(repo, ids.commit, "images.yaml") or ""
    key = versioncache.commit_key(ids.tree, "tree:images.yaml", text.encode())
    return repo / ".git" / versioncache.COMMITS / f"{key}.json"


def summary(versions) -> dict[str, tuple]:
    """Everything a plan or a build reads from a VersionSet, per image."""
    return {
        img.name: (
            img.version,
            img.base_version,
            img.file_count,
            img.identity,
            img.base_arg,
            tuple(img.files),
            img.records(),
        )
        for img in versions
    }


def fresh_at(repo: Path, ref: str) -> dict[str, tuple]:
    """Versions at `ref` computed with no cache at all (and leaving none behind)."""
    keep = repo.parent / "kept-cache"
    shutil.rmtree(keep, ignore_errors=True)
    (repo / ".git" / versioncache.COMMITS).mkdir(exist_ok=True)
    shutil.copytree(repo / ".git" / versioncache.COMMITS, keep)
    forget(repo)
    try:
        return summary(commit_versions(repo, ref))
    finally:
        shutil.rmtree(repo / ".git" / versioncache.COMMITS, ignore_errors=True)
        shutil.copytree(keep, repo / ".git" / versioncache.COMMITS)


def forge(path: Path, change: Callable[[dict], None]) -> None:
    """Rewrite an entry's body with `change` and a valid checksum (a well-formed entry)."""
    data = json.loads(path.read_text())
    change(data["body"])
    data["sum"] = versioncache._checksum(data["body"])
    path.write_text(json.dumps(data))


def test_commit_versions_are_computed_once_and_read_back_whole(repo: Path) -> None:
    prepend(repo, HANDLER, "# second")
    commit_all(repo, "second")
    first = summary(commit_versions(repo, "HEAD~1"))
    path = entry_path(repo, "HEAD~1")
    assert path.exists()
    assert summary(commit_versions(repo, "HEAD~1")) == first == fresh_at(repo, "HEAD~1")
    # prove the second call read the entry: a forged (well-formed) entry is served
    forge(path, lambda body: body["images"][CREATE].__setitem__(0, "e" * 64))
    assert commit_versions(repo, "HEAD~1")[CREATE].version == "e" * 64


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "hand-edited",
        "wrong scheme",
        "wrong format",
        "another key",
        "not json",
        "wrong shape",
    ],
)
def test_a_wrong_entry_is_recomputed_never_trusted(repo: Path, damage: str) -> None:
    prepend(repo, HANDLER, "# second")
    commit_all(repo, "second")
    truth = {n: v[0] for n, v in fresh_at(repo, "HEAD").items()}
    commit_versions(repo, "HEAD")
    path = entry_path(repo)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "hand-edited":  # a plausible version, checksum left as it was
        data = json.loads(text)
        data["body"]["images"][HARMONIZE][0] = "0" * 64
        path.write_text(json.dumps(data, indent=2))
    elif damage == "wrong scheme":
        forge(path, lambda body: body.update(scheme="build-assets/v0"))
    elif damage == "wrong format":
        forge(path, lambda body: body.update(format=versioncache.FORMAT - 1))
    elif damage == "another key":  # HEAD~1's whole, valid entry under HEAD's name
        commit_versions(repo, "HEAD~1")
        shutil.copy(entry_path(repo, "HEAD~1"), path)
    elif damage == "not json":
        path.write_bytes(b"\x00\xff" * 10)
    else:
        forge(path, lambda body: body["images"].update({HARMONIZE: "0" * 64}))
    got = commit_versions(repo, "HEAD")
    assert {img.name: img.version for img in got} == truth
    body = versioncache.load_commit(repo / ".git", path.stem)  # rewritten, valid again
    assert body is not None and body["images"][HARMONIZE][0] == truth[HARMONIZE]


def test_clean_worktree_and_its_commit_share_one_entry(repo: Path) -> None:
    forget(repo)
    worktree = {img.name: img.version for img in worktree_versions(repo)}  # clean: fills both
    path = entry_path(repo)
    assert path.exists()
    forge(path, lambda body: body["images"][CREATE].__setitem__(0, "d" * 64))
    assert commit_versions(repo, "HEAD")[CREATE].version == "d" * 64  # read, not recomputed
    # the other way round: no clean-tree entry, the index is HEAD's tree -> the commit entry
    (repo / ".git" / versioncache.FILE).unlink()
    assert worktree_versions(repo)[CREATE].version == "d" * 64
    forget(repo)
    assert {img.name: img.version for img in worktree_versions(repo)} == worktree


def test_dirty_tree_and_staged_changes_never_use_the_commit_entry(repo: Path) -> None:
    worktree_versions(repo)
    forge(entry_path(repo), lambda body: body["images"][CREATE].__setitem__(0, "d" * 64))
    (repo / ".git" / versioncache.FILE).unlink()
    prepend(repo, HANDLER, "# dirty")
    dirty = worktree_versions(repo)
    assert dirty[CREATE].version != "d" * 64
    git(repo, "add", "-A")  # staged: the index is no longer HEAD's tree
    assert worktree_versions(repo)[CREATE].version == dirty[CREATE].version


def test_the_key_holds_the_manifest_text_and_place(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((repo / "images.yaml").read_text())
    inside = {img.name: img.version for img in commit_versions(repo, "HEAD")}
    same = {img.name: img.version for img in commit_versions(repo, "HEAD", outside)}
    assert same == inside  # same text, other place: own entry, same versions
    outside.write_text(outside.read_text().replace("create_labels.handler", "other.handler"))
    other = {img.name: img.version for img in commit_versions(repo, "HEAD", outside)}
    assert other[CREATE] != inside[CREATE] and other[HARMONIZE] == inside[HARMONIZE]
    assert len(list((repo / ".git" / versioncache.COMMITS).iterdir())) == 3


def test_entries_are_pruned_beyond_the_limit(repo: Path, monkeypatch) -> None:
    monkeypatch.setattr(versioncache, "MAX_COMMIT_ENTRIES", 2)
    for n in range(3):
        prepend(repo, LABEL, f"# change {n}")
        commit_all(repo, f"change {n}")
        commit_versions(repo, "HEAD")
    assert len(list((repo / ".git" / versioncache.COMMITS).iterdir())) == 2
    assert entry_path(repo).exists()  # the newest stays


def run_plan(repo: Path, *args: str) -> dict:
    proc, _ = run_cli("plan", "--json", *args, cwd=repo, home=repo.parent / "home")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("dirty", [False, True])
def test_plan_since_is_the_same_cold_warm_and_as_the_library(repo: Path, dirty: bool) -> None:
    write(repo, {"receipt_label/receipt_label/new.py": "x = 1\n"})
    prepend(repo, HANDLER, "# one")
    commit_all(repo, "one")
    replace_in(repo, "images.yaml", "create-labels-create:", "create-labels-create2:")
    commit_all(repo, "a renamed image: new since HEAD~1")
    if dirty:
        prepend(repo, LABEL, "# dirty")
    forget(repo)
    cold = run_plan(repo, "--since", "HEAD~2")
    warm = run_plan(repo, "--since", "HEAD~2")
    assert cold == warm
    forget(repo)
    expected = plan_since(worktree_versions(repo), commit_versions(repo, "HEAD~2"))
    assert cold["images"] == [e.to_dict() for e in expected]
    reasons = {e["name"]: e["reasons"] for e in cold["images"]}
    assert reasons["create-labels-create2"] == ["new image"]
    assert f"{HANDLER} modified" in reasons[HARMONIZE]


def test_plan_since_from_the_tree_diff_matches_the_full_plan(repo: Path) -> None:
    """Same manifest, only files changed: the cached run answers from `git diff-tree` (no
    validation imported) with the very entries and warnings of the full computation."""
    write(repo, {".dockerignore": "**/__pycache__\n", "receipt_label/__pycache__/x.pyc": "1"})
    write(repo, {"receipt_label/keys/id_rsa": "k", "receipt_dynamo/.npmrc": "_authToken=1"})
    commit_all(repo, "ignore file, secrets already there")
    prepend(repo, HANDLER, "# modified")
    prepend(repo, "infra/create_labels/lambdas/Dockerfile", "# Dockerfile changed")
    write(repo, {"receipt_label/receipt_label/new.py": "x = 1\n", "receipt_label/.env": "A=1\n"})
    write(repo, {"receipt_label/__pycache__/x.pyc": "2"})  # ignored: no reason
    (repo / DYNAMO).unlink()
    (repo / AGENT).chmod(0o755)
    commit_all(repo, "files only")
    forget(repo)
    cold = run_plan_full(repo, "--since", "HEAD~1")
    warm = run_plan_full(repo, "--since", "HEAD~1")
    assert json.loads(warm.stdout) == json.loads(cold.stdout)
    assert warm.stderr == cold.stderr
    assert "receipt_label/.env, receipt_label/keys/id_rsa" in warm.stderr  # what it ships
    assert "receipt_dynamo/.npmrc" in warm.stderr
    assert "pydantic" in cold.imported and "pydantic" not in warm.imported
    forget(repo)
    expected = plan_since(worktree_versions(repo), commit_versions(repo, "HEAD~1"))
    entries = [
        {k: v for k, v in e.items() if k != "warnings"} for e in json.loads(warm.stdout)["images"]
    ]
    assert entries == [e.to_dict() for e in expected]
    reasons = {e["name"]: e["reasons"] for e in entries}
    assert reasons["base-receipt-dynamo"] == [f"{DYNAMO} deleted"]
    assert reasons[CREATE] == ["Dockerfile changed", "base base-receipt-label changed"]
    assert f"mode of {AGENT} changed" in reasons[HARMONIZE]
    assert not any("__pycache__" in r for rs in reasons.values() for r in rs)


def test_plan_since_diff_leaves_ignore_file_changes_to_the_full_plan(repo: Path) -> None:
    write(repo, {".dockerignore": "**/new.py\n"})
    commit_all(repo, "ignore file")
    write(repo, {".dockerignore": "", "receipt_label/receipt_label/new.py": "x = 1\n"})
    commit_all(repo, "un-ignored and new")
    forget(repo)
    cold = run_plan_full(repo, "--since", "HEAD~1")
    warm = run_plan_full(repo, "--since", "HEAD~1")
    assert json.loads(warm.stdout) == json.loads(cold.stdout)
    assert "pydantic" in warm.imported  # the diff alone cannot say why: full path
    forget(repo)
    expected = plan_since(worktree_versions(repo), commit_versions(repo, "HEAD~1"))
    assert json.loads(warm.stdout)["images"] == [e.to_dict() for e in expected]


def run_plan_full(repo: Path, *args: str):
    """`plan --json ARGS` with `-X importtime`: output, warnings and the packages imported."""
    proc, modules = run_importtime("plan", "--json", *args, cwd=repo, home=repo.parent / "home")
    proc.imported = top_level(modules)
    return proc


def test_a_commit_entry_never_hides_a_lock_out_of_step(tmp_path: Path) -> None:
    """Versions at a commit whose bases.lock misses a base are computed for `--since` (the
    base unpinned); the same commit checked out is still told its lock is out of step."""
    repo = tmp_path / "locked"
    pin = "sha256:" + "a" * 64
    write(
        repo,
        {
            "images.yaml": "images:\n  one:\n    dockerfile: a/Dockerfile\n"
            "  two:\n    dockerfile: b/Dockerfile\n",
            "a/Dockerfile": "FROM registry.example.com/py:3.12\n",
            "b/Dockerfile": "FROM registry.example.com/other:1\n",
            "bases.lock": f"bases:\n  registry.example.com/py:3.12: {pin}\n",
        },
    )
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "lock out of step")
    (repo / "bases.lock").write_text(
        f"bases:\n  registry.example.com/other:1: {pin}\n  registry.example.com/py:3.12: {pin}\n"
    )
    commit_all(repo, "pin the other base")
    assert set(commit_versions(repo, "HEAD~1").images) == {"one", "two"}  # --since tolerates it
    git(repo, "checkout", "-q", "HEAD~1")
    with pytest.raises(ManifestError, match="'registry.example.com/other:1' .* is not pinned"):
        worktree_versions(repo)
