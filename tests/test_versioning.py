"""Content versions on real git repositories: the seed's scenarios and every rule of the
versioning contract (what changes a version, what never does)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from build_assets.plan import plan_since
from build_assets.versioning import commit_versions, worktree_versions
from tests.gitutil import (
    AGENT,
    ALL_IMAGES,
    BASES,
    CREATE,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    commit_all,
    git,
    make_repo,
    prepend,
    seed_repo,
    write,
)


def versions(repo: Path) -> dict[str, str]:
    return {img.name: img.version for img in worktree_versions(repo)}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {n for n in after if before.get(n) != after[n]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


# --- the seed's test plan ------------------------------------------------------------------


def test_seed_test1_handler_change_rebuilds_one_lambda_image(repo: Path) -> None:
    before = versions(repo)
    prepend(repo, HANDLER, "# Testing async build system - handler change")
    assert changed(before, versions(repo)) == {HARMONIZE}


def test_seed_test2_package_not_in_any_base_rebuilds_only_its_lambdas(repo: Path) -> None:
    before = versions(repo)
    prepend(repo, AGENT, "# Testing async build - receipt_agent change")
    after = versions(repo)
    assert changed(before, after) == {HARMONIZE}
    assert all(before[b] == after[b] for b in BASES)


def test_seed_test3_package_in_every_base_rebuilds_the_cascade(repo: Path) -> None:
    previous = worktree_versions(repo)
    prepend(repo, DYNAMO, "# Testing async build - receipt_dynamo change")
    entries = {e.name: e for e in plan_since(worktree_versions(repo), previous)}
    assert {n for n, e in entries.items() if e.changed} == set(ALL_IMAGES)
    assert entries["base-receipt-dynamo"].reasons == [f"{DYNAMO} modified"]
    assert entries["base-receipt-label"].reasons == ["base base-receipt-dynamo changed"]
    assert entries[CREATE].reasons == ["base base-receipt-label changed"]


def test_revert_gives_back_the_original_versions(repo: Path) -> None:
    before = worktree_versions(repo)
    for rel, line in ((HANDLER, "# a"), (AGENT, "# b"), (DYNAMO, "# c")):
        prepend(repo, rel, line)
    assert changed({i.name: i.version for i in before}, versions(repo)) == set(ALL_IMAGES)
    git(repo, "checkout", "--", ".")
    after = worktree_versions(repo)
    assert [(i.name, i.version, i.tag) for i in after] == [
        (i.name, i.version, i.tag) for i in before
    ]
    assert not any(e.changed for e in plan_since(after, commit_versions(repo, "HEAD")))


def test_tag_is_git_plus_12_hex_of_the_version(repo: Path) -> None:
    for img in worktree_versions(repo):
        assert img.tag == "git-" + img.version[:12]
        assert len(img.version) == 64


# --- what is in a context ----------------------------------------------------------------


def test_untracked_file_counts_but_gitignored_and_dockerignored_do_not(repo: Path) -> None:
    before = versions(repo)
    write(repo, {"receipt_agent/__pycache__/validate.cpython-311.pyc": "bytecode"})
    write(repo, {"receipt_agent/.venv/lib.py": "ignored by .gitignore"})
    write(repo, {"README-notes.md": "outside every context"})
    assert versions(repo) == before
    write(repo, {"receipt_agent/new_module.py": "X = 1\n"})
    assert changed(before, versions(repo)) == {HARMONIZE}


def test_tracked_but_dockerignored_file_is_not_in_the_context(repo: Path) -> None:
    before = worktree_versions(repo)
    write(repo, {"receipt_label/__pycache__/labeler.cpython-311.pyc": "x"})
    git(repo, "add", "-f", "receipt_label/__pycache__/labeler.cpython-311.pyc")
    after = worktree_versions(repo)
    assert after["base-receipt-label"].version == before["base-receipt-label"].version
    assert not any("__pycache__" in f.path for f in after["base-receipt-label"].files)


def test_context_never_holds_dot_git_or_files_outside_source_paths(repo: Path) -> None:
    img = worktree_versions(repo)["base-receipt-agent"]
    paths = {f.path for f in img.files}
    assert paths == {"infra/base_images/agent/Dockerfile", "receipt_agent/pyproject.toml"}
    for image in worktree_versions(repo):
        assert not any(p.startswith(".git/") for p in (f.path for f in image.files))


def test_chmod_changes_the_version(repo: Path) -> None:
    previous = worktree_versions(repo)
    os.chmod(repo / AGENT, 0o755)
    [entry] = [e for e in plan_since(worktree_versions(repo), previous) if e.changed]
    assert entry.name == HARMONIZE
    assert entry.reasons == [f"mode of {AGENT} changed"]


def test_delete_changes_the_version(repo: Path) -> None:
    previous = worktree_versions(repo)
    (repo / "receipt_label/labeler.py").unlink()
    entries = {e.name: e for e in plan_since(worktree_versions(repo), previous)}
    assert entries["base-receipt-label"].reasons == ["receipt_label/labeler.py deleted"]
    assert not entries["base-receipt-dynamo"].changed


def test_symlinks_are_hashed_by_their_target(repo: Path) -> None:
    v0 = versions(repo)
    os.symlink("validate.py", repo / "receipt_agent/alias.py")
    v1 = versions(repo)
    assert changed(v0, v1) == {HARMONIZE}
    (repo / "receipt_agent/alias.py").unlink()
    os.symlink("__init__.py", repo / "receipt_agent/alias.py")
    assert changed(v1, versions(repo)) == {HARMONIZE}
    img = worktree_versions(repo)[HARMONIZE]
    [link] = [f for f in img.files if f.path == "receipt_agent/alias.py"]
    assert link.mode == "120000"


def test_dockerfile_change_is_named(repo: Path) -> None:
    previous = worktree_versions(repo)
    dockerfile = repo / "infra/create_labels/lambdas/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "LABEL x=y\n")
    [entry] = [e for e in plan_since(worktree_versions(repo), previous) if e.changed]
    assert (entry.name, entry.reasons) == (CREATE, ["Dockerfile changed"])


def test_build_args_change_is_named_and_isolated(repo: Path) -> None:
    previous = worktree_versions(repo)
    manifest = repo / "images.yaml"
    manifest.write_text(
        manifest.read_text().replace("create_labels.handler", "create_labels.other")
    )
    [entry] = [e for e in plan_since(worktree_versions(repo), previous) if e.changed]
    assert (entry.name, entry.reasons) == (CREATE, ["build_args changed"])


def test_manifest_entry_changes_only_that_image_and_its_dependents(repo: Path) -> None:
    before = versions(repo)
    manifest = repo / "images.yaml"
    text = manifest.read_text()
    manifest.write_text(
        text.replace(
            "source_paths: [receipt_label]", "source_paths: [receipt_label, receipt_agent]"
        )
    )
    assert changed(before, versions(repo)) == {
        "base-receipt-label",
        "base-receipt-agent",
        HARMONIZE,
        CREATE,
    }
    manifest.write_text(
        text
        + "  extra-image:\n    dockerfile: infra/create_labels/lambdas/Dockerfile\n"
        + "# a comment and a new image elsewhere in the file\n"
    )
    after = versions(repo)
    assert changed(before, after) == {"extra-image"}


def test_new_image_since_ref(repo: Path) -> None:
    manifest = repo / "images.yaml"
    manifest.write_text(
        manifest.read_text()
        + "  extra-image:\n    dockerfile: infra/create_labels/lambdas/Dockerfile\n"
    )
    entries = {
        e.name: e for e in plan_since(worktree_versions(repo), commit_versions(repo, "HEAD"))
    }
    assert entries["extra-image"].reasons == ["new image"]
    assert not entries[CREATE].changed


def test_same_content_same_version_anywhere(tmp_path: Path, repo: Path) -> None:
    here = versions(repo)
    # another clone in another folder
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert versions(clone) == here
    # the same edit, committed in one and uncommitted in the other, at other times
    prepend(repo, HANDLER, "# same edit")
    prepend(clone, HANDLER, "# same edit")
    commit_all(clone, "a message", date="2001-01-01T00:00:00")
    assert versions(repo) == versions(clone)
    git(repo, "add", "-A")  # staged only
    assert versions(repo) == versions(clone)


def test_stat_stale_index_gives_the_same_versions(tmp_path: Path, repo: Path) -> None:
    """A restored CI cache: every mtime changed, content did not."""
    before = versions(repo)
    for path in repo.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            os.utime(path, (1_000_000_000, 1_000_000_000))
    assert versions(repo) == before
    copy = tmp_path / "copied"
    shutil.copytree(repo, copy)  # new inodes: every index entry is stat-stale
    assert versions(copy) == before
    # a restored snapshot whose content differs behind the same size and mtime: git must
    # compare content, not trust the stale index
    other = tmp_path / "restored"
    shutil.copytree(repo, other)
    target = other / DYNAMO
    st = target.stat()
    data = target.read_bytes()
    assert b"table" in data
    target.write_bytes(data.replace(b"table", b"TABLE"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert changed(before, versions(other)) == set(ALL_IMAGES)


def test_commit_versions_equal_worktree_versions_of_that_checkout(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    prepend(repo, DYNAMO, "# second")
    commit_all(repo, "second")
    at_first = {i.name: i.version for i in commit_versions(repo, first)}
    at_head = {i.name: i.version for i in commit_versions(repo, "HEAD")}
    assert at_head == versions(repo)
    git(repo, "checkout", "-q", first)
    assert at_first == versions(repo)


def test_since_across_several_commits_by_sha_tag_and_relative_ref(repo: Path) -> None:
    start = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    prepend(repo, HANDLER, "# one")
    commit_all(repo, "one")
    prepend(repo, "receipt_label/labeler.py", "# two")
    commit_all(repo, "two")
    current = worktree_versions(repo)
    for ref in (start, "v1", "HEAD~2"):
        entries = {e.name: e for e in plan_since(current, commit_versions(repo, ref))}
        assert {n for n, e in entries.items() if e.changed} == {
            "base-receipt-label",
            "base-receipt-agent",
            HARMONIZE,
            CREATE,
        }
        assert "# one" not in str(entries[HARMONIZE].reasons)
        assert f"{HANDLER} modified" in entries[HARMONIZE].reasons
    assert not any(e.changed for e in plan_since(current, commit_versions(repo, "HEAD")))


def test_build_context_ships_exactly_the_hashed_files(repo: Path) -> None:
    import io
    import tarfile

    img = worktree_versions(repo)[HARMONIZE]
    with tarfile.open(fileobj=io.BytesIO(img.context.tar_bytes())) as tar:
        names = sorted(m.name for m in tar.getmembers())
    assert names == sorted(f.path for f in img.files)
    assert img.context.tar_bytes() == img.context.tar_bytes()  # reproducible
    assert img.context.zip_bytes() == img.context.zip_bytes()


def test_a_file_changed_after_hashing_fails_the_shipping(repo: Path) -> None:
    from build_assets.context import ContextChangedError

    img = worktree_versions(repo)[HARMONIZE]
    prepend(repo, HANDLER, "# changed after hashing")
    with pytest.raises(ContextChangedError, match="harmonize_metadata.py"):
        img.context.tar_bytes()


def test_commit_contexts_come_from_git_objects(repo: Path) -> None:
    at_head = commit_versions(repo, "HEAD")[HARMONIZE]
    prepend(repo, HANDLER, "# dirty working tree")
    data = dict(at_head.context.iter_contents())
    [handler] = [f for f in data if f.path == HANDLER]
    assert not data[handler].startswith(b"# dirty")


def test_small_repo_without_dockerignore(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "r",
        {
            "images.yaml": "images:\n  app:\n    dockerfile: Dockerfile\n    source_paths: [src]\n",
            "Dockerfile": "FROM scratch\nCOPY src /src\n",
            "src/a.py": "a\n",
            "src/b/c.py": "c\n",
            "srcx/not.py": "outside: shares a prefix only\n",
        },
    )
    img = worktree_versions(repo)["app"]
    assert [f.path for f in img.files] == ["Dockerfile", "src/a.py", "src/b/c.py"]


def test_clean_tree_cache_is_used_and_invalidated(repo: Path) -> None:
    """The clean-tree cache lives in .git, is used only for the exact same state, and a
    cached VersionSet still yields the real context files on demand."""
    import json as _json

    from build_assets import versioncache

    full = worktree_versions(repo)  # computes and saves
    cache_file = repo / ".git" / versioncache.FILE
    assert cache_file.exists()
    cached = worktree_versions(repo)
    assert [(i.name, i.version) for i in cached] == [(i.name, i.version) for i in full]
    assert cached[HARMONIZE].files == full[HARMONIZE].files
    assert cached[HARMONIZE].file_count == full[HARMONIZE].file_count

    data = _json.loads(cache_file.read_text())
    data["images"][CREATE][0] = "f" * 64  # prove the next call reads the cache
    cache_file.write_text(_json.dumps(data))
    assert worktree_versions(repo)[CREATE].version == "f" * 64
    prepend(repo, HANDLER, "# dirty: the cache is not consulted")
    assert worktree_versions(repo)[CREATE].version == full[CREATE].version
    git(repo, "add", "-A")  # staged: the index changed, so its digest does too
    assert worktree_versions(repo)[CREATE].version == full[CREATE].version
