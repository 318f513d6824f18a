"""A cache of a clean working tree's image versions, kept in the repository's git folder.

Valid only while git's index file is byte-identical (same sha1), the manifest text is the
same and nothing under the images' paths is modified or untracked (checked by git on every
run); then hashing 100,000s of index records again would give the same versions, so `plan`
skips it. Any other state computes versions in full. Losing the file only costs time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from build_assets.core.gitrepo import WorktreeScan
    from build_assets.core.manifest import Manifest
    from build_assets.core.versioning import VersionSet

FILE = "build-assets-versions.json"
FORMAT = 3  # 3: contexts checked against their Dockerfiles before caching
SCHEME = "build-assets/v1"  # versioning.SCHEME (kept here so a cache hit imports nothing)


def _key(scan: WorktreeScan, manifest_text: bytes) -> str:
    h = hashlib.sha256(f"{FORMAT}\0{SCHEME}\0{scan.index_digest}\0".encode())
    h.update(manifest_text)
    return h.hexdigest()


def load(scan: WorktreeScan, manifest: Manifest, manifest_text: bytes) -> dict | None:
    """{image: [version, file_count]} when the cache matches this exact state, else None."""
    try:
        data = json.loads((scan.git_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != _key(scan, manifest_text):
        return None
    images = data.get("images", {})
    return images if set(images) == set(manifest.images) else None


def load_plan(scan: WorktreeScan, manifest_text: bytes) -> list[dict] | None:
    """Without validating the manifest again (its bytes are in the key): the images in
    dependency order as {name, version, base, lambdas}, when the cache matches a clean tree."""
    if not scan.clean:
        return None
    try:
        data = json.loads((scan.git_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != _key(scan, manifest_text) or "order" not in data:
        return None
    images = data["images"]
    return [
        {"name": name, "version": images[name][0], "base": base, "lambdas": lambdas}
        for name, base, lambdas in data["order"]
    ]


def save(scan: WorktreeScan, manifest_text: bytes, versions: VersionSet) -> None:
    """Remember the versions of this clean state (best effort, atomic)."""
    data = {
        "key": _key(scan, manifest_text),
        "images": {img.name: [img.version, img.file_count] for img in versions},
        "order": [[img.name, img.base, list(img.lambdas)] for img in versions],
    }
    target = scan.git_dir / FILE
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(data))
        os.replace(tmp, target)
