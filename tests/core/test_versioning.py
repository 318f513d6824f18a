"""Content versions on real git repositories: the seed's test plan and every rule of the
versioning contract (DESIGN.md, "Versioning rules users rely on"): what changes a version,
what never does, and that the same content gives the same version wherever it lives."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from build_assets.core import versioncache
from build_assets.core.context import (
    DOCKERFILE_SLOT,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    ContextChangedError,
)
from build_assets.core.plan import PlanEntry, plan_since
from build_assets.core.versioning import VersionSet, commit_versions, worktree_versions
from build_assets.errors import ManifestError
from tests.gitutil import (
    AGENT,
    ALL_IMAGES,
    BASES,
    CREATE,
    CREATE_HANDLER,
    DYNAMO,
    HANDLER,
    HARMONIZE,
    LABEL,
    SEED_FILES,
    chmod,
    clone,
    commit_all,
    copy_repo,
    git,
    head,
    make_repo,
    prepend,
    replace_in,
    seed_repo,
    symlink,
    touch_all,
    write,
)

# label and everything built on it
LABEL_AND_DEPENDENTS = {"base-receipt-label", "base-receipt-agent", HARMONIZE, CREATE}


def versions(repo: Path) -> dict[str, str]:
    """{image: version} of the working tree."""
    return {img.name: img.version for img in worktree_versions(repo)}


def at(repo: Path, ref: str) -> dict[str, str]:
    """{image: version} at a git ref (from git objects)."""
    return {img.name: img.version for img in commit_versions(repo, ref)}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Images whose version differs (or that are new) in `after`."""
    return {name for name in after if before.get(name) != after[name]}


def plan(repo: Path, previous: VersionSet | str = "HEAD") -> dict[str, PlanEntry]:
    """Plan entries of the working tree against `previous` (a VersionSet or a git ref)."""
    if isinstance(previous, str):
        previous = commit_versions(repo, previous)
    return {e.name: e for e in plan_since(worktree_versions(repo), previous)}


def rebuilt(entries: dict[str, PlanEntry]) -> set[str]:
    return {name for name, e in entries.items() if e.changed}


def context_paths(repo: Path, image: str) -> list[str]:
    return [f.path for f in worktree_versions(repo)[image].files]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


# --- the seed's test plan ---------------------------------------------------------------------


def test_seed_test1_handler_change_rebuilds_only_its_lambda_image(repo: Path) -> None:
    before = versions(repo)
    prepend(repo, HANDLER, "# Testing async build system - handler change")
    assert changed(before, versions(repo)) == {HARMONIZE}
    entries = plan(repo)
    assert rebuilt(entries) == {HARMONIZE}
    assert entries[HARMONIZE].reasons == [f"{HANDLER} modified"]


def test_seed_test2_package_outside_every_base_rebuilds_only_the_lambda(repo: Path) -> None:
    before = versions(repo)
    prepend(repo, AGENT, "# Testing async build - receipt_agent change")
    after = versions(repo)
    assert changed(before, after) == {HARMONIZE}
    assert {b: after[b] for b in BASES} == {b: before[b] for b in BASES}
    assert plan(repo)[HARMONIZE].reasons == [f"{AGENT} modified"]
    # base-receipt-agent takes only receipt_agent's dependency list ...
    assert context_paths(repo, "base-receipt-agent") == [
        "infra/base_images/agent/Dockerfile",
        "receipt_agent/pyproject.toml",
    ]
    # ... so editing that file does rebuild it (and what is built on it, nothing below it)
    prepend(repo, "receipt_agent/pyproject.toml", "# new dependency")
    assert changed(after, versions(repo)) == {"base-receipt-agent", HARMONIZE}


def test_seed_test3_package_in_every_base_rebuilds_the_whole_cascade(repo: Path) -> None:
    before = worktree_versions(repo)
    prepend(repo, DYNAMO, "# Testing async build - receipt_dynamo change")
    entries = plan_since(worktree_versions(repo), before)
    assert [e.name for e in entries if e.changed] == ALL_IMAGES  # all, bases first
    by_name = {e.name: e for e in entries}
    assert by_name["base-receipt-dynamo"].reasons == [f"{DYNAMO} modified"]
    assert by_name["base-receipt-label"].reasons == ["base base-receipt-dynamo changed"]
    assert by_name["base-receipt-agent"].reasons == ["base base-receipt-label changed"]
    assert by_name[HARMONIZE].reasons == ["base base-receipt-agent changed"]
    assert by_name[CREATE].reasons == ["base base-receipt-label changed"]
    # every tag moved
    assert not {e.tag for e in entries} & {img.tag for img in before}


