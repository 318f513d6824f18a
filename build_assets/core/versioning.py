"""Content versions of images: a Merkle hash along `base` of exactly what goes into a build.

    version(image) = sha256(scheme, manifest entry, context files (path, mode, blob), version(base))

The context of an image is its Dockerfile plus every file under its `source_paths` that git
tracks or sees as untracked-and-not-ignored, minus the matches of the ignore file in force.
`select_context` is the one function that decides this set; it is both hashed here and
shipped by every builder, so a build can never differ from its version. The Dockerfile is
always hashed; it is shipped inside the context only where Docker would ship it.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from build_assets.core import versioncache
from build_assets.core.context import MODE_DIR, BuildContext, ContextFile, folders_of
from build_assets.core.contextcheck import check_image, ignore_file_for
from build_assets.core.dockerfile import Dockerfile
from build_assets.core.dockerfile import parse as parse_dockerfile
from build_assets.core.gitrepo import (
    CommitListing,
    GitObjectReader,
    Snapshot,
    WorktreeReader,
    WorktreeScan,
    commit_snapshot,
    index_tree,
    read_file_at,
    repo_root,
    resolve_commit_tree,
)
from build_assets.core.ignore import DOCKERIGNORE, DockerIgnore
from build_assets.core.lock import (
    LOCK_FILE,
    ExternalBase,
    cache_text,
    external_bases,
    is_external,
    lock_problems,
    parse_lock,
    pin_literal_froms,
    pinned_reference,
)
from build_assets.core.naming import DEFAULT_PROJECT_NAME
from build_assets.errors import ManifestError

if TYPE_CHECKING:  # validation (pydantic) is imported only when a manifest is validated
    from build_assets.core.manifest import ImageSpec, Manifest
    from build_assets.core.manifestview import FrozenManifest

__all__ = ["DOCKERIGNORE", "DockerIgnore", "VersionSet", "commit_versions", "worktree_versions"]

SCHEME = "build-assets/v1"
TAG_PREFIX = "git-"
DEFAULT_BASE_ARG = "BASE_IMAGE"


def tag_for(version: str) -> str:
    """The image tag of a version: 'git-' + its first 12 hex digits."""
    return TAG_PREFIX + version[:12]


@dataclass(frozen=True)
class ContextSelection:
    """Which records of a snapshot make up one image's context (no per-file objects)."""

    ranges: tuple[tuple[int, int], ...]  # sorted, disjoint index ranges
    excluded: frozenset[int]  # indices inside `ranges` that are .dockerignored
    # the Dockerfile's index when the ignore file excludes it: hashed (it is read for the
    # build) but not shipped in the context, as Docker does
    unshipped: int | None = None
    # folders Docker ships empty: every file below them is ignored, the folder itself is not
    empty_dirs: tuple[str, ...] = ()

    def shipped(self):
        """The indices of the files Docker would ship (`indices` minus `unshipped`)."""
        return (i for i in self.indices() if i != self.unshipped)

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
        parts.extend(f"{MODE_DIR} - 0\t{d}" for d in self.empty_dirs)
        return "\0".join(parts) + "\0" if parts else ""

    def count(self) -> int:
        n = sum(hi - lo for lo, hi in self.ranges)
        return n - sum(1 for i in self.excluded if any(lo <= i < hi for lo, hi in self.ranges))


def _empty_dirs(
    snapshot: Snapshot, ranges: list[tuple[int, int]], hidden: frozenset[int], ignore: DockerIgnore
) -> tuple[str, ...]:
    """The folders of ignored files that Docker still ships, empty: a folder is in Docker's
    context unless the ignore file excludes it or every file of it (then it comes only as
    the parent of a re-included file)."""
    paths = snapshot.paths
    seen: set[str] = set()
    out = []
    for i in sorted(hidden):
        folder = paths[i].rpartition("/")[0]
        while folder and folder not in seen:
            seen.add(folder)
            if not ignore.excludes(folder):
                lo, hi = snapshot.range_of(folder)
                shipped = any(
                    j not in hidden for a, b in ranges for j in range(max(a, lo), min(b, hi))
                )
                if not shipped:
                    out.append(folder)
            folder = folder.rpartition("/")[0]
    return tuple(sorted(out))


