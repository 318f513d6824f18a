"""A build context: exactly the files that were hashed, and deterministic archives of them.

The same `BuildContext` object is hashed by `versioning` and shipped by every builder, so what
is built can never differ from what was versioned. Archives are byte-for-byte reproducible:
sorted entries, zero timestamps and owners, modes normalised to 0644 / 0755 / symlink.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple, Protocol

MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"

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
    """The files of one image's build context and how to read them."""

    files: tuple[ContextFile, ...]
    reader: ContentReader
    # path -> what the build ships instead of the file's bytes (verified first): the
    # Dockerfile with literal FROMs pinned to bases.lock (`core.lock.pin_literal_froms`)
    edits: Mapping[str, Callable[[bytes], bytes]] = field(default_factory=dict)

    @property
    def file_count(self) -> int:
        return len(self.files)

    def iter_contents(self) -> Iterator[tuple[ContextFile, bytes]]:
        """Yield each file with its bytes, verifying them against the hashed blob id."""
        for f in self.files:
            data = self.reader.read(f)
            if git_blob_id(data, algorithm_of(f.blob)) != f.blob:
                raise ContextChangedError(
                    f"{f.path} changed after its version was computed; re-run to build the new"
                    " content"
                )
            edit = self.edits.get(f.path) if f.mode != MODE_LINK else None
            yield f, (edit(data) if edit is not None else data)

    def write_tar(self, out: BinaryIO) -> int:
        """Write a reproducible tar of the context to `out`; return the total content size."""
        total = 0
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
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
