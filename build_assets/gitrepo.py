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
import os
import stat
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from build_assets.context import MODE_EXEC, MODE_FILE, MODE_LINK, ContextFile, git_blob_id
from build_assets.errors import GitError

_GIT = ("git", "-c", "core.quotepath=off", "--literal-pathspecs")
_REGULAR_MODES = {MODE_FILE, MODE_EXEC, MODE_LINK}


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


@dataclass
class Snapshot:
    """Files of a repo at one moment, sorted by path, with a way to read their content."""

    root: Path
    files: list[ContextFile]  # sorted by path
    commit: str | None  # None for the working tree
    reader: WorktreeReader | GitObjectReader

    def __post_init__(self) -> None:
        self._paths = [f.path for f in self.files]
        self._index = {f.path: f for f in self.files}

    def get(self, path: str) -> ContextFile | None:
        return self._index.get(path)

    def exists(self, path: str) -> bool:
        """True if `path` is a file of the snapshot or a folder holding at least one."""
        path = path.rstrip("/")
        if path in self._index:
            return True
        prefix = path + "/"
        i = bisect.bisect_left(self._paths, prefix)
        return i < len(self._paths) and self._paths[i].startswith(prefix)

    def under(self, path: str) -> list[ContextFile]:
        """The file `path` itself, or every file below the folder `path` (prefix range)."""
        path = path.rstrip("/")
        if path in ("", "."):
            return list(self.files)
        found = [self._index[path]] if path in self._index else []
        prefix = path + "/"
        lo = bisect.bisect_left(self._paths, prefix)
        hi = bisect.bisect_left(self._paths, path + "0")  # '0' sorts right after '/'
        return found + self.files[lo:hi]

    def read_text(self, path: str) -> str | None:
        """Content of a file of the snapshot as text, or None when absent."""
        f = self._index.get(path)
        if f is None:
            return None
        return self.reader.read(f).decode("utf-8", errors="replace")


class WorktreeReader:
    """Reads context files from the working tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, file: ContextFile) -> bytes:
        full = self.root / file.path
        if file.mode == MODE_LINK:
            return os.readlink(full).encode()
        return full.read_bytes()


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
    if paths is None:
        return []
    return ["--", *sorted({p.rstrip("/") or "." for p in paths})]


def _file_from_disk(root: Path, path: str) -> ContextFile | None:
    """Hash a working-tree file the way git would (None if it is gone or not a file)."""
    full = root / path
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ContextFile(path, MODE_LINK, git_blob_id(os.readlink(full).encode()))
    if not stat.S_ISREG(st.st_mode):
        return None
    mode = MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE
    return ContextFile(path, mode, git_blob_id(full.read_bytes()))


def worktree_snapshot(root: Path, paths: Iterable[str] | None = None) -> Snapshot:
    """Files of the working tree (tracked + untracked-not-ignored) under `paths` (None = all)."""
    spec = _pathspec(paths)
    ls = subprocess.Popen(
        [*_GIT, "ls-files", "--stage", "-z", *spec],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    status = _run(
        [
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--ignore-submodules=all",
            *spec,
        ],
        root,
    )
    out, err = ls.communicate()
    if ls.returncode != 0:
        raise GitError(f"git ls-files failed in {root}: {err.decode(errors='replace').strip()}")

    files: dict[str, ContextFile] = {}
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, path_b = rec.partition(b"\t")
        mode = meta[:6].decode()
        if mode not in _REGULAR_MODES:
            continue  # submodules (160000) are not part of a Docker context
        path = path_b.decode("utf-8", errors="surrogateescape")
        files[path] = ContextFile(path, mode, meta[7:47].decode())

    for rec in status.split(b"\0"):
        if len(rec) < 4:
            continue
        xy, path = rec[:2], rec[3:].decode("utf-8", errors="surrogateescape")
        if xy[1:2] == b" " and xy != b"??" and b"U" not in xy:
            continue  # the index already holds the working tree's content
        disk = _file_from_disk(root, path)
        if disk is None:
            files.pop(path, None)
        else:
            files[path] = disk
    ordered = sorted(files.values(), key=lambda f: f.path)
    return Snapshot(root=root, files=ordered, commit=None, reader=WorktreeReader(root))


def commit_snapshot(root: Path, commit: str, paths: Iterable[str] | None = None) -> Snapshot:
    """Files of `commit` under `paths` (None = all), read from git objects without a checkout."""
    out = _run(["ls-tree", "-r", "-z", "--full-tree", commit, *_pathspec(paths)], root)
    files = []
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, path_b = rec.partition(b"\t")
        mode, kind, blob = meta.decode().split(" ")
        if kind != "blob" or mode not in _REGULAR_MODES:
            continue
        files.append(ContextFile(path_b.decode("utf-8", errors="surrogateescape"), mode, blob))
    files.sort(key=lambda f: f.path)
    return Snapshot(root=root, files=files, commit=commit, reader=GitObjectReader(root))


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
