"""Provenance in the registry: what each pushed image version was built from.

Every image carries OCI labels (`labels`): its version, its base's version, its manifest entry
(identity, JSON) and the digest of its content list. The content list itself (path, git mode
and blob id of every context file: what `plan`'s per-file reasons need) is a small OCI
artifact in the same repository, stored by content address (its blob digest is the label) and
tagged `provenance-<version[:12]>`. The last version built (or found built) of each repository
is the `last-build` tag on its provenance artifact: on a registry with mutable tags it is
re-pushed; on ECR (immutable tags, see `bootstrap`) it is deleted and put again through the
ECR API, the one tag that moves (so too on a registry that refuses the re-push as ECR does:
the local stack's, `stack.ecr_registry`).

So `plan` on any machine that reads the registry asks (`registry_states`): is the current tag
there, and if not, what was the last build made of? The local build records only cache these blobs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from build_assets.core.context import ContextFile
from build_assets.engine import registry as reg

if TYPE_CHECKING:
    from build_assets.core.versioning import ImageVersion

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.build-assets.provenance.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
POINTER_TAG = "last-build"
PROVENANCE_PREFIX = "provenance-"
LABEL = "org.build-assets."
LOOKUP_THREADS = 16
_LABELS: dict[str, dict[str, str]] = {}  # version -> labels (a version fixes its content)


def provenance_tag(version: str) -> str:
    return PROVENANCE_PREFIX + version[:12]


@dataclass(frozen=True)
class Provenance:
    """What one image version was built from."""

    image: str
    version: str
    base_version: str | None
    identity: dict
    files: tuple[ContextFile, ...]

    @classmethod
    def of(cls, image: ImageVersion) -> Provenance:
        return cls(image.name, image.version, image.base_version, image.identity, image.files)

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same version always gives the same bytes (and digest)."""
        doc = {
            "schema": 1,
            "image": self.image,
            "version": self.version,
            "base_version": self.base_version,
            "identity": self.identity,
            "files": [[f.path, f.mode, f.blob] for f in self.files],
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogateescape")

    @classmethod
    def from_bytes(cls, data: bytes) -> Provenance:
        doc = json.loads(data.decode("utf-8", "surrogateescape"))
        return cls(
            doc["image"],
            doc["version"],
            doc.get("base_version"),
            doc.get("identity") or {},
            tuple(ContextFile(*f) for f in doc.get("files") or ()),
        )

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()


def labels(image: ImageVersion) -> dict[str, str]:
    """The OCI labels of an image version (`build_image.sh` sets them from IMAGE_LABELS)."""
    found = _LABELS.get(image.version)
    if found is None:
        prov = Provenance.of(image)
        found = {
            LABEL + "image": image.name,
            LABEL + "version": image.version,
            LABEL + "base-version": image.base_version or "",
            LABEL + "identity": json.dumps(image.identity, sort_keys=True, separators=(",", ":")),
            LABEL + "provenance": prov.digest,
        }
        _LABELS[image.version] = found
    return found


def _artifact(prov: Provenance, blob_digest: str, size: int) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": MEDIA_TYPE,
        "config": {
            "mediaType": EMPTY_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(),
            "size": len(EMPTY),
        },
        "layers": [{"mediaType": MEDIA_TYPE, "digest": blob_digest, "size": size}],
        "annotations": {LABEL + "image": prov.image, LABEL + "version": prov.version},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def publish(repository: str, prov: Provenance, *, pointer: bool = True) -> None:
    """Store the provenance artifact (once per version) and point `last-build` at it."""
    data = prov.to_bytes()
    blob = reg.put_blob(repository, data)
    reg.put_blob(repository, EMPTY)
    body = _artifact(prov, blob, len(data))
    tag = provenance_tag(prov.version)
    if reg.manifest_digest(repository, tag) is None:
        reg.put_manifest(repository, tag, body, OCI_MANIFEST)
    if pointer:
        _move_pointer(repository, body)


def _move_pointer(repository: str, body: bytes) -> None:
    ref = reg.parse_repository(repository)
    ids: dict[str, str] = {}
    if reg.is_ecr(ref.host):
        region = ref.host.split(".")[3]
        ids["registryId"] = ref.host.split(".")[0]
    else:
        try:
            reg.put_manifest(repository, POINTER_TAG, body, OCI_MANIFEST)
            return
        except reg.TagExistsError:
            # a registry keeping ECR's rules (the local stack's, for a repository of its ECR
            # API): move the pointer as on ECR, through that API (AWS_ENDPOINT_URL_ECR)
            region = None
    from build_assets.aws.clients import make_client

    ecr = make_client("ecr", region_name=region)
    # immutable tags: the pointer is the one tag that is removed and put again
    ecr.batch_delete_image(**ids, repositoryName=ref.name, imageIds=[{"imageTag": POINTER_TAG}])
    ecr.put_image(
        **ids,
        repositoryName=ref.name,
        imageManifest=body.decode(),
        imageManifestMediaType=OCI_MANIFEST,
        imageTag=POINTER_TAG,
    )


def fetch(repository: str, reference: str, cache: ProvenanceCache | None = None):
    """The provenance behind a tag or manifest digest (None if absent or not ours)."""
    return from_manifest(repository, reg.get_manifest(repository, reference), cache)


def from_manifest(repository: str, manifest: dict | None, cache: ProvenanceCache | None = None):
    """The provenance an artifact manifest points at (None if absent or not ours): from the
    cache when it holds that blob, else from the registry."""
    if not manifest or manifest.get("artifactType") != MEDIA_TYPE:
        return None
    [layer] = manifest["layers"]
    digest = layer["digest"]
    data = cache.get(digest) if cache else None
    if data is None:
        data = reg.get_blob(repository, digest)
        if data is None:
            return None
        if cache:
            cache.put(digest, data)
    return Provenance.from_bytes(data)


class ProvenanceCache:
    """Provenance blobs by digest in a local folder: content addressed, so never stale."""

    def __init__(self, folder) -> None:
        from pathlib import Path

        self.folder = Path(folder)

    def _path(self, digest: str):
        return self.folder / digest.replace(":", "-")

    def get(self, digest: str) -> bytes | None:
        try:
            data = self._path(digest).read_bytes()
        except OSError:
            return None
        return data if "sha256:" + hashlib.sha256(data).hexdigest() == digest else None

    def put(self, digest: str, data: bytes) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self._path(digest).with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(self._path(digest))
        except OSError:
            pass  # a read-only state folder: no cache, same answers


@dataclass(frozen=True)
class RegistryState:
    """What the registry says about one image: its current tag's digest, else its last build."""

    digest: str | None
    last: Provenance | None = None


def registry_states(
    registry: str,
    wanted: Iterable[tuple[str, str]],
    cache: ProvenanceCache | None = None,
    *,
    with_last: bool = True,
    repository_of: Callable[[str], str] = str,
) -> dict[str, RegistryState]:
    """Image -> RegistryState for (image, current tag) pairs, asked in parallel threads:
    one HEAD per image, plus the `last-build` provenance of the images not built. On ECR, one
    `batch_get_image` per image asks for both (`aws.ecr.tagged_images`). `repository_of` names
    an image's repository (the manifest's naming templates; default: the image's name)."""
    wanted = list(wanted)
    on_ecr = reg.is_ecr(reg.parse_repository(f"{registry}/x").host)

    def one(item: tuple[str, str]) -> RegistryState:
        image, tag = item
        repository = f"{registry}/{repository_of(image)}"
        if on_ecr:
            return _ecr_state(repository, tag, cache, with_last)
        digest = reg.manifest_digest(repository, tag)
        if digest is not None or not with_last:
            return RegistryState(digest)
        return RegistryState(None, fetch(repository, POINTER_TAG, cache))

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(LOOKUP_THREADS, len(wanted))) as pool:
        states = list(pool.map(one, wanted))
    return {image: st for (image, _), st in zip(wanted, states, strict=True)}