def test_revert_gives_back_the_original_versions_and_tags(repo: Path) -> None:
    before = worktree_versions(repo)
    for rel in (HANDLER, AGENT, DYNAMO):
        prepend(repo, rel, "# Testing async build")
    assert changed({i.name: i.version for i in before}, versions(repo)) == set(ALL_IMAGES)
    git(repo, "checkout", "--", HANDLER, AGENT, DYNAMO)  # the seed's own revert
    after = worktree_versions(repo)
    assert [(i.name, i.version, i.tag) for i in after] == [
        (i.name, i.version, i.tag) for i in before
    ]
    assert rebuilt(plan(repo, "HEAD")) == set()


def test_a_committed_revert_gives_back_the_original_versions(repo: Path) -> None:
    original = at(repo, "HEAD")
    prepend(repo, DYNAMO, "# change")
    commit_all(repo, "change")
    assert changed(original, at(repo, "HEAD")) == set(ALL_IMAGES)
    git(repo, "revert", "--no-edit", "HEAD")
    assert at(repo, "HEAD") == original == versions(repo)


def test_tag_is_git_dash_first_12_hex_of_the_version(repo: Path) -> None:
    for img in worktree_versions(repo):
        assert len(img.version) == 64 and int(img.version, 16) >= 0
        assert img.tag == "git-" + img.version[:12]
    assert len({img.version for img in worktree_versions(repo)}) == len(ALL_IMAGES)


# --- what is in a context -----------------------------------------------------------------------


def test_untracked_not_ignored_file_counts_as_a_new_file(repo: Path) -> None:
    before = versions(repo)
    write(repo, {"receipt_agent/new_module.py": "X = 1\n"})
    assert changed(before, versions(repo)) == {HARMONIZE}
    assert plan(repo)[HARMONIZE].reasons == ["new file receipt_agent/new_module.py"]
    # also inside a folder git has never seen
    write(repo, {"receipt_label/sub/deep/mod.py": "Y = 2\n"})
    entries = plan(repo)
    assert rebuilt(entries) == LABEL_AND_DEPENDENTS
    assert entries["base-receipt-label"].reasons == ["new file receipt_label/sub/deep/mod.py"]


def test_ignored_files_and_files_outside_every_context_do_not_count(repo: Path) -> None:
    before = versions(repo)
    write(
        repo,
        {
            # .gitignore'd (.venv/ and *.log)
            "receipt_agent/.venv/lib/site.py": "ignored by git\n",
            "receipt_dynamo/debug.log": "ignored by git\n",
            # .dockerignore'd
            "receipt_agent/__pycache__/validate.cpython-311.pyc": b"\x00bytecode",
            "receipt_dynamo/stale.pyc": b"\x00bytecode",
            # outside every image's source_paths
            "NOTES.md": "new file at the root\n",
            "infra/other/thing.py": "not in any context\n",
        },
    )
    prepend(repo, "README.md", "a README edit at the root")
    (repo / "receipt_label" / "empty_dir").mkdir()  # git sees no empty folders
    assert versions(repo) == before
    assert rebuilt(plan(repo)) == set()


def test_tracked_but_dockerignored_file_is_not_in_the_context(repo: Path) -> None:
    before = versions(repo)
    write(repo, {"receipt_label/__pycache__/labeler.cpython-311.pyc": b"\x00"})
    git(repo, "add", "-f", "receipt_label/__pycache__/labeler.cpython-311.pyc")
    commit_all(repo, "a committed .pyc")
    assert versions(repo) == before == at(repo, "HEAD")
    assert not any("__pycache__" in p for p in context_paths(repo, "base-receipt-label"))


def test_dockerignore_rules_decide_the_context(repo: Path) -> None:
    before = versions(repo)
    ignore = repo / ".dockerignore"
    ignore.write_text(ignore.read_text() + "# a comment\nno/such/path\n")
    assert versions(repo) == before  # a rule that matches nothing changes nothing
    ignore.write_text(ignore.read_text() + "receipt_agent/validate.py\n")
    assert changed(before, versions(repo)) == {HARMONIZE}
    assert AGENT not in context_paths(repo, HARMONIZE)
    ignore.write_text(ignore.read_text() + f"!{AGENT}\n")  # re-included
    assert versions(repo) == before


def test_dockerignore_patterns_have_docker_semantics(repo: Path) -> None:
    """Docker anchors patterns at the context root ('*.txt' is only the root's), '**' spans
    folders, an excluded folder takes its contents, '!' re-includes, '#' is a comment."""
    write(
        repo,
        {
            ".dockerignore": "*.txt\n"
            "receipt_agent/*.md\n"
            "**/*.tmp\n"
            "receipt_agent/docs\n"
            "!receipt_agent/docs/keep.md\n"
            "# receipt_agent/comment.py\n",
            "receipt_agent/a.txt": "kept: '*.txt' is anchored at the root\n",
            "receipt_agent/notes.md": "excluded\n",
            "receipt_agent/sub/notes.md": "kept: '*' does not cross '/'\n",
            "receipt_agent/sub/x.tmp": "excluded\n",
            "receipt_agent/docs/a.py": "excluded with its folder\n",
            "receipt_agent/docs/keep.md": "re-included\n",
            "receipt_agent/comment.py": "kept\n",
        },
    )
    paths = set(context_paths(repo, HARMONIZE))
    kept = {
        "receipt_agent/a.txt",
        "receipt_agent/sub/notes.md",
        "receipt_agent/docs/keep.md",
        "receipt_agent/comment.py",
    }
    excluded = {
        "receipt_agent/notes.md",
        "receipt_agent/sub/x.tmp",
        "receipt_agent/docs/a.py",
    }
    assert kept <= paths
    assert not excluded & paths


