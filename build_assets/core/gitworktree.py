"""A snapshot of the working tree: the index's records with dirty, untracked and deleted
files applied, from git commands started in the background (`WorktreeScan`); the
git-ignored files of the scanned paths on request."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from build_assets.core.context import MODE_EXEC, MODE_FILE, MODE_LINK, ContextFile, git_blob_id
from build_assets.core.gitcmd import GIT, GitJob, pathspec, run
from build_assets.core.gitsnapshot import Snapshot, WorktreeReader, index_records, record


def files_from_disk(
    root: Path, paths: Iterable[str], algorithm: str
) -> dict[str, ContextFile | None]:
    """Hash working-tree files the way git would: regular files through one
    `git hash-object --stdin-paths` (so .gitattributes filters and eol conversion apply, and
    the repository's object format is used), symlinks by their target. None: gone or a folder.
    """
    out: dict[str, ContextFile | None] = {}
    regular: list[tuple[str, str]] = []
    base = os.fspath(root)
    for path in paths:
        full = os.path.join(base, path)  # a str: no Path object per file
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            out[path] = None
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full).encode("utf-8", "surrogateescape")
            out[path] = ContextFile(path, MODE_LINK, git_blob_id(target, algorithm))
        elif stat.S_ISREG(st.st_mode) and "\n" not in path and not path.startswith('"'):
            regular.append((path, MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE))
        elif stat.S_ISREG(st.st_mode):  # a name --stdin-paths would misread: hash it here
            mode = MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE
            with open(full, "rb") as fh:
                out[path] = ContextFile(path, mode, git_blob_id(fh.read(), algorithm))
        else:
            out[path] = None
    if regular:
        listing = "".join(f"{p}\n" for p, _ in regular).encode("utf-8", "surrogateescape")
        ids = run(["hash-object", "--stdin-paths"], root, input=listing).decode().split()
        for (path, mode), blob in zip(regular, ids, strict=True):
            out[path] = ContextFile(path, mode, blob)
    return out


class WorktreeScan:
    """The git commands of a working-tree snapshot, started in the background.

    Three cheap commands run in parallel: `ls-files --stage` (the index: blob ids of clean
    files, never read here), `diff-files` (files whose stat data differ from the index, with
    the index's blob id) and `ls-files --others --exclude-standard` (untracked, not
    ignored). Unlike `git status` they skip the index-vs-HEAD comparison, which a version
    does not need. Starting them first and importing/validating everything else meanwhile
    hides most of the interpreter's start-up.

    `diff-files` trusts stat data, so a stat-stale index (restored CI cache, a checkout
    within the same second) lists files whose content did not change: each is hashed and
    compared with the index's blob id, never trusted blindly, and when any such file turns
    up git's index is refreshed once (what `git status` does) so the next run is fast.
    """

    def __init__(self, root: Path, paths: Iterable[str] | None = None) -> None:
        self.root = root
        self._spec = pathspec(paths)
        self._git_dir = GitJob(root, ["rev-parse", "--absolute-git-dir", "--show-object-format"])
        self._index: GitJob | None = None  # started on the first snapshot(): a cache hit skips it
        self._dirty = GitJob(root, ["diff-files", "-z", *self._spec])
        self._untracked = GitJob(
            root, ["ls-files", "--others", "--exclude-standard", "-z", *self._spec]
        )

    def start_ignored(self) -> None:
        """Start listing the git-ignored files of the scanned paths in the background (a
        wholly ignored folder as one `folder/` entry): only `plan`'s warning about files a
        COPY loses needs them, and only when versions are computed."""
        if getattr(self, "_ignored", None) is None:
            args = ["ls-files", "--others", "--ignored", "--exclude-standard", "--directory"]
            self._ignored = GitJob(self.root, [*args, "-z", *self._spec])

    def ignored(self) -> list[str]:
        """The git-ignored paths `start_ignored` listed (sorted; folders end with '/')."""
        self.start_ignored()
        out = self._ignored.result(self.root).decode("utf-8", "surrogateescape")
        return sorted(p for p in out.split("\0") if p)

    def covers(self, paths: Iterable[str]) -> bool:
        """True when this scan looked at every one of `paths` (its pathspec includes them)."""
        if not self._spec:
            return True
        return set(pathspec(paths)[1:]) <= set(self._spec[1:])

    @functools.cached_property
    def _rev_parse(self) -> list[str]:
        return self._git_dir.result(self.root).decode().split("\n")

    @property
    def git_dir(self) -> Path:
        return Path(self._rev_parse[0])

    @property
    def object_format(self) -> str:
        """sha1 or sha256: the hash of this repository's object ids."""
        return self._rev_parse[1].strip() or "sha1"

    @functools.cached_property
    def index_digest(self) -> str:
        """sha1 of git's index file: equal digests mean an identical index (stat data too)."""
        self.changes  # noqa: B018 - a refresh of the index, if any, happens first
        try:
            return hashlib.sha1((self.git_dir / "index").read_bytes()).hexdigest()
        except FileNotFoundError:
            return "no-index"

    def index_rewritten(self) -> None:
        """Forget the index digest: a git command (`write-tree`) rewrote the index file."""
        self.__dict__.pop("index_digest", None)

    @functools.cached_property
    def changes(self) -> dict[str, str | None]:
        """Working-tree files whose content differs from the index, under the scanned paths:
        path -> canonical record, or None when deleted (untracked files included)."""
        changed: dict[str, str | None] = {}
        stat_only = 0
        fields = self._dirty.result(self.root).decode("utf-8", "surrogateescape").split("\0")
        # ":<index mode> <worktree mode> <index blob> <worktree blob> <status>", path
        dirty = {
            path: meta[1:].split(" ")[::2][:2]  # [index mode, index blob]
            for meta, path in zip(fields[0:-1:2], fields[1::2], strict=False)
        }
        untracked = _paths(self._untracked.result(self.root))
        on_disk = files_from_disk(self.root, [*dirty, *untracked], self.object_format)
        for path, (index_mode, index_blob) in dirty.items():
            disk = on_disk[path]
            if disk is not None and (disk.mode, disk.blob) == (index_mode, index_blob):
                stat_only += 1  # same content, stale stat data
                continue
            changed[path] = None if disk is None else record(*disk)
        for path in untracked:
            disk = on_disk[path]
            if disk is not None:
                changed[path] = record(*disk)
        if stat_only:
            subprocess.run(
                [*GIT, "update-index", "-q", "--refresh"], cwd=self.root, capture_output=True
            )
        return changed

    @property
    def clean(self) -> bool:
        """True when the working tree's content matches the index under the scanned paths."""
        return not self.changes

    def tracked_differ(self) -> bool:
        """True when git's stat check lists tracked files as differing from the index (only
        that command is waited for: usually they did change, and the caches will miss)."""
        return bool(self._dirty.result(self.root))

    def prefetch(self) -> None:
        """Start listing the index now (a caller about to import and validate meanwhile)."""
        if self._index is None:
            self._index = GitJob(self.root, ["ls-files", "--stage", "-z", *self._spec])

    @functools.cached_property
    def index_snapshot(self) -> Snapshot:
        """The index's files, sorted by path (parsed once; a caller can have it parsed while
        git still lists untracked files)."""
        self.prefetch()
        records = index_records(self._index.result(self.root).decode("utf-8", "surrogateescape"))
        return Snapshot(self.root, records, None, WorktreeReader(self.root))

    def snapshot(self) -> Snapshot:
        """The working tree's files (tracked + untracked-not-ignored), sorted by path."""
        snap = self.index_snapshot
        return apply_changes(snap, self.changes) if self.changes else snap


def _paths(out: bytes) -> list[str]:
    return [p for p in out.decode("utf-8", errors="surrogateescape").split("\0") if p]


def apply_changes(snap: Snapshot, changed: dict[str, str | None]) -> Snapshot:
    """`snap` with dirty/untracked/deleted working-tree files applied, still sorted."""
    records = list(snap.records)
    added: list[tuple[str, str]] = []
    removed: set[int] = set()
    for path, rec in changed.items():
        i = snap.index_of(path)
        if i is None:
            if rec is not None:
                added.append((path, rec))
        elif rec is None:
            removed.add(i)
        else:
            records[i] = rec
    if not removed and not added:  # only content changed: the same paths, in order
        return Snapshot(snap.root, records, None, snap.reader, snap.paths)
    if removed:
        records = [r for i, r in enumerate(records) if i not in removed]
    if added:
        keep_paths = [p for i, p in enumerate(snap.paths) if i not in removed]
        pairs = sorted([*zip(keep_paths, records, strict=True), *added])
        records = [r for _, r in pairs]
    return Snapshot(snap.root, records, None, snap.reader)
