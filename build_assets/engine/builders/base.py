"""The small protocol every builder (local Docker, AWS CodeBuild, test doubles) implements.

A scheduler drives builders like this::

    digest = builder.existing_digest(request)      # tag already pushed? -> cached, no build
    handle = builder.start(request)                 # non-blocking: submit the build
    done = builder.poll([handle, ...])              # one call for every build in flight
    result = builder.finish(handle)                 # BuildResult, or raises BuildError
    builder.cancel(handle)                          # stop a build (run cancelled)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from build_assets.core.context import BuildContext

if TYPE_CHECKING:
    from build_assets.core.versioning import ImageVersion


@dataclass(frozen=True)
class BuildRequest:
    """Everything needed to build and push one image version."""

    image: str  # manifest name, also the repository name
    version: str  # full sha256 hex of the image's inputs
    tag: str  # "git-" + version[:12]
    repository: str  # registry prefix + "/" + image, without tag
    dockerfile: str  # repo-relative path inside the context
    build_args: dict[str, str]
    base_image: str | None  # base pinned by digest ("repo@sha256:..."), passed as BASE_IMAGE
    context: BuildContext  # exactly the files that were hashed
    previous_tag: str | None = None  # last built tag of this image, for --cache-from
    base_arg: str = "BASE_IMAGE"  # the build arg the Dockerfile's first FROM takes the base from
    platform: str | None = None  # linux/amd64 | linux/arm64 (None: the builder's own)
    project_template: str | None = None  # CodeBuild project name template ({image}, {env})
    labels: dict[str, str] = field(default_factory=dict)  # OCI labels: engine.provenance
    # early start (`engine.early_start`): the base's repository:tag, not pushed yet; the build
    # script waits for it and pins the digest it resolves (base_image is then None)
    base_wait: str | None = None

    @property
    def image_uri(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass
class BuildHandle:
    """A build in flight. `build_id` is the backend's id (CodeBuild build id, local run id)."""

    request: BuildRequest
    build_id: str
    started_at: float
    state: dict = field(default_factory=dict)  # backend-private


@dataclass(frozen=True)
class BuildResult:
    """A finished, pushed image."""

    image: str
    tag: str
    image_uri: str  # repository:tag
    digest: str  # sha256:...
    cached: bool  # True when the tag was already in the registry and nothing was built
    builder: str
    build_id: str | None = None
    log_url: str | None = None
    duration_s: float = 0.0
    log_tail: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def built(cls, request: BuildRequest, digest: str, builder: str, **details) -> BuildResult:
        """The result of a build that pushed `digest`; `details`: build_id, log_url,
        duration_s, log_tail, extra."""
        return cls(
            image=request.image,
            tag=request.tag,
            image_uri=request.image_uri,
            digest=digest,
            cached=False,
            builder=builder,
            **details,
        )

    @classmethod
    def already_pushed(cls, request: BuildRequest, digest: str, builder: str) -> BuildResult:
        """The result for a tag found in the registry: nothing was built."""
        return cls(
            image=request.image,
            tag=request.tag,
            image_uri=request.image_uri,
            digest=digest,
            cached=True,
            builder=builder,
        )

    @property
    def pinned_uri(self) -> str:
        """The image URI pinned by digest (repository@sha256:...)."""
        return f"{self.image_uri.rsplit(':', 1)[0]}@{self.digest}"


@runtime_checkable
class Builder(Protocol):
    """Builds images remotely or locally; safe to call from one scheduler thread."""

    name: str

    def existing_digest(self, request: BuildRequest) -> str | None:
        """Digest of request.image_uri if that tag is already in the registry, else None."""

    def start(self, request: BuildRequest) -> BuildHandle:
        """Submit a build and return at once (attach to an identical in-flight build if any)."""

    def poll(self, handles: Sequence[BuildHandle]) -> list[BuildHandle]:
        """Return the handles whose builds have reached a terminal state (may block briefly)."""

    def finish(self, handle: BuildHandle) -> BuildResult:
        """Result of a terminal build; raises BuildError when it did not succeed."""

    def cancel(self, handle: BuildHandle) -> None:
        """Stop a build in flight (best effort)."""


def make_request(
    image: ImageVersion,
    repository: str,
    base_uri: str | None = None,
    previous_tag: str | None = None,
) -> BuildRequest:
    """The request to build (or look up) one image version in `repository`."""
    from build_assets.engine.provenance import labels

    return BuildRequest(
        image=image.name,
        version=image.version,
        tag=image.tag,
        repository=repository,
        dockerfile=image.spec.dockerfile,
        build_args={**image.spec.build_args, **image.pinned_args},  # core.lock
        base_image=base_uri,
        context=image.context,
        previous_tag=previous_tag,
        base_arg=image.base_arg,
        platform=image.platform,
        project_template=image.project_template,
        labels=labels(image),
    )
