"""What happened to one image of a scheduler run (`Outcome`), and the words for it."""

from __future__ import annotations

from dataclasses import dataclass

from build_assets.core.versioning import ImageVersion
from build_assets.engine.builders.base import BuildRequest, BuildResult
from build_assets.errors import BuildError

BUILT, CACHED, FAILED_STATUS, BLOCKED = "built", "cached", "failed", "blocked"


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message (first line), or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class Outcome:
    """What happened to one selected image."""

    name: str
    status: str  # built | cached | failed | blocked
    image: ImageVersion
    result: BuildResult | None = None
    error: BuildError | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (BUILT, CACHED)


def lease_key(request: BuildRequest) -> str:
    """The lease that serialises builds of one version of one repository."""
    return f"{request.repository}@{request.version}"
