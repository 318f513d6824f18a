"""A builder test double: builds take a set time, nothing is pushed anywhere.

Used by tests and `bench/cascade.py` to measure the scheduler itself (ordering,
concurrency, overhead) without Docker or AWS. Durations are simulated in real time:
`poll` blocks until the earliest build in flight is due.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence

from build_assets.engine.builders.base import BuildHandle, BuildRequest, BuildResult
from build_assets.errors import BuildError

SIMULATED_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


class SimulatedBuilder:
    """Builds succeed after `durations[image]` seconds (default `default_duration`)."""

    name = "simulated"

    def __init__(
        self,
        durations: dict[str, float] | None = None,
        *,
        default_duration: float = 0.0,
        fail: set[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.durations = durations or {}
        self.default_duration = default_duration
        self.fail = fail or set()
        self.clock = clock
        self.pushed: dict[str, str] = {}  # image_uri -> digest
        self.started: list[BuildRequest] = []
        self.cancelled: list[str] = []
        self._wake = threading.Event()
        self._count = 0

    def existing_digest(self, request: BuildRequest) -> str | None:
        return self.pushed.get(request.image_uri)

    def media_type(self, image_uri_pinned: str) -> str | None:
        """What Lambda would be given: a simulated image is a single-platform manifest."""
        return SIMULATED_MEDIA_TYPE

    def start(self, request: BuildRequest) -> BuildHandle:
        self._count += 1
        self.started.append(request)
        due = self.clock() + self.durations.get(request.image, self.default_duration)
        return BuildHandle(request, f"sim-{self._count}", self.clock(), {"due": due})

    def poll(self, handles: Sequence[BuildHandle]) -> list[BuildHandle]:
        if not handles:
            return []
        now = self.clock()
        due = min(h.state["due"] for h in handles)
        if due > now:
            self._wake.wait(due - now)  # simulated build time passing
        now = self.clock()
        return [h for h in handles if h.state["due"] <= now]

    def finish(self, handle: BuildHandle) -> BuildResult:
        req = handle.request
        if req.image in self.fail:
            raise BuildError(
                req.image, "simulated failure", log_tail="step 2/2 failed", build_id=handle.build_id
            )
        digest = "sha256:" + hashlib.sha256(req.image_uri.encode()).hexdigest()
        self.pushed[req.image_uri] = digest
        return BuildResult.built(
            req,
            digest,
            self.name,
            build_id=handle.build_id,
            duration_s=self.clock() - handle.started_at,
        )

    def cancel(self, handle: BuildHandle) -> None:
        self.cancelled.append(handle.build_id)
