"""Runs the builds of a selection of images from one process, bases first, many at once.

A build is submitted the moment its base is done, or, on a builder with a start-up cost (one
with `start_lead`: CodeBuild's provisioning), early: its lead before its base's expected end
(`engine.early_start`), its script waiting for the base's tag and pinning its digest; when
that base fails, its early-started dependents are stopped and reported `blocked`. Independent
builds run concurrently up to a limit, and outcomes are yielded in topological order as they
finish: an image is yielded only after its base. A failed build blocks its dependents, never its
siblings. An image whose tag is already in the registry is not built again (`cached`).

Across processes, a build holds the lease of its (repository, version) (`engine.lease`): a
scheduler that finds another live holder waits for it, then records the pushed tag as `cached`
("built by run X") instead of building the same version a second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from build_assets.core.model import Manifest
from build_assets.core.versioning import ImageVersion, VersionSet
from build_assets.engine import progress
from build_assets.engine.builders.base import (
    Builder,
    BuildHandle,
    BuildRequest,
    BuildResult,
    make_request,
)
from build_assets.engine.early_start import EarlyStartPlan
from build_assets.engine.lease import (
    DEFAULT_TTL_S,
    Heartbeat,
    Holder,
    LeaseStore,
    SqliteLeaseStore,
)
from build_assets.engine.records import FAILED, SUCCEEDED, BuildRecord, BuildRecords
from build_assets.errors import BuildError

log = logging.getLogger(__name__)

BUILT, CACHED, FAILED_STATUS, BLOCKED = "built", "cached", "failed", "blocked"
LEASE_WAIT_S = 3 * 3600.0  # longest wait for another process's build of the same version
_BACKOFF_S = (0.05, 2.0)  # first and longest pause between looks at a lease held elsewhere


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


def repository_for(
    registry: str, image: str, manifest: Manifest | None = None, env: str = "dev"
) -> str:
    """Repository of an image in a registry prefix ('host[:port][/namespace]'), named by the
    manifest's `naming.repository` / per-image `repository` template when given."""
    name = manifest.repository_name(image, env) if manifest is not None else image
    return f"{registry.rstrip('/')}/{name}"


