"""`plan --since REF` without file lists: reasons from git's own diff of two trees.

When the working tree is clean and cached (its index is a known tree), REF's versions are
cached, the manifest text is the same on both sides and no ignore file changed, an image's
version changed only because files of its context or its base's version did. Then
`git diff-tree` of REF's tree and the index's tree (which skips every identical folder by its
id) names exactly the changed files, and each changed image's reasons are those of them in its
context — the same lines `plan` computes from the two full contexts. Anything else (an odd
path, an ignore file or the manifest changed, a submodule) answers None: the caller then takes
the full path.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path

from build_assets.core.context import ContextFile
from build_assets.core.gitrepo import _run
from build_assets.core.ignore import DockerIgnore
from build_assets.core.model import DOCKERIGNORE, Manifest, tag_for
from build_assets.core.plan import PlanEntry, file_reasons

_FILE_MODES = ("100644", "100755", "120000")
_ABSENT = "0" * 6


def tree_changes(root: Path, old: str, new: str) -> dict[str, tuple]:
    """path -> (file at `old` or None, file at `new` or None) for every changed file."""
    out = _run(["diff-tree", "-r", "-z", "--no-renames", "--full-index", old, new], root)
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    changes: dict[str, tuple] = {}
    for meta, path in zip(fields[0:-1:2], fields[1::2], strict=False):
        old_mode, new_mode, old_blob, new_blob = meta[1:].split(" ")[:4]
        if not {old_mode, new_mode} <= {*_FILE_MODES, _ABSENT}:
            raise ValueError(f"not a file: {path}")  # a submodule: the full path decides
        changes[path] = (
            None if old_mode == _ABSENT else ContextFile(path, old_mode, old_blob),
            None if new_mode == _ABSENT else ContextFile(path, new_mode, new_blob),
        )
    return changes


def _suspects(root: Path, index: tuple[Path, str] | None = None) -> list[str]:
    """Files of the index whose name could be a secret (`secrets.could_be_secret`), sorted:
    one `git ls-files` (the tree is clean: the index is the working tree), names screened by
    set and suffix tests of every name `secrets` knows, then its exact test. With `index`
    (the git folder, the index's tree id), remembered per tree (a tree never changes)."""
    from build_assets.core import secrets, versioncache

    if index is None:
        return _screen(root)
    rules = secrets.rules_digest()
    known = versioncache.load_suspects(*index, rules)
    if known is not None:
        return known
    found = _screen(root)
    versioncache.save_suspects(*index, rules, found)
    return found


def _screen(root: Path) -> list[str]:
    from build_assets.core import secrets

    out = _run(["ls-files", "-z"], root).decode("utf-8", "surrogateescape")
    paths = out.split("\0")
    return sorted(paths[i] for i in secrets.candidates(paths))


def _plain(path: object) -> bool:
    return (
        isinstance(path, str)
        and bool(path)
        and not path.startswith("/")
        and all(part not in ("", ".", "..") for part in path.rstrip("/").split("/"))
        and not any(c in path for c in "\0\n\r\\*?[")
    )


def plan_from_diff(
    root: Path,
    manifest: Manifest,
    now: list[dict],
    then: list[dict],
    changes: dict[str, tuple],
    read: Callable[[str], bytes],
    index: tuple[Path, str] | None = None,
) -> tuple[list[PlanEntry], dict[str, list[str]]] | None:
    """Plan entries of `now` against `then` (cached rows {name, version, base, lambdas}),
    and the likely-secret warnings of the images to be built (their whole contexts, as the
    full plan warns); None when the diff alone cannot tell (see the module's docstring).
    `index`: the git folder and the index's tree id, when known (its likely-secret paths are
    then cached)."""
    from build_assets.core import secrets

    images = manifest.images
    ignores = set(manifest.ignore_paths())
    if any(p.endswith(DOCKERIGNORE) or p in ignores for p in changes):
        return None  # what is in a context may have changed by rule: the full path says how
    suspects = _Paths(dict.fromkeys(_suspects(root, index), (None,)))
    changed = _Paths(changes)
    rules: dict = {}  # ignore file in force -> DockerIgnore (read once)
    before = {row["name"]: row for row in then}
    version = {row["name"]: row["version"] for row in now}
    entries: list[PlanEntry] = []
    warnings: dict[str, list[str]] = {}
    for row in now:
        name, old = row["name"], before.get(row["name"])
        reasons: list[str] = []
        if old is None:
            reasons = ["new image"]
        elif old["version"] != row["version"]:
            if name not in images:
                return None
            mine = _context_changes(root, manifest, name, changed, rules)
            if mine is None:
                return None
            gone = tuple(a for a, _ in mine.values() if a is not None)
            came = tuple(b for _, b in mine.values() if b is not None)
            reasons = file_reasons(gone, came, images[name].dockerfile)
            base = row["base"]
            if base and base in before and before[base]["version"] != version.get(base):
                reasons.append(f"base {base} changed")
            if not reasons:
                reasons.append("build inputs changed")
        if old is None or old["version"] != row["version"]:  # to be built: what it ships
            if name not in images:
                return None
            inside = _context_changes(root, manifest, name, suspects, rules)
            if inside is None:
                return None
            found = secrets.likely_secrets(sorted(inside), images[name].allow_secrets, read)
            if found:
                warnings[name] = [secrets.warning(name, found)]
        entries.append(
            PlanEntry(
                name=name,
                version=row["version"],
                tag=tag_for(row["version"]),
                base=row["base"],
                lambdas=row["lambdas"],
                changed=bool(reasons),
                reasons=reasons,
            )
        )
    return entries, warnings


class _Paths:
    """Changed paths, sorted, with what changed: one folder's files are a bisected range."""

    def __init__(self, items: dict[str, tuple]) -> None:
        self.items = items
        self.paths = sorted(items)

    def under(self, prefix: str) -> list[str]:
        """The paths equal to `prefix` or below the folder `prefix`."""
        lo = bisect.bisect_left(self.paths, prefix)
        hi = bisect.bisect_left(self.paths, prefix + "0", lo)  # '0' sorts right after '/'
        return [p for p in self.paths[lo:hi] if p == prefix or p[len(prefix)] == "/"]


def _context_changes(
    root: Path, manifest: Manifest, name: str, changes: _Paths, rules: dict
) -> dict[str, tuple] | None:
    """The changed files inside one image's context (its Dockerfile always, else under its
    source_paths and not excluded by its ignore file in force); `rules` memoises ignore
    files by path."""
    spec = manifest.images[name]
    dockerfile, sources = spec.dockerfile, spec.source_paths
    if not _plain(dockerfile) or not all(map(_plain, sources)):
        return None
    found = {p for s in sources for p in changes.under(s.rstrip("/"))}
    candidates = sorted(found - {dockerfile})
    if candidates:
        ignore = _ignore_in_force(root, manifest, name, rules)
        if ignore is None:
            return None
        excluded = {candidates[i] for i in ignore.excluded_indices(candidates)}
        found -= excluded
    if dockerfile in changes.items:
        found.add(dockerfile)
    return {p: changes.items[p] for p in sorted(found)}


def _ignore_in_force(root: Path, manifest: Manifest, name: str, memo: dict) -> DockerIgnore | None:
    """The rules of the image's ignore file in force (`Manifest.ignore_file_in_force`) on a
    clean tree, read once per path (`memo`); None when it cannot be read."""
    path = manifest.ignore_file_in_force(name, lambda p: (root / p).is_file())
    if path is None:
        return DockerIgnore(None)
    if path not in memo:
        try:
            text = (root / path).read_text(errors="replace")
        except FileNotFoundError:
            text = None
        except OSError:
            text = False
        memo[path] = None if text is False else DockerIgnore(text, path)
    return memo[path]
