"""Content versions of images: a Merkle hash along `base` of exactly what goes into a build.

    version(image) = sha256(scheme, manifest entry, context files (path, mode, blob), version(base))

The context of an image is its Dockerfile plus every file under its `source_paths` that git
tracks or sees as untracked-and-not-ignored, minus the root `.dockerignore` matches.
`select_context` is the one function that decides this set; it is both hashed here and
shipped by every builder, so a build can never differ from its version.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from build_assets.core import versioncache
from build_assets.core.context import BuildContext, ContextFile
from build_assets.core.gitrepo import (
    Snapshot,
    WorktreeScan,
    commit_snapshot,
    read_file_at,
    repo_root,
    resolve_commit,
)
from build_assets.core.manifest import ImageSpec, Manifest, load_manifest, parse_manifest
from build_assets.errors import ManifestError

SCHEME = "build-assets/v1"
TAG_PREFIX = "git-"
DOCKERIGNORE = ".dockerignore"


def tag_for(version: str) -> str:
    """The image tag of a version: 'git-' + its first 12 hex digits."""
    return TAG_PREFIX + version[:12]


_GLOB_CHARS = re.compile(r"[*?\[\]\\]")
_BRACKETS = re.compile(r"\[[^\]]*\]")


class DockerIgnore:
    """Root `.dockerignore` rules with Docker's semantics (patterns anchored at the root)."""

    def __init__(self, text: str | None) -> None:
        lines = []
        self._literals: list[str] | None = []  # None: some pattern has no usable literal
        for raw in (text or "").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line[1:].strip() if negate else line
            line = line.lstrip("/")
            while line.startswith("./"):
                line = line[2:]
            if not line:
                continue
            lines.append(("!" if negate else "") + "/" + line)
            if not negate and self._literals is not None:
                plain = _BRACKETS.sub("*", line.replace("**/", "/"))  # [abc] is no literal
                longest = max(_GLOB_CHARS.split(plain), key=len).strip("/")
                longest = max(longest.split("/"), key=len)
                if len(longest) >= 2:
                    self._literals.append(longest)
                else:
                    self._literals = None
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None

    def excluded_indices(self, paths: list[str]) -> frozenset[int]:
        """Indices of the excluded paths of a sorted path list.

        A path can only be excluded by a pattern whose literal part it contains, so only the
        paths holding such a literal (found by `str.find` over all paths at once) are matched
        one by one; negated patterns can only re-include, never exclude.
        """
        if self._spec is None or not paths:
            return frozenset()
        if self._literals is None:
            return frozenset(i for i, p in enumerate(paths) if self._spec.match_file(p))
        text = "\n".join(paths)
        starts = list(itertools.accumulate((len(p) + 1 for p in paths[:-1]), initial=0))
        candidates: set[int] = set()
        for literal in set(self._literals):
            pos = text.find(literal)
            while pos != -1:
                line = bisect.bisect_right(starts, pos) - 1
                candidates.add(line)
                pos = text.find(literal, starts[line + 1] if line + 1 < len(starts) else len(text))
        return frozenset(i for i in candidates if self._spec.match_file(paths[i]))


@dataclass(frozen=True)
class ContextSelection:
    """Which records of a snapshot make up one image's context (no per-file objects)."""

    ranges: tuple[tuple[int, int], ...]  # sorted, disjoint index ranges
    excluded: frozenset[int]  # indices inside `ranges` that are .dockerignored

    def indices(self):
        for lo, hi in self.ranges:
            for i in range(lo, hi):
                if i not in self.excluded:
                    yield i

    def listing(self, records: list[str]) -> str:
        """The canonical listing hashed into the version: one record per file, NUL-ended."""
        parts = []
        for lo, hi in self.ranges:
            if self.excluded and any(lo <= i < hi for i in self.excluded):
                parts.extend(records[i] for i in range(lo, hi) if i not in self.excluded)
            else:
                parts.extend(records[lo:hi])
        return "\0".join(parts) + "\0" if parts else ""

    def count(self) -> int:
        n = sum(hi - lo for lo, hi in self.ranges)
        return n - sum(1 for i in self.excluded if any(lo <= i < hi for lo, hi in self.ranges))