def _ecr_state(
    repository: str, tag: str, cache: ProvenanceCache | None, with_last: bool
) -> RegistryState:
    from build_assets.aws.ecr import tagged_images

    found = tagged_images(repository, [tag, POINTER_TAG] if with_last else [tag])
    if tag in found:
        return RegistryState(found[tag].digest)
    pointer = found.get(POINTER_TAG)
    return RegistryState(
        None, from_manifest(repository, pointer.manifest, cache) if pointer else None
    )


class Publisher:
    """Publishes the provenance of every successful build record (best effort: a registry
    that refuses it never fails a build; `plan` then falls back to 'not built yet')."""

    def __init__(self, registry: str, repository_of: Callable[[str], str] | None = None) -> None:
        """repository_of: an image's full repository ('host/name'; the manifest's naming
        templates), default '<registry>/<image>'."""
        self.registry = registry
        self.repository_of = repository_of or (lambda image: f"{registry}/{image}")
        self._reachable: bool | None = None

    def __call__(self, prov: Provenance) -> None:
        if self._reachable is None:
            host = reg.parse_repository(f"{self.registry}/x").host
            self._reachable = reg.ping(host)
        if not self._reachable:
            return
        try:
            publish(self.repository_of(prov.image), prov)
        except Exception as exc:  # noqa: BLE001 - provenance is never worth a failed build
            log.warning("could not publish the provenance of %s: %s", prov.image, exc)
