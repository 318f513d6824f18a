"""The ECR proxy's bookkeeping (`stack.ecr_registry`): what the ECR API (moto) says about
repositories and images, the CNCF registry behind the proxy and its storage folder, and ECR's
words and digests."""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from build_assets.core.mediatypes import MANIFEST_TYPES

log = logging.getLogger("ecr_registry")

REPO_TTL_S = 2.0  # how long an answer of describe_repositories is trusted
UPSTREAM_TIMEOUT_S = 600.0


def sha256_digest(data: bytes) -> str:
    """The digest ECR and the registry give `data` (sha256 of the exact bytes)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def immutable_message(tag: str, repository: str) -> str:
    """ECR's words for a refused overwrite of an immutable tag."""
    return (
        f"The image tag '{tag}' already exists in the '{repository}' repository and cannot be"
        " overwritten because the repository is immutable."
    )


class EcrState:
    """What the ECR API (moto) says, through boto3: repositories (briefly cached) and images."""

    def __init__(self, endpoint: str, region: str) -> None:
        import boto3
        from botocore.config import Config

        self.client = boto3.client(
            "ecr",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )
        self._repos: dict[str, tuple[float, dict[str, Any]]] = {}
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def forget(self) -> None:
        with self._guard:
            self._repos.clear()

    def repository(self, name: str) -> dict[str, Any] | None:
        """The ECR repository `name` (None when the ECR API does not know it)."""
        now = time.monotonic()
        with self._guard:
            cached = self._repos.get(name)
        if cached and now - cached[0] < REPO_TTL_S:
            return cached[1]
        from botocore.exceptions import ClientError, EndpointConnectionError

        try:
            repo = self.client.describe_repositories(repositoryNames=[name])["repositories"][0]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
                return None  # not cached: `bootstrap` may create it a moment from now
            raise
        except EndpointConnectionError:
            # moto is down: no ECR API to keep in step (a restarted moto starts empty), so
            # the registry serves as a plain one meanwhile rather than failing every push
            log.warning("ECR API unreachable: %s is served as a plain repository", name)
            return None
        with self._guard:
            self._repos[name] = (now, repo)
        return repo

    def lock(self, name: str, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((name, key), threading.Lock())

    def tag_digest(self, name: str, tag: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            details = self.client.describe_images(
                repositoryName=name, imageIds=[{"imageTag": tag}]
            )["imageDetails"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                return None
            raise
        return details[0]["imageDigest"] if details else None

    def image_tags(self, name: str, digest: str) -> list[str] | None:
        """Tags of the image `digest` (None: no such image)."""
        from botocore.exceptions import ClientError

        try:
            details = self.client.describe_images(
                repositoryName=name, imageIds=[{"imageDigest": digest}]
            )["imageDetails"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                return None
            raise
        return list(details[0].get("imageTags") or []) if details else None

    def put(self, name: str, body: bytes, media_type: str, digest: str, tag: str | None) -> None:
        """Record a manifest the registry accepted (a no-op when ECR already has it so)."""
        from botocore.exceptions import ClientError

        if tag is None and self.image_tags(name, digest) is not None:
            return  # pushed by digest and already there
        kwargs: dict[str, Any] = {
            "repositoryName": name,
            "imageManifest": body.decode("utf-8"),
            "imageManifestMediaType": media_type,
            "imageDigest": digest,
        }
        if tag is not None:
            kwargs["imageTag"] = tag
        try:
            got = self.client.put_image(**kwargs)["image"]["imageId"]["imageDigest"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ImageAlreadyExistsException":
                return  # same manifest, same tag: nothing changed
            raise
        if got != digest:
            raise RuntimeError(f"ECR API recorded {got} for a manifest whose digest is {digest}")


class Upstream:
    """The CNCF registry behind the proxy (plain HTTP on loopback) and its storage folder."""

    def __init__(self, address: str, data_root: Path | None) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.data_root = data_root

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=UPSTREAM_TIMEOUT_S)

    def call(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def exists(self, name: str, kind: str, digest: str) -> bool:
        accept = {"Accept": MANIFEST_ACCEPT} if kind == "manifests" else {}
        return self.call("HEAD", f"/v2/{name}/{kind}/{digest}", headers=accept)[0] == 200

    def untag(self, name: str, tag: str, digest: str) -> None:
        """Remove `tag` from the filesystem storage if it still points at `digest`."""
        if self.data_root is None:
            return
        folder = self.data_root / "docker/registry/v2/repositories" / name / "_manifests/tags"
        link = folder / tag / "current/link"
        try:
            if link.read_text().strip() == digest:
                shutil.rmtree(folder / tag)
        except OSError:
            pass


ACCEPTED_MEDIA_TYPES = list(MANIFEST_TYPES)
MANIFEST_ACCEPT = ", ".join(ACCEPTED_MEDIA_TYPES)


def references(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, digest) of what a manifest needs in its repository: blobs, or child manifests."""
    if "manifests" in manifest:  # an index / manifest list
        return [("manifests", m["digest"]) for m in manifest.get("manifests") or []]
    found = [("blobs", manifest["config"]["digest"])] if manifest.get("config") else []
    found += [("blobs", layer["digest"]) for layer in manifest.get("layers") or []]
    return found
