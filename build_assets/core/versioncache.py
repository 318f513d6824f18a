"""Caches of image versions, kept in the repository's git folder. Losing them only costs time.

* The working tree (`build-assets-versions.json`): valid only while git's index file is
  byte-identical (same sha1), the manifest text is the same and nothing under the images'
  paths is modified or untracked (checked by git on every run); then hashing 100,000s of
  index records again would give the same versions, so `plan` skips it.
* Commits (`build-assets-versions/<key>.json`): versions at a commit are immutable, a
  function of the commit's tree id, the manifest's place and text, and this scheme (the
  ignore files in force and every Dockerfile are files of that tree). `plan --since`, the
  sensor and commit-pinned runs share them; a clean working tree whose index is that tree
  fills the same entry.

Every entry carries its key and a checksum of its content: a truncated file, an entry of
another key or scheme, or a hand-edited one is never trusted — it reads as a miss and is
computed again (and overwritten).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from build_assets.core.model import SCHEME

if TYPE_CHECKING:
    from build_assets.core.gitrepo import WorktreeScan
    from build_assets.core.image_version import VersionSet
    from build_assets.core.model import Manifest

FILE = "build-assets-versions.json"
COMMITS = "build-assets-versions"  # folder of commit entries
MAX_COMMIT_ENTRIES = 512  # oldest (by use) removed beyond this
FORMAT = 5  # 4: checksummed entries, commit entries; 5: contexts as Docker ships them and
# bases read once (issue 18): versions of ignored Dockerfiles and empty folders changed


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _checksum(body: dict) -> str:
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _checked_body(path: Path) -> dict | None:
    """The body of the file at `path` when it is whole JSON and unaltered (its checksum
    matches); None otherwise."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("body"), dict):
        return None
    body = data["body"]
    return body if data.get("sum") == _checksum(body) else None


def _read_entry(path: Path, key: str) -> dict | None:
    """The body of the entry at `path` when it is whole, of this format and scheme, for `key`
    and unaltered (its checksum matches); None otherwise."""
    body = _checked_body(path)
    if body is None:
        return None
    if body.get("format") != FORMAT or body.get("scheme") != SCHEME or body.get("key") != key:
        return None
    if not _well_formed(body):
        return None
    return body


def _well_formed(body: dict) -> bool:
    images, order = body.get("images"), body.get("order")
    if not isinstance(images, dict) or not isinstance(order, list):
        return False
    if [row[0] for row in order if isinstance(row, list) and len(row) == 3] != list(images):
        return False
    return all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and len(v[0]) == 64
        for v in images.values()
    )


def _write_entry(path: Path, key: str, versions: VersionSet, **extra: object) -> None:
    """Write one entry atomically (best effort: a read-only .git only costs time)."""
    body = {
        "format": FORMAT,
        "scheme": SCHEME,
        "key": key,
        "images": {img.name: [img.version, img.file_count] for img in versions},
        "order": [[img.name, img.base, list(img.lambdas)] for img in versions],
        **extra,
    }
    _write_body(path, body)


def _write_body(path: Path, body: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps({"sum": _checksum(body), "body": body}))
        os.replace(tmp, path)


def _plan_rows(body: dict) -> list[dict]:
    images = body["images"]
    return [
        {"name": name, "version": images[name][0], "base": base, "lambdas": lambdas}
        for name, base, lambdas in body["order"]
    ]


# -- the working tree -------------------------------------------------------------------------


def _key(scan: WorktreeScan, manifest_text: bytes) -> str:
    return _digest(str(FORMAT), SCHEME, "worktree", scan.index_digest, manifest_text)


def _worktree_body(scan: WorktreeScan, manifest_text: bytes) -> dict | None:
    return _read_entry(scan.git_dir / FILE, _key(scan, manifest_text))


def load(scan: WorktreeScan, manifest: Manifest, manifest_text: bytes) -> dict | None:
    """{image: [version, file_count]} when the cache matches this exact state, else None."""
    body = _worktree_body(scan, manifest_text)
    if body is None:
        return None
    images = body["images"]
    return images if set(images) == set(manifest.images) else None


def load_plan(scan: WorktreeScan, manifest_text: bytes) -> list[dict] | None:
    """Without validating the manifest again (its bytes are in the key): the images in
    dependency order as {name, version, base, lambdas}, when the cache matches a clean tree."""
    if not scan.clean:
        return None
    body = _worktree_body(scan, manifest_text)
    return None if body is None else _plan_rows(body)


def index_tree(scan: WorktreeScan, manifest_text: bytes) -> str | None:
    """The tree id of the index recorded with a matching clean-tree entry (None: unknown)."""
    body = _worktree_body(scan, manifest_text) if scan.clean else None
    tree = body.get("tree") if body else None
    return tree if isinstance(tree, str) else None


def save(
    scan: WorktreeScan, manifest_text: bytes, versions: VersionSet, tree: str | None = None
) -> None:
    """Remember the versions of this clean state; `tree`: the index's tree id, if known."""
    extra = {"tree": tree} if tree else {}
    _write_entry(scan.git_dir / FILE, _key(scan, manifest_text), versions, **extra)


def save_from_entry(scan: WorktreeScan, manifest_text: bytes, entry: dict, tree: str) -> None:
    """Remember a clean state whose index is the tree of a commit entry already known."""
    body = {**entry, "key": _key(scan, manifest_text), "tree": tree}
    _write_body(scan.git_dir / FILE, body)