def test_an_ignored_dockerfile_is_hashed_and_built_from_but_not_shipped(repo: Path) -> None:
    dockerfile = "infra/create_labels/lambdas/Dockerfile"
    before = versions(repo)
    write(repo, {".dockerignore": SEED_FILES[".dockerignore"] + "**/Dockerfile\n"})
    image = worktree_versions(repo)[CREATE]
    assert dockerfile in context_paths(repo, CREATE)  # hashed: it is read for the build
    assert not image.dockerfile_shipped
    with tarfile.open(fileobj=io.BytesIO(image.context.tar_bytes())) as shipped:
        assert dockerfile not in shipped.getnames()  # as Docker: an ignored one is not shipped
        slot = shipped.extractfile(DOCKERFILE_SLOT)
        assert slot is not None and slot.read() == (repo / dockerfile).read_bytes()
    ignored = versions(repo)
    # builds of the old rule shipped the Dockerfile: the ignored ones get new versions
    assert ignored[CREATE] != before[CREATE]
    write(repo, {dockerfile: (repo / dockerfile).read_text() + "# edited\n"})
    assert versions(repo)[CREATE] != ignored[CREATE]  # still part of the version


def test_context_is_the_dockerfile_plus_source_paths_and_nothing_else(repo: Path) -> None:
    # names that sort right before and after "receipt_agent/" must not leak in
    write(
        repo,
        {
            "receipt_agent-old/x.py": "sibling folder sharing a prefix\n",
            "receipt_agent.txt": "sibling file sharing a prefix\n",
            "receipt_agent0/y.py": "sorts right after 'receipt_agent/'\n",
        },
    )
    assert context_paths(repo, HARMONIZE) == [
        "infra/metadata_harmonizer_step_functions/lambdas/Dockerfile",
        HANDLER,
        "receipt_agent/__init__.py",
        "receipt_agent/pyproject.toml",
        AGENT,
    ]
    for img in worktree_versions(repo):
        assert not any(f.path.startswith(".git/") or f.path == ".git" for f in img.files)


def test_chmod_changes_the_version_and_back_restores_it(repo: Path) -> None:
    before = versions(repo)
    chmod(repo, AGENT, executable=True)
    entries = plan(repo)
    assert rebuilt(entries) == {HARMONIZE}
    assert entries[HARMONIZE].reasons == [f"mode of {AGENT} changed"]
    [f] = [f for f in worktree_versions(repo)[HARMONIZE].files if f.path == AGENT]
    assert f.mode == MODE_EXEC
    executable = versions(repo)
    commit_all(repo, "executable")
    assert at(repo, "HEAD") == executable == versions(repo)
    chmod(repo, AGENT, executable=False)
    assert versions(repo) == before


def test_delete_changes_the_version(repo: Path) -> None:
    before = versions(repo)
    (repo / LABEL).unlink()
    entries = plan(repo)
    assert rebuilt(entries) == LABEL_AND_DEPENDENTS
    assert entries["base-receipt-label"].reasons == [f"{LABEL} deleted"]
    unstaged = versions(repo)
    git(repo, "rm", "-q", "--cached", LABEL)  # the same deletion, staged
    assert versions(repo) == unstaged
    git(repo, "checkout", "HEAD", "--", LABEL)
    assert versions(repo) == before


def test_symlinks_are_hashed_by_their_target(repo: Path) -> None:
    v0 = versions(repo)
    symlink(repo, "receipt_agent/alias.py", "validate.py")
    v1 = versions(repo)
    assert changed(v0, v1) == {HARMONIZE}
    assert plan(repo)[HARMONIZE].reasons == ["new file receipt_agent/alias.py"]
    [link] = [f for f in worktree_versions(repo)[HARMONIZE].files if f.path.endswith("alias.py")]
    assert link.mode == MODE_LINK
    symlink(repo, "receipt_agent/alias.py", "__init__.py")  # re-pointed
    v2 = versions(repo)
    assert changed(v1, v2) == {HARMONIZE}
    assert plan(repo, commit_versions(repo, "HEAD"))[HARMONIZE].changed
    # a regular file holding the link's target text is not the same thing
    (repo / "receipt_agent/alias.py").unlink()
    write(repo, {"receipt_agent/alias.py": "__init__.py"})
    assert versions(repo)[HARMONIZE] not in {v1[HARMONIZE], v2[HARMONIZE]}
    # committed or not, the same link gives the same version
    symlink(repo, "receipt_agent/alias.py", "__init__.py")
    commit_all(repo, "link")
    assert versions(repo) == at(repo, "HEAD") == v2


