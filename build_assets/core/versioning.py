"""Content versions of images: a Merkle hash along `base` of exactly what goes into a build.

    version(image) = sha256(scheme, manifest entry, context files (path, mode, blob), version(base))

The context of an image is its Dockerfile plus every file under its `source_paths` that git
tracks or sees as untracked-and-not-ignored, minus the matches of the ignore file in force.
`select_context` is the one function that decides this set; it is both hashed here and
shipped by every builder, so a build can never differ from its version. The Dockerfile is
always hashed; it is shipped inside the context only where Docker would ship it.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable
from pathlib import Path

from build_assets.core import versioncache
from build_assets.core.context_selection import ContextSelection, select_context
from build_assets.core.contextcheck import ignore_file_for
from build_assets.core.dockerfile import Dockerfile
from build_assets.core.dockerfile import parse as parse_dockerfile
from build_assets.core.gitrepo import (
    CommitListing,
    Snapshot,
    WorktreeScan,
    commit_snapshot,
    index_tree,
    read_file_at,
    repo_root,
    resolve_commit_tree,
)
from build_assets.core.hashing import (
    Ignores,
    compute_versions,
    effective_identity,
    externals_of,
    hash_image,
    pins_of,
)
from build_assets.core.ignore import DockerIgnore
from build_assets.core.image_version import DEFAULT_BASE_ARG, ImageVersion, VersionSet
from build_assets.core.lock import LOCK_FILE, cache_text, parse_lock
from build_assets.core.model import DOCKERIGNORE, SCHEME, ImageSpec, Manifest, tag_for
from build_assets.errors import ManifestError

__all__ = [
    "DEFAULT_BASE_ARG",
    "DOCKERIGNORE",
    "SCHEME",
    "ContextSelection",
    "DockerIgnore",
    "ImageVersion",
    "VersionSet",
    "commit_versions",
    "compute_versions",
    "effective_identity",
    "hash_image",
    "select_context",
    "tag_for",
    "worktree_versions",
]


def _manifest_relpath(root: Path, manifest_path: Path) -> str:
    try:
        return manifest_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return ""


def worktree_versions(
    repo: str | Path,
    manifest_path: str | Path | None = None,
    scan: WorktreeScan | None = None,
    manifest: Manifest | None = None,
) -> VersionSet:
    """Versions of the working tree as it is now (staged, unstaged and untracked changes).

    `scan`: a WorktreeScan of the repo already started by the caller (see `plan`);
    `manifest`: the file at `manifest_path`, validated (`validated_cache.load_validated`). A
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
    state: dict[str, Ignores] = {}

    def ignores() -> Ignores:
        if "ignores" not in state:
            state["ignores"] = Ignores(snapshot())
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
            pins_of(externals_of(manifest, name, parsed()), lock),
            resolve()[1].unshipped is None,
        )

    def externals(name: str, parsed: Callable[[], Dockerfile]):
        return lambda: tuple(externals_of(manifest, name, parsed()))

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
            project_template=manifest.project_template(name),
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
            empty = Manifest(images={}, source=f"{shown}@{ref}")
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
