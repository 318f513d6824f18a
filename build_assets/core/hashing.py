"""Merkle versions: an image's version hashes the scheme, its entry as built (its effective
identity), its context listing and its base's version; `compute_versions` checks and hashes
every image of a manifest in one snapshot, bases first."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from build_assets.core.context_selection import select_context
from build_assets.core.contextcheck import check_image, ignore_file_for
from build_assets.core.dockerfile import Dockerfile
from build_assets.core.dockerfile import parse as parse_dockerfile
from build_assets.core.gitrepo import Snapshot
from build_assets.core.ignore import DockerIgnore
from build_assets.core.image_version import ImageVersion, VersionSet
from build_assets.core.lock import ExternalBase, external_bases, lock_problems
from build_assets.core.model import DOCKERIGNORE, SCHEME, ImageSpec, Manifest
from build_assets.errors import ManifestError


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


class Ignores:
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


def pins_of(externals: Iterable[ExternalBase], lock: dict[str, str] | None) -> dict[str, str]:
    """The lock's digests of the given external bases."""
    lock = lock or {}
    return {e.reference: lock[e.reference] for e in externals if e.reference in lock}


def externals_of(manifest: Manifest, name: str, dockerfile: Dockerfile) -> list[ExternalBase]:
    """The external bases of an image that the lock pins (`lock.external_bases`)."""
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
    ignores = Ignores(snapshot)
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
        externals = tuple(externals_of(manifest, name, dockerfile))
        for ref in dict.fromkeys(ext.reference for ext in externals):
            usage.setdefault(ref, []).append(name)
        pins = pins_of(externals, lock)
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
            project_template=manifest.project_template(name),
            externals=externals,
            pins=pins,
        )
    if lock is not None and lock_source is not None:
        found = lock_problems(usage, lock, lock_source)
        (lock_report if lock_report is not None else problems).extend(found)
    if problems:
        raise ManifestError(problems[0], lines=problems)
    return VersionSet(manifest=manifest, images=out, commit=snapshot.commit, root=snapshot.root)