def test_dockerfile_change_is_named(repo: Path) -> None:
    dockerfile = repo / "infra/create_labels/lambdas/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "LABEL x=y\n")
    entries = plan(repo)
    assert rebuilt(entries) == {CREATE}
    assert entries[CREATE].reasons == ["Dockerfile changed"]


def test_build_args_change_is_named_and_isolated(repo: Path) -> None:
    replace_in(repo, "images.yaml", "{HANDLER: create_labels.handler}", "{HANDLER: other.handler}")
    entries = plan(repo)
    assert rebuilt(entries) == {CREATE}
    assert entries[CREATE].reasons == ["build_args changed"]


# --- the manifest entry, not the manifest file --------------------------------------------------


def test_editing_an_entry_changes_that_image_and_its_dependents_only(repo: Path) -> None:
    replace_in(
        repo,
        "images.yaml",
        "source_paths: [receipt_label]",
        "source_paths: [receipt_label, receipt_agent/__init__.py]",
    )
    entries = plan(repo)
    assert rebuilt(entries) == LABEL_AND_DEPENDENTS
    assert entries["base-receipt-label"].reasons == [
        "source_paths changed",
        "new file receipt_agent/__init__.py",
    ]
    assert entries[HARMONIZE].reasons == ["base base-receipt-agent changed"]


def test_editing_another_entry_or_adding_an_image_leaves_the_others_unchanged(
    repo: Path,
) -> None:
    before = versions(repo)
    replace_in(repo, "images.yaml", "lambda: create-labels-dev-create", "lambda: [renamed-fn]")
    assert versions(repo) == before  # the deploy target is no build input
    replace_in(repo, "images.yaml", "{HANDLER: create_labels.handler}", "{HANDLER: x.handler}")
    assert changed(before, versions(repo)) == {CREATE}
    edited = versions(repo)
    manifest = repo / "images.yaml"
    manifest.write_text(
        "# a new comment at the top\n"
        + manifest.read_text()
        + "  extra-image:\n"
        + "    dockerfile: infra/create_labels/lambdas/Dockerfile\n"
        + "    base: base-receipt-dynamo\n"
        + "    source_paths: [infra/create_labels/lambdas]\n"
    )
    after = versions(repo)
    assert changed(edited, after) == {"extra-image"}
    assert plan(repo)["extra-image"].reasons == ["new image"]


def test_layout_of_the_manifest_file_does_not_matter(repo: Path) -> None:
    """Image order, key order, flow or block style, comments, path order and trailing
    slashes, `lambda` as a string or a list: none of it is a build input."""
    before = versions(repo)
    (repo / "images.yaml").write_text(
        """\
images:
  create-labels-create:
    lambda: [create-labels-dev-create]
    build_args:
      HANDLER: create_labels.handler   # a comment
    source_paths:
      - infra/create_labels/lambdas/
    base: base-receipt-label
    dockerfile: infra/create_labels/lambdas/Dockerfile
  metadata-harmonizer-harmonize:
    source_paths: [receipt_agent/, infra/metadata_harmonizer_step_functions/lambdas]
    lambda: metadata-harmonizer-dev-harmonize-metadata
    build_args: {HANDLER: "harmonize_metadata.handler"}
    base: base-receipt-agent
    dockerfile: infra/metadata_harmonizer_step_functions/lambdas/Dockerfile
  base-receipt-agent: {base: base-receipt-label, dockerfile: infra/base_images/agent/Dockerfile,
    source_paths: [receipt_agent/pyproject.toml]}
  base-receipt-label:
    base: base-receipt-dynamo
    dockerfile: infra/base_images/label/Dockerfile
    source_paths: [receipt_label]
  base-receipt-dynamo:
    source_paths: [receipt_dynamo]
    dockerfile: infra/base_images/dynamo/Dockerfile
    build_args: {}
"""
    )
    assert versions(repo) == before


def test_changing_the_base_is_named(repo: Path) -> None:
    replace_in(
        repo,
        "images.yaml",
        "base: base-receipt-label\n    source_paths: [infra/create_labels/lambdas]",
        "base: base-receipt-agent\n    source_paths: [infra/create_labels/lambdas]",
    )
    entries = plan(repo)
    assert rebuilt(entries) == {CREATE}
    assert entries[CREATE].reasons == ["base changed from base-receipt-label to base-receipt-agent"]