def select_context(
    spec: ImageSpec, snapshot: Snapshot, excluded: frozenset[int]
) -> ContextSelection:
    """Exactly the files of one image's build context: the Dockerfile (always, even when
    .dockerignore matches it) and every not-ignored file under its `source_paths`."""
    raw = sorted(
        r
        for r in (snapshot.range_of(p) for p in [spec.dockerfile, *spec.source_paths])
        if r[1] > r[0]
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in raw:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    dockerfile = snapshot.index_of(spec.dockerfile)
    inside = frozenset(
        i for i in excluded if i != dockerfile and any(lo <= i < hi for lo, hi in merged)
    )
    return ContextSelection(tuple(merged), inside)


class ImageVersion:
    """The computed version of one image and the context it was computed from.

    `files` and `context` are made on first use: computing versions never needs them.
    """

    def __init__(
        self,
        name: str,
        spec: ImageSpec,
        version: str,
        base_version: str | None,
        resolve: Callable[[], tuple[Snapshot, ContextSelection]],
        file_count: int | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.version = version
        self.base_version = base_version
        self._resolve = resolve  # the snapshot and selection this version was hashed from
        self._file_count = file_count

    def __repr__(self) -> str:
        return f"ImageVersion({self.name!r}, {self.tag!r})"

    @property
    def tag(self) -> str:
        return tag_for(self.version)

    @property
    def base(self) -> str | None:
        return self.spec.base

    @property
    def lambdas(self) -> tuple[str, ...]:
        return self.spec.lambdas

    @property
    def file_count(self) -> int:
        if self._file_count is None:
            self._file_count = self._resolve()[1].count()
        return self._file_count

    @functools.cached_property
    def files(self) -> tuple[ContextFile, ...]:
        snapshot, selection = self._resolve()
        return tuple(snapshot.file(i) for i in selection.indices())

    @functools.cached_property
    def context(self) -> BuildContext:
        return BuildContext(files=self.files, reader=self._resolve()[0].reader)


def hash_image(spec: ImageSpec, listing: str, base_version: str | None) -> str:
    """The version of an image from its entry, its context listing and its base's version."""
    h = hashlib.sha256()
    h.update(SCHEME.encode() + b"\0")
    h.update(json.dumps(spec.identity(), sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(b"base\0" + (base_version or "-").encode() + b"\0")
    h.update(listing.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True)
class VersionSet:
    """Versions of every image of a manifest at one state of the repo."""

    manifest: Manifest
    images: dict[str, ImageVersion]  # in dependency order
    commit: str | None  # None for the working tree
    root: Path

    def __getitem__(self, name: str) -> ImageVersion:
        return self.images[name]

    def __iter__(self):
        return iter(self.images.values())


def compute_versions(manifest: Manifest, snapshot: Snapshot, ignore: DockerIgnore) -> VersionSet:
    """Versions of all images of `manifest` in `snapshot`, bases first."""
    out: dict[str, ImageVersion] = {}
    excluded = ignore.excluded_indices(snapshot.paths)
    for name in manifest.order():
        spec = manifest.images[name]
        if snapshot.index_of(spec.dockerfile) is None:
            raise ManifestError(
                f"{manifest.source}: image '{name}', field 'dockerfile': '{spec.dockerfile}'"
                " is not a file git tracks or sees (is it ignored?)"
            )
        selection = select_context(spec, snapshot, excluded)
        base_version = out[spec.base].version if spec.base else None
        version = hash_image(spec, selection.listing(snapshot.records), base_version)
        pinned = (snapshot, selection)
        out[name] = ImageVersion(name, spec, version, base_version, lambda p=pinned: p)
    return VersionSet(manifest=manifest, images=out, commit=snapshot.commit, root=snapshot.root)


def _manifest_relpath(root: Path, manifest_path: Path) -> str:
    try:
        return manifest_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return ""


def worktree_versions(
    repo: str | Path, manifest_path: str | Path | None = None, scan: WorktreeScan | None = None
) -> VersionSet:
    """Versions of the working tree as it is now (staged, unstaged and untracked changes).

    `scan`: a WorktreeScan of the repo already started by the caller (see `plan`).
    """
    root = repo_root(repo) if scan is None else scan.root
    path = Path(manifest_path) if manifest_path else root / "images.yaml"
    manifest = load_manifest(path, root)
    if scan is None or not scan.covers([*manifest.all_paths(), DOCKERIGNORE]):
        scan = WorktreeScan(root, [*manifest.all_paths(), DOCKERIGNORE])
    manifest_text = path.read_bytes()
    if scan.clean:
        cached = versioncache.load(scan, manifest, manifest_text)
        if cached is not None:
            return _from_cache(manifest, scan, cached)
    snapshot = scan.snapshot()
    ignore = DockerIgnore(snapshot.read_text(DOCKERIGNORE))
    versions = compute_versions(manifest, snapshot, ignore)
    if scan.clean:
        versioncache.save(scan, manifest_text, versions)
    return versions


def _from_cache(manifest: Manifest, scan: WorktreeScan, cached: dict) -> VersionSet:
    """A VersionSet from the clean-tree cache; file lists are computed only when asked for."""
    state: dict[str, object] = {}

    def resolver(spec: ImageSpec) -> Callable[[], tuple[Snapshot, ContextSelection]]:
        def resolve() -> tuple[Snapshot, ContextSelection]:
            if "snapshot" not in state:
                snap = scan.snapshot()
                state["snapshot"] = snap
                state["excluded"] = DockerIgnore(snap.read_text(DOCKERIGNORE)).excluded_indices(
                    snap.paths
                )
            snap = state["snapshot"]
            return snap, select_context(spec, snap, state["excluded"])  # type: ignore[arg-type]

        return resolve

    out: dict[str, ImageVersion] = {}
    for name in manifest.order():
        spec = manifest.images[name]
        version, count = cached[name]
        base_version = out[spec.base].version if spec.base else None
        out[name] = ImageVersion(name, spec, version, base_version, resolver(spec), count)
    return VersionSet(manifest=manifest, images=out, commit=None, root=scan.root)


def commit_versions(
    repo: str | Path, ref: str, manifest_path: str | Path | None = None
) -> VersionSet:
    """Versions at a commit, from git objects (no checkout), with the manifest as it was there.

    Returns a VersionSet whose manifest may lack images that are new since `ref`.
    """
    root = repo_root(repo)
    commit = resolve_commit(root, ref)
    path = Path(manifest_path) if manifest_path else root / "images.yaml"
    rel = _manifest_relpath(root, path) or "images.yaml"
    text = read_file_at(root, commit, rel)
    if text is None:
        raise ManifestError(f"{rel}: does not exist at {ref} ({commit[:12]})")
    source = f"{rel}@{ref}"
    paths = parse_manifest(text, source).all_paths()
    tree = commit_snapshot(root, commit, [*paths, DOCKERIGNORE])
    manifest = parse_manifest(text, source, tree.exists)
    ignore = DockerIgnore(tree.read_text(DOCKERIGNORE))
    return compute_versions(manifest, tree, ignore)