class BuildScheduler:
    """Drives a `Builder` over a selection of images of one `VersionSet`."""

    def __init__(
        self,
        builder: Builder,
        registry: str,
        *,
        max_concurrent: int = 4,
        records: BuildRecords | None = None,
        run_id: str | None = None,
        on_event: Callable[[str], None] | None = None,
        on_progress: Callable[[progress.Progress], None] | None = None,
        clock: Callable[[], float] = time.time,
        leases: LeaseStore | None = None,
        lease_ttl_s: float = DEFAULT_TTL_S,
        lease_wait_s: float = LEASE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        env: str = "dev",
        early_start: bool = True,
        estimates: Mapping[str, float] | None = None,
    ) -> None:
        """leases: where build leases live (default: next to the build records when `records` is
        given, else none: a scheduler without build records is a test or a benchmark).
        on_event: one line per notable step; on_progress: a structured `Progress` per state
        change of an image (`self.progress` is the tracker: `BuildRun` shares its own).
        early_start: start dependents early on a builder with `start_lead` (see module doc);
        estimates: image -> typical build duration, over the build records' (tests, benchmarks)."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.builder = builder
        self.registry = registry
        self.max_concurrent = max_concurrent
        self.records = records
        self.run_id = run_id
        self.on_event = on_event or (lambda msg: log.info(msg))
        self.clock = clock
        self.progress = progress.ProgressTracker(on_progress, run_id=run_id, clock=clock)
        if leases is None and records is not None:
            leases = SqliteLeaseStore(records.path.parent / "leases.sqlite")
        self.leases = leases
        self.lease_ttl_s = lease_ttl_s
        self.lease_wait_s = lease_wait_s
        self.sleep = sleep
        self.env = env  # for the manifest's repository name templates ({env})
        self._manifest: Manifest | None = None  # of the VersionSet being run
        self.early_start = early_start and callable(getattr(builder, "start_lead", None))
        self.estimates = dict(estimates or {})

    def request_for(
        self, image: ImageVersion, base_uri: str | None, previous_tag: str | None = None
    ) -> BuildRequest:
        repository = repository_for(self.registry, image.name, self._manifest, self.env)
        return make_request(image, repository, base_uri, previous_tag)

    def run(
        self,
        versions: VersionSet,
        selected: Iterable[str],
        known_digests: Mapping[str, str | None] | None = None,
    ) -> Iterator[Outcome]:
        """Build the selected images; yield one Outcome per image, bases before dependents.

        `known_digests`: image -> digest of its current tag (None: absent) just looked up in
        the registry by the caller, so it is not asked again; a lease still guards a build
        another process may have started since."""
        self._manifest = versions.manifest
        order = [n for n in versions.manifest.order() if n in set(selected)]
        chosen = set(order)
        previous = self.records.latest_success(self.registry) if self.records else {}
        outcomes: dict[str, Outcome] = {}
        pinned: dict[str, str] = {}  # image -> repository@digest, for dependents' BASE_IMAGE
        in_flight: list[BuildHandle] = []
        waiting = list(order)
        emitted: set[str] = set()
        known = dict(known_digests or {})
        looked_up = {n: known[n] for n in order if n in known}  # image -> digest in the registry
        me = Holder.current(self.run_id)
        heartbeat = Heartbeat(self.leases, me, self.lease_ttl_s) if self.leases else None
        held: dict[str, str] = {}  # image -> key of the lease we hold while building it
        parked: dict[str, tuple[BuildRequest, Holder, float]] = {}  # held elsewhere: waiting
        backoff = _BACKOFF_S[0]
        track = self.progress.set
        if self.records is not None:
            found = progress.load_estimates(self.records.path, self.registry, order)
            self.progress.estimates.update(found)
        self.progress.estimates.update(self.estimates)
        running: dict[str, BuildHandle] = {}  # image -> its build in flight
        early: dict[str, str] = {}  # image started before its base ended -> that base
        wake_at: list[float] = []  # the next planned early start (poll no longer than that)

        def lead_of(name: str) -> float | None:
            lead = getattr(self.builder, "start_lead", None)
            req = self.request_for(versions[name], None)
            return lead(req) if lead is not None else None

        def base_in_run(name: str) -> str | None:
            base = versions[name].base
            return base if base in chosen and base not in outcomes else None

        plan = EarlyStartPlan(self.progress.estimates, lead_of, base_in_run)
        for name in order:
            base = versions[name].base
            if base in chosen:
                track(name, progress.WAITING, base)
            else:
                track(name, progress.QUEUED)

        def release(name: str) -> None:
            key = held.pop(name, None)
            if key is not None and self.leases is not None and heartbeat is not None:
                heartbeat.discard(key)
                try:
                    self.leases.release(key, me)
                except Exception as exc:  # noqa: BLE001 - it expires; liveness frees it too
                    log.warning("could not release the lease of %s: %s", name, exc)

        def launch(name: str, req: BuildRequest, waited_for: Holder | None = None) -> None:
            """Start a build under its lease, or park it while another process builds it."""
            image = versions[name]
            if self.leases is not None and heartbeat is not None:
                key = lease_key(req)
                grant = self.leases.acquire(key, me, self.lease_ttl_s)
                if not grant.acquired:
                    since = parked[name][2] if name in parked else self.clock()
                    if name not in parked:
                        track(name, progress.WAITING, grant.holder.describe())
                        self.on_event(
                            f"{name}: {req.image_uri} is being built by"
                            f" {grant.holder.describe()}; waiting for it"
                        )
                    parked[name] = (req, grant.holder, since)
                    return
                parked.pop(name, None)
                held[name] = key
                heartbeat.add(key)
                other = waited_for or grant.previous
                if other is not None and other.token != me.token:
                    digest = self.builder.existing_digest(req)
                    if digest is not None:
                        release(name)
                        self.on_event(f"{name}: {req.image_uri} built by {other.describe()}")
                        result = BuildResult.already_pushed(req, digest, self.builder.name)
                        result = replace(result, extra={"built_by": other.describe()})
                        reason = f"built by {other.describe()}"
                        settle(Outcome(name, CACHED, image, result=result, reason=reason))
                        return
            track(
                name, progress.UPLOADING if self.builder.name == "codebuild" else progress.PREPARING
            )
            handle = self.builder.start(req)
            self.on_event(f"{name}: building {req.image_uri} ({handle.build_id})")
            in_flight.append(handle)
            running[name] = handle
            plan.started[name] = handle.started_at
            if req.base_wait is not None:
                early[name] = versions[name].base or ""
            observe(handle)

        def observe(handle: BuildHandle) -> None:
            """The phase of a build in flight, when its builder tells (else 'building')."""
            state, detail = progress.handle_phase(handle) or (progress.BUILDING, "")
            name, log_url = handle.request.image, progress.handle_log_url(handle)
            stamped = [m for m in handle.state.pop("progress_markers", []) if m[1] is not None]
            if stamped:  # every phase passed since the last look, at its time
                self.progress.replay(name, stamped, log_url=log_url)
            else:
                track(name, state, detail, log_url=log_url)

        def settle(outcome: Outcome) -> None:
            outcomes[outcome.name] = outcome
            running.pop(outcome.name, None)
            plan.started.pop(outcome.name, None)
            early.pop(outcome.name, None)
            if outcome.result is not None:
                pinned[outcome.name] = outcome.result.pinned_uri
            self._record(outcome, versions)
            r, err = outcome.result, outcome.error
            if outcome.status in (BUILT, CACHED):
                # the local builder's time-stamped markers (a list); CodeBuild's "phases" are
                # its phase durations (a dict), nothing to replay
                markers = r.extra.get("phases") if r is not None else None
                if markers and isinstance(markers, list):
                    self.progress.replay(outcome.name, markers)
                state = progress.DONE if outcome.status == BUILT else progress.CACHED
                track(outcome.name, state, outcome.reason or "", log_url=r.log_url if r else None)
            elif outcome.status == BLOCKED:
                track(outcome.name, progress.BLOCKED, outcome.reason or "")
            elif err is not None:
                where = f" in {err.phase}" if err.phase else ""
                state = progress.CANCELLED if err.status == "STOPPED" else progress.FAILED
                track(outcome.name, state, f"build {err.status}{where}", log_url=err.log_url)
            if not outcome.ok:
                stop_early(outcome.name)

        def stop_early(base: str) -> None:
            """Stop the builds started early on `base`, which will never be pushed: blocked."""
            for name, (req, _, _) in list(parked.items()):  # waiting on a lease, not started
                if req.base_wait is not None and versions[name].base == base:
                    del parked[name]
                    settle(Outcome(name, BLOCKED, versions[name], reason=f"base {base} failed"))
            for name in [n for n, b in early.items() if b == base]:
                handle = running.get(name)
                if handle is not None and handle in in_flight:
                    in_flight.remove(handle)
                    self.on_event(f"{name}: base {base} failed; stopping {handle.build_id}")
                    self._cancel(handle)
                release(name)
                reason = f"base {base} failed"
                settle(Outcome(name, BLOCKED, versions[name], reason=reason))

        def start_early(name: str, base: str) -> bool:
            """Start `name` before `base` ends when its planned time has come; True if started."""
            if len(in_flight) >= self.max_concurrent or base not in running:
                return False
            at = plan.start_time(name, base)
            if at is None:
                return False
            if self.clock() < at:
                wake_at.append(at)
                return False
            prev = previous.get(name)
            req = self.request_for(versions[name], None, prev.tag if prev else None)
            if name not in looked_up:
                looked_up[name] = self.builder.existing_digest(req)
            if looked_up[name] is not None:
                return False  # already built: settled once its base is
            req = replace(req, base_wait=running[base].request.image_uri)
            self.on_event(f"{name}: starting early, {at - plan.started[base]:.0f}s into {base}")
            launch(name, req)
            return name in running or name in parked or name in outcomes

        def fail(name: str, exc: Exception, phase: str) -> None:
            """An unexpected error while handling one image fails that image only."""
            error = BuildError(name, one_line(exc), status="ERROR", phase=phase)
            self.on_event(f"{name}: {phase} failed: {one_line(exc)}")
            settle(Outcome(name, FAILED_STATUS, versions[name], error=error))

        def external_base(name: str) -> tuple[str | None, str | None]:
            """(pinned uri, problem) of an unselected base, looked up in the registry."""
            base = versions[name].base
            assert base is not None
            if base not in pinned:
                req = self.request_for(versions[base], None)
                digest = known.get(base) or self.builder.existing_digest(req)
                if digest is None:
                    return None, (
                        f"base {base} ({req.image_uri}) is not in the registry; select it too"
                    )
                pinned[base] = f"{req.repository}@{digest}"
            return pinned[base], None

        try:
            while waiting or in_flight or parked:
                # 0. builds another process held: theirs may be pushed now, or ours to do
                for name, (req, other, since) in list(parked.items()):
                    if len(in_flight) >= self.max_concurrent:
                        break
                    try:
                        launch(name, req, waited_for=other)
                    except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
                        parked.pop(name, None)
                        release(name)
                        fail(name, exc, "START")
                        continue
                    if name in parked and self.clock() - since > self.lease_wait_s:
                        del parked[name]
                        error = BuildError(
                            name,
                            f"waited {self.clock() - since:.0f}s for {other.describe()} to"
                            f" build {req.image_uri}; stop it or wait for it, then re-run",
                            status="TIMED_OUT",
                        )
                        settle(Outcome(name, FAILED_STATUS, versions[name], error=error))

                # 1. submit everything whose base is ready, up to the concurrency limit
                wake_at.clear()
                for name in list(waiting):
                    image = versions[name]
                    base = image.base
                    if base in chosen and base not in outcomes:
                        if self.early_start and base in running:
                            try:
                                if start_early(name, base):
                                    waiting.remove(name)
                            except Exception as exc:  # noqa: BLE001 - one image's problem
                                waiting.remove(name)
                                release(name)
                                fail(name, exc, "START")
                        continue  # base still building
                    waiting.remove(name)
                    if base in chosen and not outcomes[base].ok:
                        settle(Outcome(name, BLOCKED, image, reason=f"base {base} failed"))
                        continue
                    base_uri, problem = (None, None)
                    try:
                        if base:
                            base_uri, problem = (
                                (pinned[base], None) if base in pinned else external_base(name)
                            )
                        prev = previous.get(name)
                        req = self.request_for(image, base_uri, prev.tag if prev else None)
                        if not problem and name not in looked_up:  # once, even when deferred
                            looked_up[name] = self.builder.existing_digest(req)
                    except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
                        fail(name, exc, "PREPARE")
                        continue
                    if problem:
                        settle(Outcome(name, BLOCKED, image, reason=problem))
                        continue
                    digest = looked_up[name]
                    if digest is not None:
                        self.on_event(f"{name}: {req.image_uri} already built, not rebuilding")
                        result = BuildResult.already_pushed(req, digest, self.builder.name)
                        settle(Outcome(name, CACHED, image, result=result))
                        continue
                    if len(in_flight) >= self.max_concurrent:
                        waiting.insert(0, name)
                        for queued in waiting:  # base ready, no build slot: queued
                            if versions[queued].base not in chosen or (
                                versions[queued].base in outcomes
                            ):
                                track(queued, progress.QUEUED)
                        break
                    try:
                        launch(name, req)
                    except Exception as exc:  # noqa: BLE001 - one image's problem, not the run's
                        release(name)
                        fail(name, exc, "START")

                # 2. hand out whatever can be yielded in topological order
                yield from self._emit(order, outcomes, emitted, versions)

                # 3. wait for builds in flight
                if in_flight:
                    try:
                        finished = self._poll(in_flight, min(wake_at) if wake_at else None)
                    except Exception as exc:  # noqa: BLE001 - the builds in flight fail, not the run
                        for handle in list(in_flight):
                            in_flight.remove(handle)
                            self._cancel(handle)
                            release(handle.request.image)
                            fail(handle.request.image, exc, "POLL")
                        continue
                    for handle in finished:
                        if handle not in in_flight:
                            continue  # stopped meanwhile: its base failed
                        in_flight.remove(handle)
                        settle(self._finish(handle, versions))
                        release(handle.request.image)
                    for handle in in_flight:
                        observe(handle)
                elif parked:  # only waiting on other processes: look again after a pause
                    self.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_S[1])
            yield from self._emit(order, outcomes, emitted, versions)
        finally:
            for handle in in_flight:
                self.on_event(f"{handle.request.image}: cancelling build {handle.build_id}")
                track(handle.request.image, progress.CANCELLED, handle.build_id)
                try:
                    self.builder.cancel(handle)
                except Exception as exc:  # noqa: BLE001 - cancelling is best effort
                    log.warning("could not cancel %s: %s", handle.build_id, exc)
            for name in list(held):
                release(name)
            if heartbeat is not None:
                heartbeat.stop()

    def _poll(self, handles: list[BuildHandle], wake_at: float | None) -> list[BuildHandle]:
        """The builder's poll, waiting no longer than until the next planned early start."""
        if wake_at is None:
            return self.builder.poll(handles)
        kwargs: dict[str, Any] = {"max_wait": max(wake_at - self.clock(), 0.0)}
        return self.builder.poll(handles, **kwargs)  # type: ignore[call-arg]

    def _cancel(self, handle: BuildHandle) -> None:
        try:
            self.builder.cancel(handle)
        except Exception as exc:  # noqa: BLE001 - cancelling is best effort
            log.warning("could not cancel %s: %s", handle.build_id, exc)

    def _finish(self, handle: BuildHandle, versions: VersionSet) -> Outcome:
        image = versions[handle.request.image]
        try:
            result = self.builder.finish(handle)
        except Exception as exc:  # noqa: BLE001 - a failed build fails its image only
            if not isinstance(exc, BuildError):
                exc = BuildError(image.name, one_line(exc), status="ERROR", phase="FINISH")
            try:
                digest = self.builder.existing_digest(handle.request)
            except Exception:  # noqa: BLE001 - the build's own error is the one to report
                digest = None
            if digest is not None:
                # a concurrent build of the same content pushed first (tags are immutable)
                self.on_event(f"{image.name}: build {exc.status}, but the tag is in the registry")
                result = BuildResult.already_pushed(handle.request, digest, self.builder.name)
                return Outcome(image.name, CACHED, image, result=result)
            self.on_event(f"{image.name}: build failed ({exc.status}): {exc}")
            return Outcome(image.name, FAILED_STATUS, image, error=exc)
        self.on_event(f"{image.name}: built {result.image_uri} {result.digest}")
        return Outcome(image.name, BUILT, image, result=result)

    @staticmethod
    def _emit(
        order: list[str], outcomes: dict[str, Outcome], emitted: set[str], versions: VersionSet
    ) -> Iterator[Outcome]:
        advanced = True
        while advanced:
            advanced = False
            for name in order:
                if name in emitted or name not in outcomes:
                    continue
                base = versions[name].base
                if base in outcomes and base not in emitted:
                    continue
                emitted.add(name)
                advanced = True
                yield outcomes[name]

    def _record(self, outcome: Outcome, versions: VersionSet) -> None:
        if self.records is None or outcome.status == BLOCKED:
            return
        r = outcome.result
        err = outcome.error
        self.records.add(
            BuildRecord.for_image(
                outcome.image,
                self.registry,
                SUCCEEDED if outcome.ok else FAILED,
                cached=outcome.status == CACHED,
                digest=r.digest if r else None,
                builder=self.builder.name,
                build_id=(r.build_id if r else err.build_id if err else None),
                log_url=(r.log_url if r else err.log_url if err else None),
                duration_s=(r.duration_s if r else None),
                git_commit=versions.commit,
                run_id=self.run_id,
                error=str(err) if err else None,
                started_at=self.clock(),
            )
        )
