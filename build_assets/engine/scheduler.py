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

from build_assets.core.model import Manifest
from build_assets.core.versioning import ImageVersion, VersionSet
from build_assets.engine import progress
from build_assets.engine.builders.base import Builder, BuildRequest, make_request
from build_assets.engine.cascade import Cascade
from build_assets.engine.lease import DEFAULT_TTL_S, LeaseStore, SqliteLeaseStore
from build_assets.engine.outcome import (
    BLOCKED,
    BUILT,
    CACHED,
    FAILED_STATUS,
    Outcome,
    lease_key,
    one_line,
)
from build_assets.engine.records import BuildRecords

__all__ = [
    "BLOCKED",
    "BUILT",
    "CACHED",
    "FAILED_STATUS",
    "LEASE_WAIT_S",
    "BuildScheduler",
    "Outcome",
    "lease_key",
    "one_line",
    "repository_for",
]

log = logging.getLogger(__name__)

LEASE_WAIT_S = 3 * 3600.0  # longest wait for another process's build of the same version


def repository_for(
    registry: str, image: str, manifest: Manifest | None = None, env: str = "dev"
) -> str:
    """Repository of an image in a registry prefix ('host[:port][/namespace]'), named by the
    manifest's `naming.repository` / per-image `repository` template when given."""
    return (manifest or Manifest(images={})).repository_uri(registry, image, env)


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
        """Build the selected images; yield one Outcome per image, bases before dependents
        (the steps are `engine.cascade.Cascade`'s).

        `known_digests`: image -> digest of its current tag (None: absent) just looked up in
        the registry by the caller, so it is not asked again; a lease still guards a build
        another process may have started since."""
        self._manifest = versions.manifest
        yield from Cascade(self, versions, selected, known_digests).run()