def test_image_absent_at_ref_is_a_new_image(repo: Path) -> None:
    start = head(repo)
    manifest = repo / "images.yaml"
    manifest.write_text(
        manifest.read_text()
        + "  extra-image:\n    dockerfile: infra/base_images/agent/Dockerfile\n"
        + "    source_paths: [receipt_agent/pyproject.toml]\n"
    )
    commit_all(repo, "new image")
    assert "extra-image" not in at(repo, start)
    entries = plan(repo, start)
    assert rebuilt(entries) == {"extra-image"}
    assert entries["extra-image"].reasons == ["new image"]
    assert rebuilt(plan(repo, "HEAD")) == set()


# --- same content, same version -----------------------------------------------------------------


def test_same_content_same_version_in_another_clone_and_folder(tmp_path: Path) -> None:
    a = seed_repo(tmp_path / "a")
    b = seed_repo(tmp_path / "somewhere" / "much" / "deeper" / "b")
    c = clone(a, tmp_path / "clones" / "c")
    assert versions(a) == versions(b) == versions(c)
    assert at(a, "HEAD") == at(b, "HEAD") == versions(a)


def test_linked_worktree_and_manifest_location_do_not_matter(tmp_path: Path) -> None:
    repo = seed_repo(tmp_path / "main")
    before = versions(repo)
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    assert versions(linked) == before
    prepend(linked, HANDLER, "# only in the linked worktree")
    assert changed(before, versions(linked)) == {HARMONIZE}
    assert versions(repo) == before  # each worktree has its own index (and version cache)
    (repo / "deploy").mkdir()
    (repo / "images.yaml").rename(repo / "deploy" / "images.yaml")
    moved = worktree_versions(repo, repo / "deploy" / "images.yaml")
    assert {img.name: img.version for img in moved} == before