def select_context(
    spec: ImageSpec,
    snapshot: Snapshot,
    excluded: frozenset[int],
    ignore: DockerIgnore | None = None,
) -> ContextSelection:
    """Exactly the files of one image's build context: the Dockerfile (always hashed, even
    when the ignore file matches it; then marked `unshipped`) and every not-ignored file under
    its `source_paths`, plus the folders Docker ships empty (given the `ignore` rules)."""
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
    unshipped = dockerfile if dockerfile is not None and dockerfile in excluded else None
    hidden = inside if unshipped is None else inside | {unshipped}
    empty = _empty_dirs(snapshot, merged, hidden, ignore) if hidden and ignore else ()
    return ContextSelection(tuple(merged), inside, unshipped, empty)


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
        identity: dict | Callable[[], dict] | None = None,
        base_arg: str | Callable[[], str | None] | None = None,
        platform: str | None = None,
        ignore: DockerIgnore | Callable[[], DockerIgnore] | None = None,
        project_template: str | None = None,
        dockerfile: Dockerfile | Callable[[], Dockerfile] | None = None,
        externals: tuple[ExternalBase, ...] | Callable[[], tuple[ExternalBase, ...]] = (),
        pins: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._externals = externals
        self.pins = pins or {}  # external base reference -> digest pinned in bases.lock
        self._dockerfile = dockerfile
        self.spec = spec
        self.version = version
        self.base_version = base_version
        self._resolve = resolve  # the snapshot and selection this version was hashed from
        self._file_count = file_count
        self._identity = identity
        self._base_arg = base_arg
        self._ignore = ignore
        self._project_template = project_template
        self.platform = platform  # linux/amd64 | linux/arm64 | None (the engine's own)

    def __repr__(self) -> str:
        return f"ImageVersion({self.name!r}, {self.tag!r})"

    @property
    def tag(self) -> str:
        return tag_for(self.version)

    @property
    def base(self) -> str | None:
        """The image of the manifest this one is built on (an external `base:` is not one)."""
        base = self.spec.base
        return None if base is None or is_external(base) else base

    @functools.cached_property
    def externals(self) -> tuple[ExternalBase, ...]:
        """The external bases this image is built on (`core.lock`)."""
        return tuple(self._externals() if callable(self._externals) else self._externals)

    @property
    def pinned_args(self) -> dict[str, str]:
        """Build args that carry an external base: its pinned `repo@sha256:…` when the lock
        has it, else the reference itself (an unpinned external manifest `base:`). The arg
        that receives the manifest base only ever carries that base."""
        out: dict[str, str] = {}
        for ext in self.externals:
            if ext.arg is None:
                continue  # a literal FROM: pinned in the shipped Dockerfile (`context`)
            if ext.line is not None and self.spec.base is not None and ext.arg == self.base_arg:
                continue  # never the lock entry of the arg's default over the manifest base
            if ext.reference in self.pins:
                out[ext.arg] = pinned_reference(ext.reference, self.pins[ext.reference])
            elif ext.line is None:
                out[ext.arg] = ext.reference
        return out

    @property
    def lambdas(self) -> tuple[str, ...]:
        return self.spec.lambdas

    @functools.cached_property
    def identity(self) -> dict:
        """The entry as hashed (manifest fields plus defaults and ignore file in force)."""
        value = self._identity() if callable(self._identity) else self._identity
        return value if value is not None else self.spec.identity()

    @property
    def project_template(self) -> str | None:
        """The manifest's CodeBuild project name template for this image, when not default."""
        return self._project_template

    @functools.cached_property
    def dockerfile(self) -> Dockerfile:
        """This image's Dockerfile, parsed (read once; empty when it cannot be read)."""
        value = self._dockerfile() if callable(self._dockerfile) else self._dockerfile
        if value is None:
            snapshot, _ = self._resolve()
            value = parse_dockerfile(snapshot.read_text(self.spec.dockerfile) or "")
        return value

    @functools.cached_property
    def base_arg(self) -> str:
        """The build arg that receives the base: `base_arg`, else the first FROM's arg."""
        value = self._base_arg() if callable(self._base_arg) else self._base_arg
        return value or DEFAULT_BASE_ARG

    @property
    def rules(self) -> DockerIgnore | None:
        """The rules of the ignore file in force for this image (None: no ignore file)."""
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return ignore or None

    def exclusion(self, path: str) -> str | None:
        """Why `path`, a file of the repo under this image's paths, is not in its context
        ('excluded by .dockerignore:3 `*`'), or None when it is in it or not there at all."""
        snapshot, selection = self._resolve()
        i = snapshot.index_of(path)
        if i is None or i not in selection.excluded:
            return None
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return (ignore.explain(path) if ignore else None) or "excluded by the ignore file"

    def inclusion(self, path: str) -> str | None:
        """The ignore rule that includes `path` in the context ('included by …'), if any."""
        ignore = self._ignore() if callable(self._ignore) else self._ignore
        return ignore.explain(path) if ignore else None

    @property
    def file_count(self) -> int:
        if self._file_count is None:
            self._file_count = self._resolve()[1].count()
        return self._file_count

    @property
    def reader(self) -> WorktreeReader | GitObjectReader:
        """Reads the content of this image's context files (working tree or git objects)."""
        return self._resolve()[0].reader

    def records(self) -> list[str]:
        """The context as canonical records (`<mode> <blob> 0\t<path>`): no per-file objects."""
        snapshot, selection = self._resolve()
        return selection.listing(snapshot.records).split("\0")[:-1]

    @functools.cached_property
    def files(self) -> tuple[ContextFile, ...]:
        snapshot, selection = self._resolve()
        return tuple(snapshot.file(i) for i in selection.indices())

    def files_where(self, wanted: Callable[[str], bool]) -> list[ContextFile]:
        """The context files whose path `wanted` accepts, testing paths only (no per-file
        objects for the others: cheap on large contexts)."""
        snapshot, selection = self._resolve()
        paths = snapshot.paths
        return [snapshot.file(i) for i in selection.indices() if wanted(paths[i])]

    def files_screened(self, screen: Callable[[list[str]], list[int]]) -> list[ContextFile]:
        """The context files among the indices `screen` picks from the snapshot's sorted
        paths; the screen runs once per snapshot (images share it), not once per context."""
        snapshot, selection = self._resolve()
        hits = snapshot.screened(screen)
        out = []
        for lo, hi in selection.ranges:
            inside = hits[bisect.bisect_left(hits, lo) : bisect.bisect_left(hits, hi)]
            out.extend(snapshot.file(i) for i in inside if i not in selection.excluded)
        return out

    @property
    def dockerfile_shipped(self) -> bool:
        """Whether the build context holds the Dockerfile (not when the ignore file excludes
        it: Docker reads it for the build, but COPY never sees it)."""
        return self._resolve()[1].unshipped is None

    @functools.cached_property
    def context(self) -> BuildContext:
        """What the build ships: the files Docker would ship, and the Dockerfile to build
        from with the literal FROMs of locked external bases pinned to their digests."""
        snapshot, selection = self._resolve()
        pins = {
            ext.reference: pinned_reference(ext.reference, self.pins[ext.reference])
            for ext in self.externals
            if ext.arg is None and ext.line is not None and ext.reference in self.pins
        }
        edit = None
        if pins:
            where, args = self.spec.dockerfile, dict(self.spec.build_args)
            edit = functools.partial(pin_literal_froms, pins=pins, build_args=args, where=where)
        at = snapshot.index_of(self.spec.dockerfile)
        files = self.files
        if selection.unshipped is not None:
            files = tuple(f for f in files if f.path != self.spec.dockerfile)
        return BuildContext(
            files=files,
            dirs=folders_of(files, selection.empty_dirs),
            reader=snapshot.reader,
            dockerfile=snapshot.file(at) if at is not None else None,
            dockerfile_edit=edit,
        )