# -- commits ----------------------------------------------------------------------------------


def manifest_place(root: Path, manifest_path: Path) -> str:
    """Where the manifest is, as keyed here: its path inside the tree, or outside it."""
    try:
        rel = manifest_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return "outside"
    return f"tree:{rel}"


def commit_key(tree: str, manifest_place: str, manifest_text: bytes) -> str:
    """What the versions at a commit are a function of: its tree, where the manifest is
    (a path in the tree, or outside it) and its text, the format and the scheme."""
    return _digest(str(FORMAT), SCHEME, "tree", tree, manifest_place, manifest_text)


def _commit_path(git_dir: Path, key: str) -> Path:
    return git_dir / COMMITS / f"{key}.json"


def load_commit(git_dir: Path, key: str) -> dict | None:
    """{images: {name: [version, file_count]}, order: [[name, base, lambdas]]} of a commit
    entry that is whole and truly for `key`, else None."""
    path = _commit_path(git_dir, key)
    body = _read_entry(path, key)
    if body is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: pruned last
    return body


def load_commit_plan(git_dir: Path, key: str) -> list[dict] | None:
    """A commit entry as rows {name, version, base, lambdas} in dependency order."""
    body = load_commit(git_dir, key)
    return None if body is None else _plan_rows(body)


def save_commit(git_dir: Path, key: str, versions: VersionSet, *, lock_in_step: bool) -> None:
    """Remember the versions at a commit (and keep the folder to MAX_COMMIT_ENTRIES);
    `lock_in_step`: its bases.lock pins exactly the external bases its images use."""
    _write_entry(_commit_path(git_dir, key), key, versions, lock_in_step=lock_in_step)
    _prune(git_dir / COMMITS)


def _prune(folder: Path) -> None:
    with contextlib.suppress(OSError):
        entries = list(os.scandir(folder))
        if len(entries) <= MAX_COMMIT_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for entry in entries[: len(entries) - MAX_COMMIT_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


# -- the manifest's parsed document and the index's likely-secret paths -----------------------

MANIFEST_DOC = "build-assets-manifest.json"
SUSPECTS = "build-assets-suspects.json"


def _small_entry(path: Path, key: str) -> dict | None:
    """The body of a one-value entry {key, value} when whole, for `key` and unaltered."""
    body = _checked_body(path)
    if body is None or body.get("key") != key or "value" not in body:
        return None
    return body


def load_manifest_doc(git_dir: Path, manifest_bytes: bytes) -> object | None:
    """The YAML document these exact manifest bytes parsed to before (None: not known), so a
    plan answered by the caches imports no YAML parser. Only documents that JSON keeps
    exactly are stored (`save_manifest_doc`)."""
    body = _small_entry(git_dir / MANIFEST_DOC, _digest(str(FORMAT), "manifest", manifest_bytes))
    return None if body is None else body["value"]


def save_manifest_doc(git_dir: Path, manifest_bytes: bytes, doc: object) -> None:
    """Remember the document of these manifest bytes, when JSON round-trips it unchanged
    (no dates, no non-string keys...); otherwise nothing is stored."""
    try:
        if json.loads(json.dumps(doc)) != doc:
            return
    except (TypeError, ValueError, RecursionError):
        return
    key = _digest(str(FORMAT), "manifest", manifest_bytes)
    _write_body(git_dir / MANIFEST_DOC, {"key": key, "value": doc})


def load_suspects(git_dir: Path, tree: str, rules: str) -> list[str] | None:
    """The paths of tree `tree` that could be secrets under `rules` (a digest of the rules),
    when computed before."""
    body = _small_entry(git_dir / SUSPECTS, _digest(str(FORMAT), "suspects", tree, rules))
    value = None if body is None else body["value"]
    return value if isinstance(value, list) and all(isinstance(p, str) for p in value) else None


def save_suspects(git_dir: Path, tree: str, rules: str, paths: list[str]) -> None:
    """Remember the likely-secret paths of a tree (a tree never changes: neither do they)."""
    key = _digest(str(FORMAT), "suspects", tree, rules)
    _write_body(git_dir / SUSPECTS, {"key": key, "value": paths})


# -- the validated manifest (core.validated_cache) --------------------------------------------

MANIFEST_MODEL = "build-assets-manifest-model.json"


def validated_key(source: str, manifest_bytes: bytes, code: bytes) -> str:
    """What validating a manifest is a function of, but for the paths it names: its name
    (in messages and `Manifest.source`), its bytes and the validating code."""
    return _digest(str(FORMAT), "validated", source, manifest_bytes, code)


def load_validated(git_dir: Path, key: str) -> dict | None:
    """The document (`Manifest.to_document()`) of the manifest validated under `key`."""
    body = _small_entry(git_dir / MANIFEST_MODEL, key)
    value = None if body is None else body["value"]
    return value if isinstance(value, dict) else None


def save_validated(git_dir: Path, key: str, dump: dict) -> None:
    """Remember a validated manifest's document (only when JSON keeps it exactly)."""
    try:
        json.dumps(dump)
    except (TypeError, ValueError, RecursionError):
        return
    _write_body(git_dir / MANIFEST_MODEL, {"key": key, "value": dump})
