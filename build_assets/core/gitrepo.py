"""Thin, fast access to git: file snapshots of the working tree or of any commit.

A snapshot is the sorted list of files (path, git mode, blob id) that a build could see:

* working tree: one ``git ls-files --stage`` (index blob ids, so clean files are never read)
  plus one ``git status`` (content-verified: a stat-stale index is re-checked by git itself);
  only dirty and untracked files are read and hashed here. This is how Turborepo hashes.
* a commit: one ``git ls-tree -r`` — no checkout; contents come from ``git cat-file --batch``.

Both calls can be limited to the path prefixes the manifest uses, so the cost follows the
size of the images' contexts rather than of the whole monorepo.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from build_assets.core.context import (
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    ContextFile,
    algorithm_of,
    git_blob_id,
)
from build_assets.errors import GitError

_GIT = ("git", "-c", "core.quotepath=off", "--literal-pathspecs")
_MODES = f"({MODE_FILE}|{MODE_EXEC}|{MODE_LINK})"
# `git ls-files --stage -z` records: "<mode> <blob> <stage>\t<path>"
_INDEX_LINE_RE = re.compile(_MODES + r" [0-9a-f]{40,64} 0\t.*", re.S)
# "<mode> " of the index records that are files of a context (not submodules, sparse-index
# directories)
_PLAIN_MODES = frozenset(f"{mode} " for mode in (MODE_FILE, MODE_EXEC, MODE_LINK))
# `git ls-tree -r -z`: "<mode> blob <blob>\t<path>\0"
_TREE_RE = re.compile(_MODES + r" blob ([0-9a-f]{40,64})\t([^\0]*)\0")


def _run(args: Sequence[str], cwd: Path, *, input: bytes | None = None) -> bytes:
    proc = subprocess.run([*_GIT, *args], cwd=cwd, input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {msg[-1] if msg else '?'}")
    return proc.stdout


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


def record(path: str, mode: str, blob: str) -> str:
    """A file as one canonical record: git's index line `<mode> <blob> 0\t<path>`."""
    return f"{mode} {blob} 0\t{path}"


def parse_record(rec: str) -> ContextFile:
    """The ContextFile of a canonical record."""
    meta, _, path = rec.partition("\t")
    mode, blob, _ = meta.split(" ", 2)
    return ContextFile(path, mode, blob)


