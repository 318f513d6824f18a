"""Upstream base images in the lineage: one observable asset per external base.

The external bases of an image are read as the lock and the build read them
(`core.lock.image_bases`): an external manifest `base:`, and every `FROM` of every stage that
names neither the build arg receiving the manifest base, nor an earlier stage, nor `scratch`,
nor an image of the manifest; the entries of the lock of pinned digests next to the manifest
(`bases.lock`) are external bases too. Each one is an asset at the root of the graph
(`["upstream", ...]`, group `upstream_images`) that every image built on it depends on.
Observing it asks the base's registry for the digest of its tag (`registry.manifest_digest`):
that digest is the asset's data version, so when upstream moves, Dagster marks every image
above it as changed upstream. When a digest is pinned (`FROM ref@sha256:…` or a lock entry),
the `pinned_is_current` check fails while the pinned digest is behind upstream, naming both
digests.

`bases.lock` (YAML): `{bases: {REFERENCE: DIGEST}}` or a bare `{REFERENCE: DIGEST}` mapping,
where REFERENCE is `[host/]repo[:tag]` and DIGEST is `sha256:…` (or `{digest: sha256:…}`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    DataVersion,
    ObserveResult,
    multi_observable_source_asset,
)

from build_assets.core import lock as lk
from build_assets.core.lock import ExternalBase
from build_assets.core.versioning import VersionSet
from build_assets.errors import UserError

GROUP = "upstream_images"
CHECK = "pinned_is_current"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Upstream:
    """One external base: its reference (`repo:tag`) and the digest pinned for it, if any."""

    reference: str
    pinned: str | None

    @property
    def repository(self) -> str:
        """Registry host + repository, Docker Hub's names made explicit."""
        return lk.split_reference(self.reference)[0]

    @property
    def tag(self) -> str:
        return lk.split_reference(self.reference)[1]


def upstream_key(reference: str) -> AssetKey:
    """["upstream", <reference with every run of other characters as '_'>]."""
    return AssetKey(["upstream", _UNSAFE.sub("_", reference.split("@", 1)[0]).strip("_")])


def read_lock(manifest: Path) -> dict[str, str]:
    """Reference -> pinned digest from `bases.lock` next to the manifest ({} without one)."""
    entries, _ = lk.read_lock(manifest)
    return entries or {}


def image_bases(versions: VersionSet, name: str) -> list[ExternalBase]:
    """The external bases of one image, as the lock and the build read them
    (`core.lock.image_bases`), those pinned by a digest in the Dockerfile included."""
    spec = versions[name].spec
    dockerfile = versions[name].dockerfile  # parsed once per image version
    return lk.image_bases(
        dockerfile, spec.build_args, spec.base, spec.base_arg, versions.manifest.images
    )


def external_bases(versions: VersionSet, name: str) -> list[str]:
    """References (`repo:tag`, no digest) of the external bases of one image."""
    return list(dict.fromkeys(ext.reference for ext in image_bases(versions, name)))


def upstreams(versions: VersionSet, manifest: Path | None = None) -> list[Upstream]:
    """Every external base of the manifest, with its pinned digest (FROM @digest or lock)."""
    lock = read_lock(manifest) if manifest else {}
    found: dict[str, str | None] = {}
    for image in versions:
        for ext in image_bases(versions, image.name):
            found.setdefault(ext.reference, ext.digest)
    for ref, digest in lock.items():
        found[ref] = digest
    return [Upstream(ref, digest) for ref, digest in found.items()]


def observe(
    upstream: Upstream, key: AssetKey | None = None
) -> tuple[ObserveResult, AssetCheckResult | None]:
    """The upstream digest as the data version; the pinned check when a digest is pinned."""
    from build_assets.engine.registry import manifest_digest

    key = key or upstream_key(upstream.reference)
    digest = manifest_digest(upstream.repository, upstream.tag)
    if digest is None:
        raise UserError(f"upstream base {upstream.reference}: tag not found in its registry")
    meta = {"reference": upstream.reference, "upstream_digest": digest}
    if upstream.pinned:
        meta["pinned_digest"] = upstream.pinned
    result = ObserveResult(asset_key=key, data_version=DataVersion(digest), metadata=meta)
    if not upstream.pinned:
        return result, None
    behind = digest != upstream.pinned
    check = AssetCheckResult(
        asset_key=key,
        check_name=CHECK,
        passed=not behind,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"pinned base is behind upstream: {upstream.reference} pinned at {upstream.pinned},"
            f" upstream is at {digest}"
            if behind
            else f"{upstream.reference} is pinned at the upstream digest {digest}"
        ),
        metadata=meta,
    )
    return result, check


def build_upstream_assets(versions: VersionSet, manifest: Path | None = None, translator=None):
    """One observable multi-asset for every external base (None when there is none)."""
    found = upstreams(versions, manifest)
    if not found:
        return None
    key_of = translator.get_upstream_key if translator is not None else upstream_key
    by_key = {key_of(u.reference): u for u in found}
    specs = [
        AssetSpec(
            key=key,
            group_name=GROUP,
            kinds={"docker"},
            description=f"External base image {u.reference} (observed: its registry digest).",
            metadata={
                "reference": u.reference,
                **({"pinned_digest": u.pinned} if u.pinned else {}),
            },
        )
        for key, u in by_key.items()
    ]
    checks = [
        AssetCheckSpec(
            CHECK, asset=key, description="The pinned digest is the upstream tag's digest."
        )
        for key, u in by_key.items()
        if u.pinned
    ]

    @multi_observable_source_asset(
        name="upstream_base_images", specs=specs, check_specs=checks, can_subset=True
    )
    def _observe(context) -> Iterator[ObserveResult | AssetCheckResult]:
        for key, upstream in by_key.items():
            if key not in context.selected_asset_keys:
                continue
            result, check = observe(upstream, key)
            yield result
            if check is not None:
                yield check

    return _observe
