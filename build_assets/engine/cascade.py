"""One run of a `BuildScheduler` over a selection: the state of its builds, a method per step.

Each turn of `Cascade.run`: look again at the builds parked on another process's lease
(`_unpark`), submit what is ready (`_submit_ready`: a base done, or early on a builder with a
start-up cost), yield the outcomes that can go out in topological order (`_emit`), then wait for
the builds in flight (`_wait`). Every finished, cached, failed or blocked image goes through
`_settle`, which records it, tracks its progress and blocks what was started early on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from build_assets.core.versioning import VersionSet
from build_assets.engine import progress
from build_assets.engine.builders.base import Builder, BuildHandle, BuildRequest, BuildResult
from build_assets.engine.early_start import EarlyStartPlan
from build_assets.engine.lease import Heartbeat, Holder, LeaseStore
from build_assets.engine.outcome import (
    BLOCKED,
    BUILT,
    CACHED,
    FAILED_STATUS,
    Outcome,
    lease_key,
    one_line,
)
from build_assets.engine.records import FAILED, SUCCEEDED, BuildRecord, BuildRecords
from build_assets.errors import BuildError

log = logging.getLogger(__name__)

BACKOFF_S = (0.05, 2.0)  # first and longest pause between looks at a lease held elsewhere


class SchedulerConfig(Protocol):
    """What a cascade reads of its `BuildScheduler`."""

    builder: Builder
    registry: str
    max_concurrent: int
    records: BuildRecords | None
    run_id: str | None
    on_event: Callable[[str], None]
    clock: Callable[[], float]
    progress: progress.ProgressTracker
    leases: LeaseStore | None
    lease_ttl_s: float
    lease_wait_s: float
    sleep: Callable[[float], None]
    early_start: bool
    estimates: dict[str, float]

    def request_for(
        self, image: Any, base_uri: str | None, previous_tag: str | None = None
    ) -> BuildRequest: ...


class Cascade:
    """The builds of one selection of one `VersionSet`, from submission to the last outcome."""

    def __init__(
        self,
        config: SchedulerConfig,
        versions: VersionSet,
        selected: Iterable[str],
        known_digests: Mapping[str, str | None] | None = None,
    ) -> None:
        self.s = config
        self.versions = versions
        wanted = set(selected)
        self.order = [n for n in versions.manifest.order() if n in wanted]
        self.chosen = set(self.order)
        self.previous = config.records.latest_success(config.registry) if config.records else {}
        self.outcomes: dict[str, Outcome] = {}
        self.pinned: dict[str, str] = {}  # image -> repository@digest, for dependents' BASE_IMAGE
        self.in_flight: list[BuildHandle] = []
        self.waiting = list(self.order)
        self.emitted: set[str] = set()
        self.known = dict(known_digests or {})
        # image -> digest in the registry (None: absent), looked up once
        self.looked_up = {n: self.known[n] for n in self.order if n in self.known}
        self.me = Holder.current(config.run_id)
        leases = config.leases
        self.heartbeat = Heartbeat(leases, self.me, config.lease_ttl_s) if leases else None
        self.held: dict[str, str] = {}  # image -> key of the lease we hold while building it
        # held elsewhere, waiting: image -> (request, holder, since)
        self.parked: dict[str, tuple[BuildRequest, Holder, float]] = {}
        self.backoff = BACKOFF_S[0]
        self.running: dict[str, BuildHandle] = {}  # image -> its build in flight
        self.early: dict[str, str] = {}  # image started before its base ended -> that base
        self.wake_at: list[float] = []  # the next planned early starts (poll no longer)
        self.track = config.progress.set
        if config.records is not None:
            found = progress.load_estimates(config.records.path, config.registry, self.order)
            config.progress.estimates.update(found)
        config.progress.estimates.update(config.estimates)
        self.plan = EarlyStartPlan(config.progress.estimates, self._lead_of, self._base_in_run)
        for name in self.order:
            base = versions[name].base
            if base in self.chosen:
                self.track(name, progress.WAITING, base)
            else:
                self.track(name, progress.QUEUED)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> Iterator[Outcome]:
        """Yield one Outcome per selected image, bases before dependents; on exit (done,
        closed or failed), cancel what is still in flight and release every lease held."""
        try:
            while self.waiting or self.in_flight or self.parked:
                self._unpark()
                self._submit_ready()
                yield from self._emit()
                self._wait()
            yield from self._emit()
        finally:
            self._shutdown()

    def _unpark(self) -> None:
        """Builds another process held: theirs may be pushed now, or ours to do."""
        for name, (req, other, since) in list(self.parked.items()):
            if len(self.in_flight) >= self.s.max_concurrent:
                break
            try:
                self._start(name, req, waited_for=other)
            except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
                self.parked.pop(name, None)
                self._release(name)
                self._fail(name, exc, "START")
                continue
            if name in self.parked and self.s.clock() - since > self.s.lease_wait_s:
                del self.parked[name]
                error = BuildError(
                    name,
                    f"waited {self.s.clock() - since:.0f}s for {other.describe()} to"
                    f" build {req.image_uri}; stop it or wait for it, then re-run",
                    status="TIMED_OUT",
                )
                self._settle(Outcome(name, FAILED_STATUS, self.versions[name], error=error))

    def _submit_ready(self) -> None:
        """Submit everything whose base is ready (or whose early start has come), up to the
        concurrency limit."""
        self.wake_at.clear()
        for name in list(self.waiting):
            base = self.versions[name].base
            if base in self.chosen and base not in self.outcomes:
                self._maybe_start_early(name, base)
                continue  # base still building
            self.waiting.remove(name)
            if not self._submit(name):
                break

    def _maybe_start_early(self, name: str, base: str) -> None:
        if not (self.s.early_start and base in self.running):
            return
        try:
            if self._start_early(name, base):
                self.waiting.remove(name)
        except Exception as exc:  # noqa: BLE001 - one image's problem
            self.waiting.remove(name)
            self._release(name)
            self._fail(name, exc, "START")

    def _submit(self, name: str) -> bool:
        """Settle or start `name`, whose base is done or not selected; False when no build
        slot is free (it goes back to the front of the queue)."""
        image = self.versions[name]
        base = image.base
        if base in self.chosen and not self.outcomes[base].ok:
            self._settle(Outcome(name, BLOCKED, image, reason=f"base {base} failed"))
            return True
        base_uri, problem = (None, None)
        try:
            if base:
                base_uri, problem = (
                    (self.pinned[base], None) if base in self.pinned else self._external_base(name)
                )
            prev = self.previous.get(name)
            req = self.s.request_for(image, base_uri, prev.tag if prev else None)
            if not problem and name not in self.looked_up:  # once, even when deferred
                self.looked_up[name] = self.s.builder.existing_digest(req)
        except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
            self._fail(name, exc, "PREPARE")
            return True
        if problem:
            self._settle(Outcome(name, BLOCKED, image, reason=problem))
            return True
        digest = self.looked_up[name]
        if digest is not None:
            self.s.on_event(f"{name}: {req.image_uri} already built, not rebuilding")
            result = BuildResult.already_pushed(req, digest, self.s.builder.name)
            self._settle(Outcome(name, CACHED, image, result=result))
            return True
        if len(self.in_flight) >= self.s.max_concurrent:
            self.waiting.insert(0, name)
            for queued in self.waiting:  # base ready, no build slot: queued
                queued_base = self.versions[queued].base
                if queued_base not in self.chosen or queued_base in self.outcomes:
                    self.track(queued, progress.QUEUED)
            return False
        try:
            self._start(name, req)
        except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
            self._release(name)
            self._fail(name, exc, "START")
        return True

    def _emit(self) -> Iterator[Outcome]:
        """Hand out whatever can be yielded in topological order (an image after its base)."""
        advanced = True
        while advanced:
            advanced = False
            for name in self.order:
                if name in self.emitted or name not in self.outcomes:
                    continue
                base = self.versions[name].base
                if base in self.outcomes and base not in self.emitted:
                    continue
                self.emitted.add(name)
                advanced = True
                yield self.outcomes[name]

    def _wait(self) -> None:
        """Wait for the builds in flight (no longer than the next planned early start) and
        settle the finished ones; with none in flight, pause before looking at leases again."""
        if not self.in_flight:
            if self.parked:  # only waiting on other processes: look again after a pause
                self.s.sleep(self.backoff)
                self.backoff = min(self.backoff * 2, BACKOFF_S[1])
            return
        try:
            finished = self._poll(min(self.wake_at) if self.wake_at else None)
        except Exception as exc:  # noqa: BLE001 - the builds in flight fail, not the run
            for handle in list(self.in_flight):
                self.in_flight.remove(handle)
                self._cancel(handle)
                self._release(handle.request.image)
                self._fail(handle.request.image, exc, "POLL")
            return
        for handle in finished:
            if handle not in self.in_flight:
                continue  # stopped meanwhile: its base failed
            self.in_flight.remove(handle)
            self._settle(self._finish(handle))
            self._release(handle.request.image)
        for handle in self.in_flight:
            self._observe(handle)

    def _shutdown(self) -> None:
        for handle in self.in_flight:
            self.s.on_event(f"{handle.request.image}: cancelling build {handle.build_id}")
            self.track(handle.request.image, progress.CANCELLED, handle.build_id)
            self._cancel(handle)
        for name in list(self.held):
            self._release(name)
        if self.heartbeat is not None:
            self.heartbeat.stop()

    # -- starting builds ----------------------------------------------------------------------

    def _start(self, name: str, req: BuildRequest, waited_for: Holder | None = None) -> None:
        """Start a build under its lease, or park it while another process builds it."""
        leased = self.s.leases is not None and self.heartbeat is not None
        if leased and not self._take_lease(name, req, waited_for):
            return
        builder = self.s.builder
        self.track(name, progress.UPLOADING if builder.name == "codebuild" else progress.PREPARING)
        handle = builder.start(req)
        self.s.on_event(f"{name}: building {req.image_uri} ({handle.build_id})")
        self.in_flight.append(handle)
        self.running[name] = handle
        self.plan.started[name] = handle.started_at
        if req.base_wait is not None:
            self.early[name] = self.versions[name].base or ""
        self._observe(handle)

    def _take_lease(self, name: str, req: BuildRequest, waited_for: Holder | None) -> bool:
        """Hold the lease of `req`; False when parked (held elsewhere) or settled (another
        process pushed the tag meanwhile: cached)."""
        assert self.s.leases is not None and self.heartbeat is not None
        key = lease_key(req)
        grant = self.s.leases.acquire(key, self.me, self.s.lease_ttl_s)
        if not grant.acquired:
            since = self.parked[name][2] if name in self.parked else self.s.clock()
            if name not in self.parked:
                self.track(name, progress.WAITING, grant.holder.describe())
                self.s.on_event(
                    f"{name}: {req.image_uri} is being built by"
                    f" {grant.holder.describe()}; waiting for it"
                )
            self.parked[name] = (req, grant.holder, since)
            return False
        self.parked.pop(name, None)
        self.held[name] = key
        self.heartbeat.add(key)
        other = waited_for or grant.previous
        if other is not None and other.token != self.me.token:
            digest = self.s.builder.existing_digest(req)
            if digest is not None:
                self._release(name)
                self.s.on_event(f"{name}: {req.image_uri} built by {other.describe()}")
                result = BuildResult.already_pushed(req, digest, self.s.builder.name)
                result = replace(result, extra={"built_by": other.describe()})
                reason = f"built by {other.describe()}"
                image = self.versions[name]
                self._settle(Outcome(name, CACHED, image, result=result, reason=reason))
                return False
        return True

    def _start_early(self, name: str, base: str) -> bool:
        """Start `name` before `base` ends when its planned time has come; True if started."""
        if len(self.in_flight) >= self.s.max_concurrent or base not in self.running:
            return False
        at = self.plan.start_time(name, base)
        if at is None:
            return False
        if self.s.clock() < at:
            self.wake_at.append(at)
            return False
        prev = self.previous.get(name)
        req = self.s.request_for(self.versions[name], None, prev.tag if prev else None)
        if name not in self.looked_up:
            self.looked_up[name] = self.s.builder.existing_digest(req)
        if self.looked_up[name] is not None:
            return False  # already built: settled once its base is
        req = replace(req, base_wait=self.running[base].request.image_uri)
        into = at - self.plan.started[base]
        self.s.on_event(f"{name}: starting early, {into:.0f}s into {base}")
        self._start(name, req)
        return name in self.running or name in self.parked or name in self.outcomes

    def _lead_of(self, name: str) -> float | None:
        lead = getattr(self.s.builder, "start_lead", None)
        req = self.s.request_for(self.versions[name], None)
        return lead(req) if lead is not None else None

    def _base_in_run(self, name: str) -> str | None:
        base = self.versions[name].base
        return base if base in self.chosen and base not in self.outcomes else None

    def _external_base(self, name: str) -> tuple[str | None, str | None]:
        """(pinned uri, problem) of an unselected base, looked up in the registry."""
        base = self.versions[name].base
        assert base is not None
        if base not in self.pinned:
            req = self.s.request_for(self.versions[base], None)
            digest = self.known.get(base) or self.s.builder.existing_digest(req)
            if digest is None:
                return None, f"base {base} ({req.image_uri}) is not in the registry; select it too"
            self.pinned[base] = f"{req.repository}@{digest}"
        return self.pinned[base], None

    # -- builds in flight -----------------------------------------------------------------------

    def _poll(self, wake_at: float | None) -> list[BuildHandle]:
        """The builder's poll, waiting no longer than until the next planned early start."""
        if wake_at is None:
            return self.s.builder.poll(self.in_flight)
        kwargs: dict[str, Any] = {"max_wait": max(wake_at - self.s.clock(), 0.0)}
        return self.s.builder.poll(self.in_flight, **kwargs)  # type: ignore[call-arg]

    def _observe(self, handle: BuildHandle) -> None:
        """The phase of a build in flight, when its builder tells (else 'building')."""
        state, detail = progress.handle_phase(handle) or (progress.BUILDING, "")
        name, log_url = handle.request.image, progress.handle_log_url(handle)
        stamped = [m for m in handle.state.pop("progress_markers", []) if m[1] is not None]
        if stamped:  # every phase passed since the last look, at its time
            self.s.progress.replay(name, stamped, log_url=log_url)
        else:
            self.track(name, state, detail, log_url=log_url)

    def _finish(self, handle: BuildHandle) -> Outcome:
        image = self.versions[handle.request.image]
        builder, on_event = self.s.builder, self.s.on_event
        try:
            result = builder.finish(handle)
        except Exception as exc:  # noqa: BLE001 - a failed build fails its image only
            if not isinstance(exc, BuildError):
                exc = BuildError(image.name, one_line(exc), status="ERROR", phase="FINISH")
            try:
                digest = builder.existing_digest(handle.request)
            except Exception:  # noqa: BLE001 - the build's own error is the one to report
                digest = None
            if digest is not None:
                # a concurrent build of the same content pushed first (tags are immutable)
                on_event(f"{image.name}: build {exc.status}, but the tag is in the registry")
                result = BuildResult.already_pushed(handle.request, digest, builder.name)
                return Outcome(image.name, CACHED, image, result=result)
            on_event(f"{image.name}: build failed ({exc.status}): {exc}")
            return Outcome(image.name, FAILED_STATUS, image, error=exc)
        on_event(f"{image.name}: built {result.image_uri} {result.digest}")
        return Outcome(image.name, BUILT, image, result=result)

    def _cancel(self, handle: BuildHandle) -> None:
        try:
            self.s.builder.cancel(handle)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort
            log.warning("could not cancel %s: %s", handle.build_id, exc)

    def _release(self, name: str) -> None:
        key = self.held.pop(name, None)
        if key is not None and self.s.leases is not None and self.heartbeat is not None:
            self.heartbeat.discard(key)
            try:
                self.s.leases.release(key, self.me)
            except Exception as exc:  # noqa: BLE001 - it expires; liveness frees it too
                log.warning("could not release the lease of %s: %s", name, exc)

    # -- outcomes -------------------------------------------------------------------------------

    def _settle(self, outcome: Outcome) -> None:
        """Record one image's outcome and show it; a failure blocks what started early on it."""
        name = outcome.name
        self.outcomes[name] = outcome
        self.running.pop(name, None)
        self.plan.started.pop(name, None)
        self.early.pop(name, None)
        if outcome.result is not None:
            self.pinned[name] = outcome.result.pinned_uri
        self._record(outcome)
        r, err = outcome.result, outcome.error
        if outcome.status in (BUILT, CACHED):
            # the local builder's time-stamped markers (a list); CodeBuild's "phases" are
            # its phase durations (a dict), nothing to replay
            markers = r.extra.get("phases") if r is not None else None
            if markers and isinstance(markers, list):
                self.s.progress.replay(name, markers)
            state = progress.DONE if outcome.status == BUILT else progress.CACHED
            self.track(name, state, outcome.reason or "", log_url=r.log_url if r else None)
        elif outcome.status == BLOCKED:
            self.track(name, progress.BLOCKED, outcome.reason or "")
        elif err is not None:
            where = f" in {err.phase}" if err.phase else ""
            state = progress.CANCELLED if err.status == "STOPPED" else progress.FAILED
            self.track(name, state, f"build {err.status}{where}", log_url=err.log_url)
        if not outcome.ok:
            self._stop_early(name)

    def _stop_early(self, base: str) -> None:
        """Stop the builds started early on `base`, which will never be pushed: blocked."""
        reason = f"base {base} failed"
        for name, (req, _, _) in list(self.parked.items()):  # waiting on a lease, not started
            if req.base_wait is not None and self.versions[name].base == base:
                del self.parked[name]
                self._settle(Outcome(name, BLOCKED, self.versions[name], reason=reason))
        for name in [n for n, b in self.early.items() if b == base]:
            handle = self.running.get(name)
            if handle is not None and handle in self.in_flight:
                self.in_flight.remove(handle)
                self.s.on_event(f"{name}: base {base} failed; stopping {handle.build_id}")
                self._cancel(handle)
            self._release(name)
            self._settle(Outcome(name, BLOCKED, self.versions[name], reason=reason))

    def _fail(self, name: str, exc: Exception, phase: str) -> None:
        """An unexpected error while handling one image fails that image only."""
        error = BuildError(name, one_line(exc), status="ERROR", phase=phase)
        self.s.on_event(f"{name}: {phase} failed: {one_line(exc)}")
        self._settle(Outcome(name, FAILED_STATUS, self.versions[name], error=error))

    def _record(self, outcome: Outcome) -> None:
        records = self.s.records
        if records is None or outcome.status == BLOCKED:
            return
        r, err = outcome.result, outcome.error
        records.add(
            BuildRecord.for_image(
                outcome.image,
                self.s.registry,
                SUCCEEDED if outcome.ok else FAILED,
                cached=outcome.status == CACHED,
                digest=r.digest if r else None,
                builder=self.s.builder.name,
                build_id=(r.build_id if r else err.build_id if err else None),
                log_url=(r.log_url if r else err.log_url if err else None),
                duration_s=(r.duration_s if r else None),
                git_commit=self.versions.commit,
                run_id=self.s.run_id,
                error=str(err) if err else None,
                started_at=self.s.clock(),
            )
        )
