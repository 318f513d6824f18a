"""A snapshot of a repository's files: sorted canonical records (git's index lines), read
from the working tree (`WorktreeReader`) or from git's objects (`GitObjectReader`)."""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from build_assets.core.context import (
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    ContextFile,
    algorithm_of,
    git_blob_id,
)
from build_assets.errors import GitError

MODES = f"({MODE_FILE}|{MODE_EXEC}|{MODE_LINK})"
# `git ls-files --stage -z` records: "<mode> <blob> <stage>\t<path>"
INDEX_LINE_RE = re.compile(MODES + r" [0-9a-f]{40,64} 0\t.*", re.S)
# "<mode> " of the index records that are files of a context (not submodules, sparse-index
# directories)
PLAIN_MODES = frozenset(f"{mode} " for mode in (MODE_FILE, MODE_EXEC, MODE_LINK))
# `git ls-tree -r -z`: "<mode> blob <blob>\t<path>\0"


def record(path: str, mode: str, blob: str) -> str:
    """A file as one canonical record: git's index line `<mode> <blob> 0\t<path>`."""
    return f"{mode} {blob} 0\t{path}"


def parse_record(rec: str) -> ContextFile:
    """The ContextFile of a canonical record."""
    meta, _, path = rec.partition("\t")
    mode, blob, _ = meta.split(" ", 2)
    return ContextFile(path, mode, blob)


def index_records(text: str) -> list[str]:
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
        and {r[:7] for r in records} <= PLAIN_MODES
    ):
        return records
    return [r for r in records if INDEX_LINE_RE.fullmatch(r)]


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
