"""A build context: exactly the files Docker would ship, and deterministic archives of them.

The same selection is hashed by `versioning` and shipped by every builder, so what is built can
never differ from what was versioned. Every archive also carries the Dockerfile to build from
at `DOCKERFILE_SLOT` (with locked FROMs pinned); the build script moves it out of the context
before building, so the context itself holds the Dockerfile only where Docker would ship it
(an ignore file can exclude it: Docker reads it for the build, but COPY never sees it).
Archives are byte-for-byte reproducible: sorted entries, zero timestamps and owners, modes
normalised to 0644 / 0755 / symlink.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple, Protocol

MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"
MODE_DIR = "040000"  # a folder Docker ships empty (in version listings only)

# Where every archive carries the Dockerfile the build reads (moved out of the context by
# scripts/build_image.sh before `docker build`); no context file may live under this folder.
DOCKERFILE_SLOT = ".build-assets/Dockerfile"

# 1980-01-01, the earliest timestamp a zip file can hold
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ContextFile(NamedTuple):
    """One file of a context: repo-relative POSIX path, git mode and git blob id.

    A named tuple (not a dataclass): a large monorepo has 100,000s of them and tuples are
    created and sorted (by path first) several times faster.
    """

    path: str
    mode: str
    blob: str


class ContentReader(Protocol):
    """Reads the content of context files (working tree or git objects)."""

    def read(self, file: ContextFile) -> bytes:
        """Return the bytes of `file` (the link target for a symlink)."""


def folders_of(files: Iterable[ContextFile], empty: Iterable[str] = ()) -> tuple[str, ...]:
    """Every folder of a context, sorted: the parents of its files and the `empty` ones."""
    out: set[str] = set()
    for folder in empty:
        while folder and folder not in out:
            out.add(folder)
            folder = folder.rpartition("/")[0]
    for f in files:
        folder = f.path.rpartition("/")[0]
        while folder and folder not in out:
            out.add(folder)
            folder = folder.rpartition("/")[0]
    return tuple(sorted(out))


def git_blob_id(data: bytes, algorithm: str = "sha1") -> str:
    """The id git gives a blob with this content ('blob <len>\\0' + data, hashed with the
    repository's object format: sha1, or sha256 for `--object-format=sha256` repos)."""
    h = hashlib.new(algorithm, b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def algorithm_of(blob: str) -> str:
    """The object format a blob id was made with (64 hex digits: sha256)."""
    return "sha256" if len(blob) == 64 else "sha1"


class ContextChangedError(Exception):
    """A file changed between hashing and shipping: the build would not match its version."""


@dataclass(frozen=True)
class BuildContext:
    """The files of one image's build context and how to read them.

    `files`: what Docker ships (the Dockerfile among them only where the ignore file keeps
    it); `dockerfile`: the Dockerfile the build reads, archived at `DOCKERFILE_SLOT` after
    `dockerfile_edit` (literal FROMs pinned to bases.lock, `core.lock.pin_literal_froms`).
    """

    files: tuple[ContextFile, ...]
    reader: ContentReader
    dirs: tuple[str, ...] = ()  # every folder, archived at 0755 (git keeps no folder modes)
    dockerfile: ContextFile | None = None
    dockerfile_edit: Callable[[bytes], bytes] | None = None

    @property
    def file_count(self) -> int:
        return len(self.files)

    def _read(self, f: ContextFile) -> bytes:
        data = self.reader.read(f)
        if git_blob_id(data, algorithm_of(f.blob)) != f.blob:
            raise ContextChangedError(
                f"{f.path} changed after its version was computed; re-run to build the new content"
            )
        return data

    def iter_contents(self) -> Iterator[tuple[ContextFile, bytes]]:
        """Yield each archived entry with its bytes (verified against the hashed blob id):
        the context files, then the Dockerfile at `DOCKERFILE_SLOT`."""
        for f in self.files:
            yield f, self._read(f)
        if self.dockerfile is not None:
            data = self._read(self.dockerfile)
            if self.dockerfile_edit is not None:
                data = self.dockerfile_edit(data)
            slot = ContextFile(DOCKERFILE_SLOT, MODE_FILE, self.dockerfile.blob)
            yield slot, data

    def write_tar(self, out: BinaryIO) -> int:
        """Write a reproducible tar of the context to `out`; return the total content size."""
        total = 0
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for folder in self.dirs:
                info = tarfile.TarInfo(folder)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info)
            for f, data in self.iter_contents():
                info = tarfile.TarInfo(f.path)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if f.mode == MODE_LINK:
                    info.type = tarfile.SYMTYPE
                    info.linkname = data.decode()
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if f.mode == MODE_EXEC else 0o644
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                total += len(data)
        return total

    def write_zip(self, out: BinaryIO) -> int:
        """Write a reproducible zip of the context (CodeBuild S3 source); return content size."""
        total = 0
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for folder in self.dirs:
                info = zipfile.ZipInfo(folder + "/", date_time=_ZIP_EPOCH)
                info.create_system = 3
                info.external_attr = (0o40755 << 16) | 0x10  # unix mode, MS-DOS folder bit
                zf.writestr(info, b"")
            for f, data in self.iter_contents():
                info = zipfile.ZipInfo(f.path, date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so the mode bits below are honoured
                if f.mode == MODE_LINK:
                    info.external_attr = 0o120777 << 16
                else:
                    perm = 0o100755 if f.mode == MODE_EXEC else 0o100644
                    info.external_attr = perm << 16
                zf.writestr(info, data)
                total += len(data)
        return total

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write_tar(buf)
        return buf.getvalue()

    def zip_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write_zip(buf)
        return buf.getvalue()
