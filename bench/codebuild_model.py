"""A CodeBuild latency model for `bench/cascade.py`: provisioning, per-image work, push.

Each modelled build spends `provisioning` seconds (x a seeded jitter) before its first command,
then, when it was started early (`BuildRequest.base_wait`) or fire-and-forget, pulls its base's
tag every `retry` seconds until the base is pushed, then works (its duration x a jitter) and
pushes (`push` s). Its tag appears when the push ends; the build ends there. Billed seconds are
start to end (or to its stop), as CodeBuild bills a build from submission to termination.
`poll` waits like `CodeBuildBuilder.poll`: a fixed interval (at most `max_wait`), then returns
the builds that ended. Time is wall-clock time, so the scheduler runs as it does for real.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from build_assets.engine.builders.base import BuildHandle, BuildRequest, BuildResult
from build_assets.errors import BuildError


@dataclass
class ModelBuild:
    request: BuildRequest
    start: float
    ready: float  # provisioning done: the first command runs
    work: float
    end: float | None = None  # the push is done (None: its base is not scheduled yet)
    stopped: float | None = None

    @property
    def billed(self) -> float:
        over = self.stopped if self.stopped is not None else self.end
        return (over or self.start) - self.start


class CodeBuildModel:
    """A builder whose builds follow the latency model above (nothing runs, nothing is pushed)."""

    name = "codebuild-model"

    def __init__(
        self,
        work: dict[str, float],
        *,
        provisioning: float,
        push: float,
        retry: float,
        poll: float,
        jitter: float = 0.1,
        seed: int = 7,
    ) -> None:
        self.work, self.provisioning, self.push = work, provisioning, push
        self.retry, self.poll_interval, self.jitter = retry, poll, jitter
        self._rng = random.Random(seed)
        self.builds: dict[str, ModelBuild] = {}  # image -> its build
        self._by_uri: dict[str, ModelBuild] = {}

    # what history would tell: the projects' start-up and each image's typical duration
    def start_lead(self, request: BuildRequest) -> float:
        return self.provisioning

    def estimates(self) -> dict[str, float]:
        return {n: self.provisioning + w + self.push for n, w in self.work.items()}

    def _draw(self, value: float) -> float:
        return value * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def _resolve(self, build: ModelBuild) -> float | None:
        """When the build pushes its tag (None: it waits for a base not started yet)."""
        if build.end is None:
            begin = build.ready
            wait = build.request.base_wait
            if wait is not None:
                base = self._by_uri.get(wait)
                pushed = self._resolve(base) if base is not None else None
                if pushed is None or (base is not None and base.stopped is not None):
                    return None
                late = max(0.0, pushed - build.ready)
                begin = build.ready + math.ceil(late / self.retry) * self.retry
            build.end = begin + build.work + self.push
        return build.end

    def existing_digest(self, request: BuildRequest) -> str | None:
        build = self._by_uri.get(request.image_uri)
        end = self._resolve(build) if build is not None else None
        if end is None or build is None or build.stopped is not None or end > time.time():
            return None
        return "sha256:" + hashlib.sha256(request.image_uri.encode()).hexdigest()

    def start(self, request: BuildRequest) -> BuildHandle:
        now = time.time()
        work = self._draw(self.work[request.image])
        build = ModelBuild(request, now, now + self._draw(self.provisioning), work)
        self.builds[request.image] = self._by_uri[request.image_uri] = build
        return BuildHandle(request, f"model-{request.image}", now, {"build": build})

    def poll(
        self, handles: Sequence[BuildHandle], max_wait: float | None = None
    ) -> list[BuildHandle]:
        if not handles:
            return []
        wait = self.poll_interval if max_wait is None else min(self.poll_interval, max_wait)
        time.sleep(max(wait, 0.0))
        now = time.time()
        done = []
        for h in handles:
            end = self._resolve(h.state["build"])
            if end is not None and end <= now:
                done.append(h)
        return done

    def finish(self, handle: BuildHandle) -> BuildResult:
        build: ModelBuild = handle.state["build"]
        req = handle.request
        if build.end is None:
            raise BuildError(req.image, "its base never came", status="FAILED")
        digest = "sha256:" + hashlib.sha256(req.image_uri.encode()).hexdigest()
        return BuildResult.built(
            req,
            digest,
            self.name,
            build_id=handle.build_id,
            duration_s=build.end - build.start,
        )

    def cancel(self, handle: BuildHandle) -> None:
        handle.state["build"].stopped = time.time()

    # -- fire-and-forget: every build started at once, dependents pull-retry their base ------

    def fire_and_forget(self, requests: Sequence[BuildRequest]) -> float:
        """Start every request at once; wait until all have ended, polling; the wall time."""
        t0 = time.time()
        handles = [self.start(r) for r in requests]
        while handles:
            for h in self.poll(handles):
                handles.remove(h)
        return time.time() - t0

    @property
    def billed(self) -> float:
        return sum(b.billed for b in self.builds.values())
