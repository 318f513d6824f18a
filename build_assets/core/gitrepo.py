"""Thin, fast access to git: file snapshots of the working tree or of any commit.

A snapshot is the sorted list of files (path, git mode, blob id) that a build could see:

* working tree: one ``git ls-files --stage`` (index blob ids, so clean files are never read)
  plus one ``git status`` (content-verified: a stat-stale index is re-checked by git itself);
  only dirty and untracked files are read and hashed here. This is how Turborepo hashes.
* a commit: one ``git ls-tree -r`` — no checkout; contents come from ``git cat-file --batch``.

Both calls can be limited to the path prefixes the manifest uses, so the cost follows the
size of the images' contexts rather than of the whole monorepo.

This module resolves refs and lists commits and trees; the snapshot type and its readers are
`gitsnapshot`, the working-tree scan `gitworktree`, running git `gitcmd`. Their public names
are importable from here too.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from build_assets.core.gitcmd import GitJob, pathspec, run
from build_assets.core.gitsnapshot import (
    INDEX_LINE_RE,
    MODES,
    GitObjectReader,
    Snapshot,
    WorktreeReader,
    index_records,
    parse_record,
    record,
)
from build_assets.core.gitworktree import WorktreeScan
from build_assets.errors import GitError

__all__ = [
    "CommitListing",
    "CommitRef",
    "GitObjectReader",
    "RefFiles",
    "Snapshot",
    "WorktreeReader",
    "WorktreeScan",
    "commit_snapshot",
    "index_tree",
    "parse_record",
    "read_file_at",
    "record",
    "repo_root",
    "resolve_commit",
    "resolve_commit_tree",
]

# the old private names, still imported by `sincediff` and a test
_run = run
_INDEX_LINE_RE = INDEX_LINE_RE
_index_records = index_records

# `git ls-tree -r -z`: "<mode> blob <blob>\t<path>\0"
_TREE_RE = re.compile(MODES + r" blob ([0-9a-f]{40,64})\t([^\0]*)\0")


def repo_root(folder: str | Path) -> Path:
    """The top level of the git work tree containing `folder` (GitError if there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GitError(f"{folder}: no such folder")
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise GitError(f"{folder}: not a git repository (run `git init` or pass --repo)")
    return Path(proc.stdout.decode().strip())


def resolve_commit(root: Path, ref: str) -> str:
    """Full sha of `ref` (GitError naming the ref when it does not exist)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"unknown git ref '{ref}' in {root}")
    return proc.stdout.decode().strip()


class CommitRef(NamedTuple):
    """A ref resolved once: its commit, that commit's tree and the repository's git folder."""

    commit: str
    tree: str
    git_dir: Path


def resolve_commit_tree(root: Path, ref: str) -> CommitRef:
    """Commit and tree ids of `ref` and the git folder, in one `git rev-parse` (GitError naming
    the ref when it is no commit)."""
    proc = subprocess.run(
        [
            "git",
            "rev-parse",
            "--absolute-git-dir",
            "--end-of-options",
            f"{ref}^{{commit}}",
            f"{ref}^{{tree}}",
            "--",
        ],
        cwd=root,
        capture_output=True,
        check=False,
    )
    lines = proc.stdout.decode(errors="replace").splitlines()
    ids = [x for x in lines[1:] if len(x) in (40, 64) and all(c in _HEX for c in x)]
    if proc.returncode != 0 or len(ids) != 2:
        raise GitError(f"unknown git ref '{ref}' in {root}")
    return CommitRef(ids[0], ids[1], Path(lines[0]))


_HEX = frozenset("0123456789abcdef")


def index_tree(root: Path) -> str | None:
    """The tree id of git's index (`git write-tree`: instant while the index's cached trees
    are valid), or None when it has none (conflicts, no index)."""
    proc = subprocess.run(["git", "write-tree"], cwd=root, capture_output=True, check=False)
    out = proc.stdout.decode().strip()
    return out if proc.returncode == 0 and len(out) in (40, 64) else None


# `git ls-tree --format` (git >= 2.36) prints canonical records directly: no parsing here
_TREE_FORMAT = "--format=%(objectmode) %(objectname) 0%x09%(path)"


class CommitListing:
    """`commit_snapshot` started in the background, for a caller with other work meanwhile."""

    def __init__(self, root: Path, commit: str, paths: Iterable[str] | None) -> None:
        self.root, self.commit, self._spec = root, commit, pathspec(paths)
        args = ["ls-tree", "-r", "-z", "--full-tree", _TREE_FORMAT, commit, *self._spec]
        self._git = GitJob(root, args)

    def covers(self, paths: Iterable[str]) -> bool:
        """True when this listing holds every one of `paths` (its pathspec includes them)."""
        return not self._spec or set(pathspec(paths)[1:]) <= set(self._spec[1:])

    def snapshot(self, paths: Iterable[str] | None) -> Snapshot:
        """The snapshot (`commit_snapshot(root, commit, paths)`; `paths` must be covered)."""
        try:
            out = self._git.result(self.root)
        except GitError:  # an older git without --format: the usual way
            return commit_snapshot(self.root, self.commit, paths)
        return _tree_snapshot(self.root, self.commit, out)


def commit_snapshot(root: Path, commit: str, paths: Iterable[str] | None = None) -> Snapshot:
    """Files of `commit` under `paths` (None = all), read from git objects without a checkout."""
    args = ["ls-tree", "-r", "-z", "--full-tree"]
    try:
        out = run([*args, _TREE_FORMAT, commit, *pathspec(paths)], root)
    except GitError:  # an older git without --format
        out = None
    if out is not None:
        return _tree_snapshot(root, commit, out)
    out = run([*args, commit, *pathspec(paths)], root)
    text = out.decode("utf-8", errors="surrogateescape")
    pairs = [(path, record(path, mode, blob)) for mode, blob, path in _TREE_RE.findall(text)]
    pairs.sort()  # tree order can differ from path order around '/' in rare names
    return Snapshot(root, [r for _, r in pairs], commit, GitObjectReader(root))


def _tree_snapshot(root: Path, commit: str, out: bytes) -> Snapshot:
    """The snapshot of `ls-tree --format` output (canonical records)."""
    records = index_records(out.decode("utf-8", errors="surrogateescape"))
    snap = Snapshot(root, records, commit, GitObjectReader(root))
    if snap.paths != sorted(snap.paths):  # tree order differs around '/' in rare names
        pairs = sorted(zip(snap.paths, records, strict=True))
        snap = Snapshot(root, [r for _, r in pairs], commit, snap.reader)
    return snap


def read_file_at(root: Path, commit: str, path: str) -> str | None:
    """Text of `path` at `commit`, or None when it does not exist there."""
    proc = subprocess.run(
        ["git", "cat-file", "blob", f"{commit}:{path}"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", errors="replace")


class RefFiles:
    """A ref's commit and tree ids and the text of some of its files, asked of one
    `git cat-file --batch` started in the background (no process per question)."""

    def __init__(self, root: Path, ref: str, paths: Sequence[str]) -> None:
        names = [f"{ref}^{{commit}}", f"{ref}^{{tree}}", *(f"{ref}:{p}" for p in paths)]
        self._count = len(names)
        self._out: bytes | None = None
        self._thread: threading.Thread | None = None
        if any("\n" in n or "\r" in n for n in names):
            return  # not one line each: the caller asks git one question at a time
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        data = "".join(f"{n}\n" for n in names).encode("utf-8", "surrogateescape")
        self._thread = threading.Thread(target=self._drain, args=(data,), daemon=True)
        self._thread.start()

    def _drain(self, data: bytes) -> None:
        out, _ = self._proc.communicate(data)
        self._out = out if self._proc.returncode == 0 else None

    def result(self) -> tuple[str, str, list[str | None]] | None:
        """(commit, tree, [text of each path, None when absent]), or None when the ref is no
        commit or the answer is odd (the caller then asks the usual way, for its error)."""
        if self._thread is None:
            return None
        self._thread.join()
        out, pos, answers = self._out, 0, []
        if out is None:
            return None
        for _ in range(self._count):
            end = out.find(b"\n", pos)
            if end < 0:
                return None
            header = out[pos:end].split(b" ")
            if len(header) != 3 or not header[2].isdigit():  # "<name> missing", ambiguous
                answers.append(None)
                pos = end + 1
                continue
            size = int(header[2])
            answers.append((header[0].decode(), header[1], out[end + 1 : end + 1 + size]))
            pos = end + 2 + size
        commit, tree, *files = answers
        if commit is None or commit[1] != b"commit" or tree is None or tree[1] != b"tree":
            return None
        texts = [
            f[2].decode("utf-8", errors="replace") if f is not None and f[1] == b"blob" else None
            for f in files
        ]
        return commit[0], tree[0], texts