class Snapshot:
    """Files of a repo at one moment, sorted by path, with a way to read their content.

    Files are kept as git's own index records (`<mode> <blob> 0\t<path>`): a large monorepo
    has 100,000s of files, and versions are hashed straight from slices of this list, so no
    per-file Python object is made unless a build or a plan reason needs one.
    """

    def __init__(
        self,
        root: Path,
        records: list[str],
        commit: str | None,
        reader: WorktreeReader | GitObjectReader,
        paths: list[str] | None = None,
    ) -> None:
        self.root = root
        self.records = records  # sorted by path
        self.commit = commit
        self.reader = reader
        if paths is not None:  # known already (the same files, some records replaced)
            self.paths = paths
            return
        skip = records[0].index("\t") + 1 if records else 0
        if all(len(r) > skip and r[skip - 1] == "\t" for r in records[:1]):
            self.paths = [r[skip:] for r in records]  # every record has the same prefix length
        else:  # pragma: no cover - defensive
            self.paths = [r.partition("\t")[2] for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def screened(self, screen: Callable[[list[str]], list[int]]) -> list[int]:
        """`screen(self.paths)` (sorted indices), computed once per screen and snapshot."""
        memo = self.__dict__.setdefault("_screened", {})
        if screen not in memo:
            memo[screen] = screen(self.paths)
        return memo[screen]

    def index_of(self, path: str) -> int | None:
        i = bisect.bisect_left(self.paths, path)
        return i if i < len(self.paths) and self.paths[i] == path else None

    def get(self, path: str) -> ContextFile | None:
        i = self.index_of(path)
        return None if i is None else parse_record(self.records[i])

    def file(self, i: int) -> ContextFile:
        return parse_record(self.records[i])

    def range_of(self, path: str) -> tuple[int, int]:
        """Index range of the file `path`, or of every file below the folder `path`."""
        path = path.strip("/")
        if path in ("", "."):
            return 0, len(self.paths)
        i = self.index_of(path)
        if i is not None:
            return i, i + 1
        lo = bisect.bisect_left(self.paths, path + "/")
        hi = bisect.bisect_left(self.paths, path + "0", lo)  # '0' sorts right after '/'
        return lo, hi

    def exists(self, path: str) -> bool:
        """True if `path` is a file of the snapshot or a folder holding at least one."""
        lo, hi = self.range_of(path)
        return hi > lo

    def read_text(self, path: str) -> str | None:
        """Content of a file of the snapshot as text, or None when absent."""
        f = self.get(path)
        if f is None:
            return None
        return self.reader.read(f).decode("utf-8", errors="replace")


class WorktreeReader:
    """Reads context files from the working tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, file: ContextFile) -> bytes:
        """The file's content as git hashed it: the bytes on disk, or — when .gitattributes
        filters (eol=crlf, clean filters) make them differ from the blob — git's own
        normalised content, so what is shipped is what was versioned."""
        full = self.root / file.path
        if file.mode == MODE_LINK:
            return os.readlink(full).encode("utf-8", "surrogateescape")
        try:
            data = full.read_bytes()
        except FileNotFoundError:
            # outside a sparse checkout (skip-worktree): the index's blob is the content
            return GitObjectReader(self.root).read_object(file.blob)
        if git_blob_id(data, algorithm_of(file.blob)) == file.blob:
            return data
        proc = subprocess.run(
            ["git", "hash-object", "-w", "--", file.path],
            cwd=self.root,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0 or proc.stdout.decode().strip() != file.blob:
            return data  # really changed since hashing: BuildContext reports it
        return GitObjectReader(self.root).read_object(file.blob)


class GitObjectReader:
    """Reads blobs from git's object store through one long-lived `git cat-file --batch`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def read(self, file: ContextFile) -> bytes:
        return self.read_object(file.blob)

    def read_object(self, name: str) -> bytes:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    ["git", "cat-file", "--batch"],
                    cwd=self.root,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            assert self._proc.stdin and self._proc.stdout
            self._proc.stdin.write(name.encode() + b"\n")
            self._proc.stdin.flush()
            header = self._proc.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":
                raise GitError(f"git object {name} not found in {self.root}")
            size = int(header[2])
            data = self._proc.stdout.read(size)
            self._proc.stdout.read(1)  # trailing newline
            return data

    def close(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            self._proc.wait()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()


def _pathspec(paths: Iterable[str] | None) -> list[str]:
    """Limit git to the top-level folders of `paths`: git matches every file against every
    pathspec, so hundreds of precise ones cost more than they save; callers filter exactly."""
    if paths is None:
        return []
    tops = {p.strip("/").split("/", 1)[0] for p in paths}
    if "" in tops or "." in tops:
        return []
    return ["--", *sorted(tops)]


def _files_from_disk(
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
        ids = _run(["hash-object", "--stdin-paths"], root, input=listing).decode().split()
        for (path, mode), blob in zip(regular, ids, strict=True):
            out[path] = ContextFile(path, mode, blob)
    return out


class _Git:
    """One git command started in the background, its output drained by a thread."""

    def __init__(self, root: Path, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*_GIT, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out: tuple[bytes, bytes] = (b"", b"")
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        self._out = self.proc.communicate()

    def result(self, root: Path) -> bytes:
        self._thread.join()
        out, err = self._out
        if self.proc.returncode != 0:
            msg = err.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {self.args[0]} failed in {root}: {msg[-1] if msg else '?'}")
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
        self._spec = _pathspec(paths)
        self._git_dir = _Git(root, ["rev-parse", "--absolute-git-dir", "--show-object-format"])
        self._index: _Git | None = None  # started on the first snapshot(): a cache hit skips it
        self._dirty = _Git(root, ["diff-files", "-z", *self._spec])
        self._untracked = _Git(
            root, ["ls-files", "--others", "--exclude-standard", "-z", *self._spec]
        )

    def start_ignored(self) -> None:
        """Start listing the git-ignored files of the scanned paths in the background (a
        wholly ignored folder as one `folder/` entry): only `plan`'s warning about files a
        COPY loses needs them, and only when versions are computed."""
        if getattr(self, "_ignored", None) is None:
            args = ["ls-files", "--others", "--ignored", "--exclude-standard", "--directory"]
            self._ignored = _Git(self.root, [*args, "-z", *self._spec])

    def ignored(self) -> list[str]:
        """The git-ignored paths `start_ignored` listed (sorted; folders end with '/')."""
        self.start_ignored()
        out = self._ignored.result(self.root).decode("utf-8", "surrogateescape")
        return sorted(p for p in out.split("\0") if p)

    def covers(self, paths: Iterable[str]) -> bool:
        """True when this scan looked at every one of `paths` (its pathspec includes them)."""
        if not self._spec:
            return True
        return set(_pathspec(paths)[1:]) <= set(self._spec[1:])

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
        on_disk = _files_from_disk(self.root, [*dirty, *untracked], self.object_format)
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
                [*_GIT, "update-index", "-q", "--refresh"], cwd=self.root, capture_output=True
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
            self._index = _Git(self.root, ["ls-files", "--stage", "-z", *self._spec])

    @functools.cached_property
    def index_snapshot(self) -> Snapshot:
        """The index's files, sorted by path (parsed once; a caller can have it parsed while
        git still lists untracked files)."""
        self.prefetch()
        records = _index_records(self._index.result(self.root).decode("utf-8", "surrogateescape"))
        return Snapshot(self.root, records, None, WorktreeReader(self.root))

    def snapshot(self) -> Snapshot:
        """The working tree's files (tracked + untracked-not-ignored), sorted by path."""
        snap = self.index_snapshot
        return _apply_changes(snap, self.changes) if self.changes else snap


def _paths(out: bytes) -> list[str]:
    return [p for p in out.decode("utf-8", errors="surrogateescape").split("\0") if p]


def _index_records(text: str) -> list[str]:
    """Canonical records of `git ls-files --stage -z` output: regular files, executables and
    symlinks at stage 0 (submodules are no part of a Docker context; conflicts come from
    status). The common case, a clean index of such files, costs one split and two scans."""
    records = text.split("\0")
    records.pop()  # after the last NUL
    # "<mode> <id> <stage>\t<path>": one id length per repository, so the stage sits at one
    # offset; two set comprehensions over slices cost less than substring scans of the text
    at = records[0].find(" ", 7) if records else 0
    if (
        at in (47, 71)
        and {r[at : at + 3] for r in records} == {" 0\t"}
        and {r[:7] for r in records} <= _PLAIN_MODES
    ):
        return records
    return [r for r in records if _INDEX_LINE_RE.fullmatch(r)]


def _apply_changes(snap: Snapshot, changed: dict[str, str | None]) -> Snapshot:
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


# `git ls-tree --format` (git >= 2.36) prints canonical records directly: no parsing here
_TREE_FORMAT = "--format=%(objectmode) %(objectname) 0%x09%(path)"


class CommitListing:
    """`commit_snapshot` started in the background, for a caller with other work meanwhile."""

    def __init__(self, root: Path, commit: str, paths: Iterable[str] | None) -> None:
        self.root, self.commit, self._spec = root, commit, _pathspec(paths)
        args = ["ls-tree", "-r", "-z", "--full-tree", _TREE_FORMAT, commit, *self._spec]
        self._git = _Git(root, args)

    def covers(self, paths: Iterable[str]) -> bool:
        """True when this listing holds every one of `paths` (its pathspec includes them)."""
        return not self._spec or set(_pathspec(paths)[1:]) <= set(self._spec[1:])

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
        out = _run([*args, _TREE_FORMAT, commit, *_pathspec(paths)], root)
    except GitError:  # an older git without --format
        out = None
    if out is not None:
        return _tree_snapshot(root, commit, out)
    out = _run([*args, commit, *_pathspec(paths)], root)
    text = out.decode("utf-8", errors="surrogateescape")
    pairs = [(path, record(path, mode, blob)) for mode, blob, path in _TREE_RE.findall(text)]
    pairs.sort()  # tree order can differ from path order around '/' in rare names
    return Snapshot(root, [r for _, r in pairs], commit, GitObjectReader(root))


def _tree_snapshot(root: Path, commit: str, out: bytes) -> Snapshot:
    """The snapshot of `ls-tree --format` output (canonical records)."""
    records = _index_records(out.decode("utf-8", errors="surrogateescape"))
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