def hash_image(spec: ImageSpec | dict, listing: str, base_version: str | None) -> str:
    """The version of an image from its entry (or effective identity), its context listing
    and its base's version."""
    identity = spec if isinstance(spec, dict) else spec.identity()
    h = hashlib.sha256()
    h.update(SCHEME.encode() + b"\0")
    h.update(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(b"base\0" + (base_version or "-").encode() + b"\0")
    h.update(listing.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def effective_identity(
    manifest: Manifest,
    name: str,
    ignore_path: str | None,
    pins: dict[str, str] | None = None,
    dockerfile_shipped: bool = True,
) -> dict:
    """An image's entry as hashed: its own fields plus what the manifest-wide defaults, the
    ignore file in force, the lock's digests of its external bases and an ignored Dockerfile
    add (only when they differ from the plain defaults, so the versions of manifests without
    them stay what they were)."""
    identity = manifest.images[name].identity()
    if not dockerfile_shipped:
        # builds before the context followed Docker here shipped the Dockerfile: a new version
        identity["dockerfile_in_context"] = False
    if pins:
        identity["external_bases"] = dict(sorted(pins.items()))
    platform = manifest.platform_of(name)
    if platform:
        identity["platform"] = platform
    if ignore_path not in (DOCKERIGNORE, None) or manifest.dockerignore_of(name) is False:
        identity["dockerignore"] = ignore_path or False
    return identity


def _project_template(manifest: Manifest, name: str) -> str | None:
    template = manifest.images[name].codebuild_project or manifest.naming.codebuild_project
    return None if template == DEFAULT_PROJECT_NAME else template


class _Ignores:
    """Ignore files of one snapshot, parsed and matched once each."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._done: dict[str | None, tuple[DockerIgnore, frozenset[int]]] = {}

    def get(self, path: str | None) -> tuple[DockerIgnore, frozenset[int]]:
        if path not in self._done:
            text = self.snapshot.read_text(path) if path else None
            ignore = DockerIgnore(text, path or DOCKERIGNORE)
            self._done[path] = (ignore, ignore.excluded_indices(self.snapshot.paths))
        return self._done[path]


@dataclass(frozen=True)
class VersionSet:
    """Versions of every image of a manifest at one state of the repo."""

    manifest: Manifest
    images: dict[str, ImageVersion]  # in dependency order
    commit: str | None  # None for the working tree
    root: Path
    note: str | None = None  # said once by `plan` (e.g. how the manifest at a ref was found)

    def __getitem__(self, name: str) -> ImageVersion:
        return self.images[name]

    def __iter__(self):
        return iter(self.images.values())


def _pins(externals: Iterable[ExternalBase], lock: dict[str, str] | None) -> dict[str, str]:
    """The lock's digests of the given external bases."""
    lock = lock or {}
    return {e.reference: lock[e.reference] for e in externals if e.reference in lock}


def _externals(manifest: Manifest, name: str, dockerfile: Dockerfile) -> list[ExternalBase]:
    spec = manifest.images[name]
    return external_bases(dockerfile, spec.build_args, spec.base, spec.base_arg, manifest.images)


def compute_versions(
    manifest: Manifest,
    snapshot: Snapshot,
    ignore: DockerIgnore | None = None,
    *,
    lock: dict[str, str] | None = None,
    lock_source: str | None = None,
    lock_report: list[str] | None = None,
) -> VersionSet:
    """Versions of all images of `manifest` in `snapshot`, bases first.

    Each image's Dockerfile is checked against its context (`contextcheck`); every problem
    of every image is raised at once as a ManifestError. `ignore`: force one ignore rule set
    for every image (tests); by default each image's ignore file in force is used.
    `lock`: the digests of `bases.lock` (hashed into the versions of the images using them);
    with `lock_source` (the working tree), an external base missing from the lock or an
    entry no image uses is a problem too, or only reported in `lock_report` when given (a
    commit's versions are computed even when its lock is out of step).
    """
    out: dict[str, ImageVersion] = {}
    ignores = _Ignores(snapshot)
    problems: list[str] = []
    usage: dict[str, list[str]] = {}
    for name in manifest.order():
        spec = manifest.images[name]
        if snapshot.index_of(spec.dockerfile) is None:
            raise ManifestError(
                f"{manifest.source}: image '{name}', field 'dockerfile': '{spec.dockerfile}'"
                " is not a file git tracks or sees (is it ignored?)"
            )
        ignore_path = ignore_file_for(manifest, name, snapshot)
        if ignore is not None:
            rules, excluded = ignore, ignore.excluded_indices(snapshot.paths)
        else:
            rules, excluded = ignores.get(ignore_path)
        selection = select_context(spec, snapshot, excluded, rules)
        dockerfile = parse_dockerfile(snapshot.read_text(spec.dockerfile) or "")
        check = check_image(manifest, name, dockerfile, snapshot, selection, rules)
        problems.extend(check.problems)
        externals = tuple(_externals(manifest, name, dockerfile))
        for ref in dict.fromkeys(ext.reference for ext in externals):
            usage.setdefault(ref, []).append(name)
        pins = _pins(externals, lock)
        identity = effective_identity(
            manifest, name, ignore_path, pins, selection.unshipped is None
        )
        base_version = out[spec.base].version if spec.base in out else None
        version = hash_image(identity, selection.listing(snapshot.records), base_version)
        pinned = (snapshot, selection)
        out[name] = ImageVersion(
            name,
            spec,
            version,
            base_version,
            lambda p=pinned: p,
            identity=identity,
            base_arg=check.base_arg,
            dockerfile=dockerfile,
            platform=manifest.platform_of(name),
            ignore=rules,
            project_template=_project_template(manifest, name),
            externals=externals,
            pins=pins,
        )
    if lock is not None and lock_source is not None:
        found = lock_problems(usage, lock, lock_source)
        (lock_report if lock_report is not None else problems).extend(found)
    if problems:
        raise ManifestError(problems[0], lines=problems)
    return VersionSet(manifest=manifest, images=out, commit=snapshot.commit, root=snapshot.root)


def _manifest_relpath(root: Path, manifest_path: Path) -> str:
    try:
        return manifest_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return ""


def worktree_versions(
    repo: str | Path,
    manifest_path: str | Path | None = None,
    scan: WorktreeScan | None = None,
    manifest: Manifest | FrozenManifest | None = None,
) -> VersionSet:
    """Versions of the working tree as it is now (staged, unstaged and untracked changes).

    `scan`: a WorktreeScan of the repo already started by the caller (see `plan`);
    `manifest`: the file at `manifest_path`, validated (`manifestview.load_validated`). A
    clean tree is answered from the clean-tree cache, else from the cache of the commit whose
    tree the index is; a clean tree computed in full fills both.
    """
    root = repo_root(repo) if scan is None else scan.root
    path = Path(manifest_path) if manifest_path else root / "images.yaml"
    if manifest is None:
        from build_assets.core.manifest import load_manifest

        manifest = load_manifest(path, root)
    wanted = [*manifest.all_paths(), *manifest.ignore_paths(), DOCKERIGNORE]
    if scan is None or not scan.covers(wanted):
        scan = WorktreeScan(root, wanted)
    lock_file = path.parent / LOCK_FILE
    lock_bytes = lock_file.read_bytes() if lock_file.is_file() else None
    lock = None if lock_bytes is None else parse_lock(lock_bytes.decode(), str(lock_file))
    manifest_text = cache_text(path.read_bytes(), lock_bytes)  # cache keys: manifest + lock
    if not scan.clean:
        return compute_versions(manifest, scan.snapshot(), lock=lock, lock_source=str(lock_file))
    cached = versioncache.load(scan, manifest, manifest_text)
    if cached is not None:
        return _from_cache(manifest, cached, scan.snapshot, root, None, _disk_reader(root), lock)
    tree = index_tree(root)  # may write git's cached trees into the index file
    scan.index_rewritten()
    key = None
    if tree is not None:
        key = versioncache.commit_key(tree, versioncache.manifest_place(root, path), manifest_text)
        entry = versioncache.load_commit(scan.git_dir, key)
        if (
            entry is not None
            and entry.get("lock_in_step") is True  # else validation says what is out of step
            and set(entry["images"]) == set(manifest.images)
        ):
            versioncache.save_from_entry(scan, manifest_text, entry, tree)
            return _from_cache(
                manifest, entry["images"], scan.snapshot, root, None, _disk_reader(root), lock
            )
    versions = compute_versions(manifest, scan.snapshot(), lock=lock, lock_source=str(lock_file))
    versioncache.save(scan, manifest_text, versions, tree)
    if key is not None:
        versioncache.save_commit(scan.git_dir, key, versions, lock_in_step=True)
    return versions


def _disk_reader(root: Path) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        try:
            return (root / path).read_text(errors="replace")
        except OSError:
            return None

    return read


def _from_cache(
    manifest: Manifest,
    cached: dict,
    snapshot: Callable[[], Snapshot],
    root: Path,
    commit: str | None,
    read_text: Callable[[str], str | None],
    lock: dict[str, str] | None = None,
) -> VersionSet:
    """A VersionSet from a cache entry; the snapshot (made by `snapshot()`), file lists,
    identities and base args are made only when asked for."""
    state: dict[str, _Ignores] = {}

    def ignores() -> _Ignores:
        if "ignores" not in state:
            state["ignores"] = _Ignores(snapshot())
        return state["ignores"]

    def resolver(name: str) -> Callable[[], tuple[Snapshot, ContextSelection]]:
        @functools.cache  # files, context, identity and exclusions all ask for it
        def resolve() -> tuple[Snapshot, ContextSelection]:
            known = ignores()
            path = ignore_file_for(manifest, name, known.snapshot)
            rules, excluded = known.get(path)
            return known.snapshot, select_context(
                manifest.images[name], known.snapshot, excluded, rules
            )

        return resolve

    def ignore_of(name: str) -> Callable[[], DockerIgnore]:
        def get() -> DockerIgnore:
            known = ignores()
            return known.get(ignore_file_for(manifest, name, known.snapshot))[0]

        return get

    def identity(
        name: str,
        parsed: Callable[[], Dockerfile],
        resolve: Callable[[], tuple[Snapshot, ContextSelection]],
    ) -> Callable[[], dict]:
        return lambda: effective_identity(
            manifest,
            name,
            ignore_file_for(manifest, name, ignores().snapshot),
            _pins(_externals(manifest, name, parsed()), lock),
            resolve()[1].unshipped is None,
        )

    def externals(name: str, parsed: Callable[[], Dockerfile]):
        return lambda: tuple(_externals(manifest, name, parsed()))

    def dockerfile(spec: ImageSpec) -> Callable[[], Dockerfile]:
        return functools.cache(lambda: parse_dockerfile(read_text(spec.dockerfile) or ""))

    def base_arg(spec: ImageSpec, parsed: Callable[[], Dockerfile]) -> Callable[[], str | None]:
        return lambda: spec.base_arg or parsed().base_arg

    out: dict[str, ImageVersion] = {}
    for name in manifest.order():
        spec = manifest.images[name]
        version, count = cached[name]
        parsed = dockerfile(spec)
        base_version = out[spec.base].version if spec.base in out else None
        resolve = resolver(name)
        out[name] = ImageVersion(
            name,
            spec,
            version,
            base_version,
            resolve,
            count,
            identity=identity(name, parsed, resolve),
            base_arg=base_arg(spec, parsed),
            platform=manifest.platform_of(name),
            ignore=ignore_of(name),
            project_template=_project_template(manifest, name),
            dockerfile=parsed,
            externals=externals(name, parsed),
            pins=lock,  # ImageVersion.pinned_args looks up only this image's externals
        )
    return VersionSet(manifest=manifest, images=out, commit=commit, root=root)


def commit_versions(
    repo: str | Path,
    ref: str,
    manifest_path: str | Path | None = None,
    *,
    missing_ok: bool = False,
    listing: CommitListing | None = None,
) -> VersionSet:
    """Versions at a commit, from git objects (no checkout), with the manifest as it was there.

    A manifest inside the repository is read as committed at `ref`; when it is not there,
    `missing_ok` (an explicitly given manifest) makes every image new (an empty set with a
    note), else it is an error naming the file. A manifest outside the repository is the
    same file on both sides (said in the note). Returns a VersionSet whose manifest may lack
    images that are new since `ref`. `listing`: the commit's files, already being listed.
    """
    root = repo_root(repo)
    ref_ids = resolve_commit_tree(root, ref)
    commit = ref_ids.commit
    path = Path(manifest_path) if manifest_path else root / "images.yaml"
    rel = _manifest_relpath(root, path)
    shown = rel or str(manifest_path)
    note = None
    if rel:
        text = read_file_at(root, commit, rel)
        if text is None:
            if not missing_ok:
                raise ManifestError(f"{shown}: does not exist at {ref} ({commit[:12]})")
            from build_assets.core.manifest import Manifest

            empty = Manifest.model_construct(images={}, source=f"{shown}@{ref}")
            note = f"{shown} is not committed at {ref}: every image is new."
            return VersionSet(empty, {}, commit, root, note)
        source = f"{shown}@{ref}"
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"{shown}: cannot read manifest: {exc.strerror}") from None
        source = shown
        note = f"{shown} is outside the repository: the same manifest is used for {ref}."
    from build_assets.core.manifest import parse_manifest

    draft = parse_manifest(text, source)
    wanted = [*draft.all_paths(), *draft.ignore_paths(), DOCKERIGNORE]
    lock_text, lock_source = _lock_at(root, commit, rel, path, ref)
    lock = None if lock_text is None else parse_lock(lock_text, lock_source)
    key = versioncache.commit_key(
        ref_ids.tree,
        versioncache.manifest_place(root, path),
        cache_text(text.encode(), None if lock_text is None else lock_text.encode()),
    )
    entry = versioncache.load_commit(ref_ids.git_dir, key)
    if entry is not None and set(entry["images"]) == set(draft.images):
        # same tree, same manifest: validated when the entry was made
        snapshot = functools.cache(lambda: commit_snapshot(root, commit, wanted))
        versions = _from_cache(
            draft, entry["images"], snapshot, root, commit, lambda p: snapshot().read_text(p), lock
        )
        return VersionSet(versions.manifest, versions.images, commit, root, note)
    if listing is not None and listing.commit == commit and listing.covers(wanted):
        tree = listing.snapshot(wanted)
    else:
        tree = commit_snapshot(root, commit, wanted)
    manifest = parse_manifest(text, source, tree.exists)
    out_of_step: list[str] = []  # a lock out of step: those bases unpinned, said elsewhere
    versions = compute_versions(
        manifest, tree, lock=lock, lock_source=lock_source, lock_report=out_of_step
    )
    versioncache.save_commit(ref_ids.git_dir, key, versions, lock_in_step=not out_of_step)
    return VersionSet(versions.manifest, versions.images, versions.commit, versions.root, note)


def _lock_at(root: Path, commit: str, rel: str, path: Path, ref: str) -> tuple[str | None, str]:
    """(text, name) of the lock next to the manifest as it is at `commit` (inside the
    repository) or on disk (a manifest outside it)."""
    if rel:
        lock_rel = posixpath.join(posixpath.dirname(rel), LOCK_FILE)
        return read_file_at(root, commit, lock_rel), f"{lock_rel}@{ref}"
    lock_file = path.parent / LOCK_FILE
    try:
        return lock_file.read_text(), str(lock_file)
    except OSError:
        return None, str(lock_file)
