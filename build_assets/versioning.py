"""Content versions of images: a Merkle hash along `base` of exactly what goes into a build.

    version(image) = sha256(scheme, manifest entry, context files (path, mode, blob), version(base))

The context of an image is its Dockerfile plus every file under its `source_paths` that git
tracks or sees as untracked-and-not-ignored, minus the root `.dockerignore` matches.
`context_files` is the one function that decides this set; it is both hashed here and
shipped by every builder, so a build can never differ from its version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from build_assets.context import BuildContext, ContextFile
from build_assets.errors import ManifestError
from build_assets.gitrepo import (
    Snapshot,
    commit_snapshot,
    read_file_at,
    repo_root,
    resolve_commit,
    worktree_snapshot,
)
from build_assets.manifest import ImageSpec, Manifest, load_manifest, parse_manifest

SCHEME = "build-assets/v1"
TAG_PREFIX = "git-"
DOCKERIGNORE = ".dockerignore"


def tag_for(version: str) -> str:
    """The image tag of a version: 'git-' + its first 12 hex digits."""
    return TAG_PREFIX + version[:12]


class DockerIgnore:
    """Root `.dockerignore` rules with Docker's semantics (patterns anchored at the root)."""

    def __init__(self, text: str | None) -> None:
        lines = []
        for raw in (text or "").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line[1:].strip() if negate else line
            line = line.lstrip("/")
            while line.startswith("./"):
                line = line[2:]
            if line:
                lines.append(("!" if negate else "") + "/" + line)
        self._spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        self._cache: dict[str, bool] = {}

    def excludes(self, path: str) -> bool:
        if self._spec is None:
            return False
        hit = self._cache.get(path)
        if hit is None:
            hit = self._cache[path] = self._spec.match_file(path)
        return hit


def context_files(spec: ImageSpec, snapshot: Snapshot, ignore: DockerIgnore) -> list[ContextFile]:
    """Exactly the files of one image's build context, sorted by path."""
    chosen: dict[str, ContextFile] = {}
    for root in spec.source_paths:
        for f in snapshot.under(root):
            if not ignore.excludes(f.path):
                chosen[f.path] = f
    dockerfile = snapshot.get(spec.dockerfile)
    if dockerfile is not None:  # always shipped, even when .dockerignore matches it
        chosen[dockerfile.path] = dockerfile
    return sorted(chosen.values())


@dataclass(frozen=True)
class ImageVersion:
    """The computed version of one image and the context it was computed from."""

    name: str
    spec: ImageSpec
    version: str
    base_version: str | None
    files: tuple[ContextFile, ...] = field(repr=False)
    context: BuildContext = field(repr=False, compare=False)

    @property
    def tag(self) -> str:
        return tag_for(self.version)

    @property
    def base(self) -> str | None:
        return self.spec.base

    @property
    def lambdas(self) -> tuple[str, ...]:
        return self.spec.lambdas


def hash_image(spec: ImageSpec, files: list[ContextFile], base_version: str | None) -> str:
    """The version of an image from its entry, its context files and its base's version."""
    h = hashlib.sha256()
    h.update(SCHEME.encode() + b"\0")
    h.update(json.dumps(spec.identity(), sort_keys=True, separators=(",", ":")).encode() + b"\0")
    h.update(b"base\0" + (base_version or "-").encode() + b"\0")
    for f in files:
        h.update(f"{f.mode} {f.blob} ".encode() + f.path.encode("utf-8", "surrogateescape") + b"\0")
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
    for name in manifest.order():
        spec = manifest.images[name]
        if snapshot.get(spec.dockerfile) is None:
            raise ManifestError(
                f"{manifest.source}: image '{name}', field 'dockerfile': '{spec.dockerfile}'"
                " is not a file git tracks or sees (is it ignored?)"
            )
        files = context_files(spec, snapshot, ignore)
        base_version = out[spec.base].version if spec.base else None
        version = hash_image(spec, files, base_version)
        out[name] = ImageVersion(
            name=name,
            spec=spec,
            version=version,
            base_version=base_version,
            files=tuple(files),
            context=BuildContext(files=tuple(files), reader=snapshot.reader),
        )
    return VersionSet(manifest=manifest, images=out, commit=snapshot.commit, root=snapshot.root)


def _manifest_relpath(root: Path, manifest_path: Path) -> str:
    try:
        return manifest_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return ""


def worktree_versions(repo: str | Path, manifest_path: str | Path | None = None) -> VersionSet:
    """Versions of the working tree as it is now (staged, unstaged and untracked changes)."""
    root = repo_root(repo)
    path = Path(manifest_path) if manifest_path else root / "images.yaml"
    manifest = load_manifest(path, root)
    snapshot = worktree_snapshot(root, [*manifest.all_paths(), DOCKERIGNORE])
    ignore = DockerIgnore(snapshot.read_text(DOCKERIGNORE))
    return compute_versions(manifest, snapshot, ignore)


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
