"""DOWNLOAD_SOURCE: the S3 source zip unpacked as CodeBuild unpacks it (modes, symlinks)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path


class SourceError(Exception):
    """The source or a variable could not be had: the phase fails with CLIENT_ERROR."""


def extract(data: bytes, dest: Path) -> None:
    """Unzip keeping unix modes and symlinks; refuses members outside `dest`."""
    root = dest.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(root) + os.sep) and target != root:
                raise ValueError(f"zip member outside the source folder: {info.filename}")
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                os.symlink(zf.read(info).decode(), target)
                continue
            target.write_bytes(zf.read(info))
            if mode & 0o777:
                os.chmod(target, mode & 0o7777)
