"""Media types of OCI and Docker image manifests: what the registry client (`engine.registry`),
the ECR look-ups (`aws.ecr`) and the local stack's ECR API (`stack.ecr_state`) accept."""

from __future__ import annotations

INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