def test_commit_time_message_and_history_do_not_matter(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", {})
    commit_all(a, "first: an empty commit", date="2001-01-01T00:00:00Z")
    write(a, SEED_FILES)
    commit_all(a, "one message", date="2002-02-02T00:00:00Z")
    b = make_repo(tmp_path / "b", {})
    write(b, {k: v for k, v in SEED_FILES.items() if k != HANDLER})
    commit_all(b, "without the handler", date="2020-05-05T12:00:00Z")
    write(b, {HANDLER: SEED_FILES[HANDLER]})
    commit_all(b, "another message", date="2030-03-03T03:03:03Z")
    assert head(a) != head(b)
    assert at(a, "HEAD") == at(b, "HEAD") == versions(a) == versions(b)


def test_committed_staged_and_unstaged_identical_content_agree(tmp_path: Path) -> None:
    committed = seed_repo(tmp_path / "committed")
    staged = seed_repo(tmp_path / "staged")
    unstaged = seed_repo(tmp_path / "unstaged")
    untracked = seed_repo(tmp_path / "untracked", commit=False)
    for r in (committed, staged, unstaged, untracked):
        prepend(r, HANDLER, "# the same edit")
        write(r, {"receipt_dynamo/extra.py": "Z = 3\n"})
    commit_all(committed, "edit")
    git(staged, "add", "-A")
    expected = versions(committed)
    assert expected == at(committed, "HEAD")
    assert versions(staged) == versions(unstaged) == versions(untracked) == expected


def test_staged_only_changes_count(repo: Path) -> None:
    before = versions(repo)
    prepend(repo, CREATE_HANDLER, "# staged")
    git(repo, "add", CREATE_HANDLER)
    assert git(repo, "diff", "--name-only") == ""  # nothing unstaged
    entries = plan(repo)
    assert rebuilt(entries) == {CREATE}
    assert entries[CREATE].reasons == [f"{CREATE_HANDLER} modified"]
    # the working tree is what is built: staged, then undone on disk -> the original content
    write(repo, {CREATE_HANDLER: SEED_FILES[CREATE_HANDLER]})
    assert versions(repo) == before


def test_since_across_several_commits_by_sha_tag_and_relative_ref(repo: Path) -> None:
    start = head(repo)
    git(repo, "tag", "v1")
    prepend(repo, HANDLER, "# one")
    commit_all(repo, "one")
    prepend(repo, LABEL, "# two")
    commit_all(repo, "two")
    chmod(repo, AGENT)  # and an uncommitted change on top
    for ref in (start, start[:10], "v1", "HEAD~2", "main~2"):
        entries = plan(repo, ref)
        assert rebuilt(entries) == LABEL_AND_DEPENDENTS, ref
        assert entries[HARMONIZE].reasons == [
            f"{HANDLER} modified",
            f"mode of {AGENT} changed",
            "base base-receipt-agent changed",
        ]
        assert entries["base-receipt-label"].reasons == [f"{LABEL} modified"]
    entries = plan(repo, "HEAD")
    assert rebuilt(entries) == {HARMONIZE}
    assert entries[HARMONIZE].reasons == [f"mode of {AGENT} changed"]


def test_commit_versions_equal_worktree_versions_of_that_checkout(repo: Path) -> None:
    shas = [head(repo)]
    prepend(repo, DYNAMO, "# second")
    symlink(repo, "receipt_agent/link.py", "validate.py")
    commit_all(repo, "second")
    shas.append(head(repo))
    chmod(repo, HANDLER)
    (repo / "receipt_label/__init__.py").unlink()
    write(repo, {".dockerignore": "**/__pycache__\n"})
    commit_all(repo, "third")
    shas.append(head(repo))
    from_objects = [at(repo, sha) for sha in shas]  # no checkout needed
    assert len({json.dumps(v, sort_keys=True) for v in from_objects}) == 3
    for sha, expected in zip(shas, from_objects, strict=True):
        git(repo, "checkout", "-q", sha)
        assert versions(repo) == expected, sha


def test_commit_versions_ignore_the_working_tree_and_read_git_objects(repo: Path) -> None:
    at_head = at(repo, "HEAD")
    prepend(repo, HANDLER, "# dirty")
    write(repo, {"receipt_dynamo/untracked.py": "u\n"})
    chmod(repo, LABEL)
    assert at(repo, "HEAD") == at_head
    img = commit_versions(repo, "HEAD")[HARMONIZE]
    contents = {f.path: data for f, data in img.context.iter_contents()}
    assert contents[HANDLER] == SEED_FILES[HANDLER].encode()


@pytest.mark.parametrize("how", ["touch", "cp -a", "cp -r"])
def test_stat_stale_index_gives_the_same_versions(tmp_path: Path, how: str) -> None:
    """A restored CI cache or a copied checkout: every stat field in git's index is stale,
    no content changed."""
    repo = seed_repo(tmp_path / "receipts")
    before = versions(repo)
    if how == "touch":
        assert touch_all(repo) == len(SEED_FILES)
    else:
        repo = copy_repo(repo, tmp_path / "copy", preserve_times=how == "cp -a")
    # a content change hidden behind the same size and mtime, while the index is still
    # stale, is seen: stat-dirty files are compared by content, never trusted
    sneaky = copy_repo(repo, tmp_path / "sneaky", preserve_times=True)
    target = sneaky / DYNAMO
    st = target.stat()
    target.write_bytes(target.read_bytes().replace(b"table", b"TABLE"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size
    assert changed(before, versions(sneaky)) == set(ALL_IMAGES)
    # the stale checkout itself: same versions, and again after its index was refreshed
    assert versions(repo) == before
    assert versions(repo) == before


def test_stat_stale_index_of_a_bigger_repo_gives_the_same_versions(tmp_path: Path) -> None:
    """Hundreds of stat-dirty files take another path (git re-checks and refreshes its index
    once); content must still decide."""
    repo = seed_repo(tmp_path / "big")
    write(repo, {f"receipt_dynamo/gen/m{i:04}.py": f"X = {i}\n" for i in range(700)})
    commit_all(repo, "many files")
    before = versions(repo)
    copy = copy_repo(repo, tmp_path / "copy", preserve_times=False)
    assert versions(copy) == before
    touch_all(repo)
    target = repo / "receipt_dynamo/gen/m0500.py"
    target.write_text("X = 9999\n")  # a real change among 700 stat-dirty files
    os.utime(target, (1_000_000_000, 1_000_000_000))
    entries = plan(repo)
    assert rebuilt(entries) == set(ALL_IMAGES)
    assert entries["base-receipt-dynamo"].reasons == ["receipt_dynamo/gen/m0500.py modified"]


def test_unusual_file_names(repo: Path) -> None:
    names = [
        "receipt_agent/données é.py",
        "receipt_agent/with space.py",
        'receipt_agent/quote"d.py',
        "receipt_agent/new\nline.py",
        "receipt_agent/-dash.py",
    ]
    before = versions(repo)
    write(repo, {n: "x\n" for n in names})
    untracked = versions(repo)
    assert changed(before, untracked) == {HARMONIZE}
    assert set(names) <= set(context_paths(repo, HARMONIZE))
    commit_all(repo, "names")
    assert versions(repo) == at(repo, "HEAD") == untracked


def test_odd_working_tree_states(tmp_path: Path) -> None:
    """States a developer's tree is often in: intent-to-add, a file turned into a folder,
    a merge conflict, a submodule. None may crash `plan`; each has a defined version."""
    repo = seed_repo(tmp_path / "r")
    # `git add -N`: the same as untracked
    write(repo, {"receipt_agent/ita.py": "x\n"})
    untracked = versions(repo)
    git(repo, "add", "-N", "receipt_agent/ita.py")
    assert versions(repo) == untracked
    git(repo, "rm", "-q", "--cached", "receipt_agent/ita.py")
    (repo / "receipt_agent/ita.py").unlink()
    # a tracked file replaced by a folder of the same name
    (repo / AGENT).unlink()
    write(repo, {f"{AGENT}/inner.py": "x\n"})
    assert plan(repo)[HARMONIZE].reasons == [f"{AGENT} deleted", f"new file {AGENT}/inner.py"]
    shutil.rmtree(repo / AGENT)
    git(repo, "checkout", "-q", "HEAD", "--", AGENT)
    assert rebuilt(plan(repo)) == set()
    # a merge conflict: the file with its conflict markers is what a build would get
    git(repo, "checkout", "-q", "-b", "other")
    prepend(repo, AGENT, "# other")
    commit_all(repo, "other")
    git(repo, "checkout", "-q", "main")
    prepend(repo, AGENT, "# main")
    commit_all(repo, "main")
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "merge", "-q", "other")
    entries = plan(repo)
    assert rebuilt(entries) == {HARMONIZE}
    assert entries[HARMONIZE].reasons == [f"{AGENT} modified"]
    git(repo, "merge", "--abort")
    assert rebuilt(plan(repo)) == set()


def test_submodules_are_no_part_of_a_context(tmp_path: Path) -> None:
    repo = seed_repo(tmp_path / "r")
    before = versions(repo)
    vendored = seed_repo(tmp_path / "vendored")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(vendored),
        "receipt_agent/vendor")  # fmt: skip
    assert versions(repo) == before
    commit_all(repo, "submodule")
    assert versions(repo) == at(repo, "HEAD") == before


# --- what is hashed is what is shipped ----------------------------------------------------------


def test_build_context_ships_exactly_the_hashed_files(repo: Path) -> None:
    chmod(repo, HANDLER)
    symlink(repo, "receipt_agent/alias.py", "validate.py")
    img = worktree_versions(repo)[HARMONIZE]
    data = img.context.tar_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        shipped = {m for m, info in members.items() if not info.isdir()} - {DOCKERFILE_SLOT}
        assert sorted(shipped) == [f.path for f in img.files]
        folders = {m for m, info in members.items() if info.isdir()}
        assert folders == {p.rpartition("/")[0] for p in shipped} | {
            "infra",
            "infra/metadata_harmonizer_step_functions",
        }
        assert all(members[d].mode == 0o755 for d in folders)
        assert (
            tar.extractfile(DOCKERFILE_SLOT).read()
            == tar.extractfile(  # type: ignore[union-attr]
                img.spec.dockerfile
            ).read()
        )  # type: ignore[union-attr]
        assert members[HANDLER].mode == 0o755
        assert members[AGENT].mode == 0o644
        assert members["receipt_agent/alias.py"].issym()
        assert members["receipt_agent/alias.py"].linkname == "validate.py"
        assert tar.extractfile(AGENT).read() == SEED_FILES[AGENT].encode()  # type: ignore[union-attr]
    assert img.context.tar_bytes() == data  # reproducible
    assert img.context.zip_bytes() == img.context.zip_bytes()
    modes = {f.path: f.mode for f in img.files}
    assert modes[HANDLER] == MODE_EXEC and modes[AGENT] == MODE_FILE


def test_a_file_changed_after_hashing_fails_the_shipping(repo: Path) -> None:
    img = worktree_versions(repo)[HARMONIZE]
    prepend(repo, HANDLER, "# changed after hashing")
    with pytest.raises(ContextChangedError, match="harmonize_metadata.py"):
        img.context.tar_bytes()


def test_small_repo_without_dockerignore_or_gitignore(tmp_path: Path) -> None:
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
    assert context_paths(repo, "app") == ["Dockerfile", "src/a.py", "src/b/c.py"]
    write(repo, {"src/__pycache__/a.pyc": b"\x00"})  # no .dockerignore: it counts
    assert "src/__pycache__/a.pyc" in context_paths(repo, "app")


# --- the clean-tree cache -----------------------------------------------------------------------


def test_clean_tree_cache_is_used_only_for_the_same_state(repo: Path) -> None:
    full = worktree_versions(repo)  # computes and saves
    cache_file = repo / ".git" / versioncache.FILE
    assert cache_file.exists()
    cached = worktree_versions(repo)
    assert [(i.name, i.version) for i in cached] == [(i.name, i.version) for i in full]
    assert cached[HARMONIZE].files == full[HARMONIZE].files
    assert cached[HARMONIZE].file_count == full[HARMONIZE].file_count == 5

    data = json.loads(cache_file.read_text())
    data["body"]["images"][CREATE][0] = "f" * 64
    cache_file.write_text(json.dumps(data))  # hand-edited: its checksum no longer matches
    assert worktree_versions(repo)[CREATE].version == full[CREATE].version
    data["sum"] = versioncache._checksum(data["body"])  # prove that the next call reads it
    cache_file.write_text(json.dumps(data))
    assert worktree_versions(repo)[CREATE].version == "f" * 64
    prepend(repo, HANDLER, "# dirty: the cache is not consulted")
    assert worktree_versions(repo)[CREATE].version == full[CREATE].version
    git(repo, "add", "-A")  # staged: the index changed, and so does its digest
    assert worktree_versions(repo)[CREATE].version == full[CREATE].version
    commit_all(repo, "clean again, at another commit")
    assert versions(repo) == at(repo, "HEAD")


# --- bugs found by these tests, fixed -----------------------------------------------------


def test_dot_slash_source_path_is_normalised_or_rejected(repo: Path) -> None:
    replace_in(
        repo, "images.yaml", "source_paths: [receipt_label]", "source_paths: [./receipt_label]"
    )
    try:
        paths = context_paths(repo, "base-receipt-label")
    except ManifestError:
        return  # rejected as a bad path: fine too
    assert LABEL in paths


def test_dockerignore_character_class(repo: Path) -> None:
    write(repo, {".dockerignore": "**/[abcdefgh]oo.txt\n", "receipt_agent/aoo.txt": "x\n"})
    assert "receipt_agent/aoo.txt" not in context_paths(repo, HARMONIZE)


def test_sha256_repository_same_content_same_version(tmp_path: Path) -> None:
    repo = tmp_path / "s"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256", "-b", "main")
    write(repo, SEED_FILES)
    prepend(repo, HANDLER, "# edit")
    uncommitted = versions(repo)
    commit_all(repo, "all")
    assert versions(repo) == uncommitted == at(repo, "HEAD")
    # dirty files (also the Dockerfile, looked up by path) next to clean sha256 records
    dockerfile = "infra/create_labels/lambdas/Dockerfile"
    prepend(repo, dockerfile, "# dirty Dockerfile")
    write(repo, {"infra/create_labels/lambdas/new.py": "n\n"})
    assert context_paths(repo, CREATE) == [
        dockerfile,
        CREATE_HANDLER,
        "infra/create_labels/lambdas/new.py",
    ]
    dirty = worktree_versions(repo)[CREATE]
    assert all(len(f.blob) == 64 for f in dirty.files)
    with tarfile.open(fileobj=io.BytesIO(dirty.context.tar_bytes())) as tar:
        names = {m.name for m in tar.getmembers() if not m.isdir()} - {DOCKERFILE_SLOT}
        assert sorted(names) == [f.path for f in dirty.files]
    assert commit_versions(repo, "HEAD")[CREATE].context.tar_bytes()
    commit_all(repo, "dirty ones")
    assert versions(repo)[CREATE] == dirty.version


def test_eol_conversion_touch_keeps_the_version(repo: Path) -> None:
    write(
        repo,
        {".gitattributes": "*.bat text eol=crlf\n", "receipt_agent/run.bat": "@echo off\nrun\n"},
    )
    commit_all(repo, "a windows script")
    (repo / "receipt_agent/run.bat").unlink()
    git(repo, "checkout", "--", "receipt_agent/run.bat")  # checked out with CRLF
    assert b"\r\n" in (repo / "receipt_agent/run.bat").read_bytes()
    before = versions(repo)
    touch_all(repo)
    assert versions(repo) == before
    (repo / "receipt_agent/run.bat").write_bytes(b"@echo off\r\nrun twice\r\n")
    assert changed(before, versions(repo)) == {HARMONIZE}
    (repo / "receipt_agent/run.bat").write_bytes(b"@echo off\r\nrun\r\n")
    assert versions(repo) == before


def test_eol_conversion_clean_file_can_be_shipped(repo: Path) -> None:
    write(
        repo,
        {".gitattributes": "*.bat text eol=crlf\n", "receipt_agent/run.bat": "@echo off\nrun\n"},
    )
    commit_all(repo, "a windows script")
    (repo / "receipt_agent/run.bat").unlink()
    git(repo, "checkout", "--", "receipt_agent/run.bat")
    worktree_versions(repo)[HARMONIZE].context.tar_bytes()


# --- more bugs found by these tests, fixed ------------------------------------------------


def test_sparse_checkout_ships_the_versioned_content(repo: Path) -> None:
    before = versions(repo)
    git(repo, "sparse-checkout", "set", "--no-cone", "/*", f"!/{AGENT}")
    assert not (repo / AGENT).exists()
    assert versions(repo) == before  # versioned from the index: same as a full checkout
    img = worktree_versions(repo)[HARMONIZE]
    with tarfile.open(fileobj=io.BytesIO(img.context.tar_bytes())) as tar:
        assert tar.extractfile(AGENT).read() == SEED_FILES[AGENT].encode()  # type: ignore[union-attr]


def test_path_starting_with_a_double_quote(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "q",
        {
            "images.yaml": "images:\n  app:\n    dockerfile: Dockerfile\n"
            "    source_paths: ['\"odd']\n",
            "Dockerfile": "FROM scratch\n",
            '"odd/a.py': "a\n",
        },
    )
    before = versions(repo)
    write(repo, {'"odd/a.py': "b\n"})
    assert changed(before, versions(repo)) == {"app"}
