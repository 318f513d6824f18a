"""Early start: when to submit a dependent's build so its provisioning overlaps its base's build.

Every version, and so every tag, is known before anything builds. A builder with a start-up
cost (CodeBuild's QUEUED + PROVISIONING + DOWNLOAD_SOURCE, its *lead*) can therefore be started
`lead` seconds before its base is expected to be pushed; its build script's first step waits for
the base's tag (`BASE_WAIT_REF` in `build_image.sh`) and pins the digest it resolves. The
expected end of a base is the ETA the live table shows: its start plus the median duration of
its previous builds, or, when the base itself waits on an early-started base, that base's end
plus its own work. A wrong estimate only moves the start: too early costs billed waiting, too
late costs the overlap, never a wrong build.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# CodeBuild phases before the build script's first command: what starting early overlaps
LEAD_PHASES = ("SUBMITTED", "QUEUED", "PROVISIONING", "DOWNLOAD_SOURCE", "INSTALL", "PRE_BUILD")
LEAD_SAMPLES = 5  # recent successful builds a lead is the median of
# start this fraction of the lead earlier still: a start-up that runs long then rarely delays
# the dependent, at the price of a few billed seconds of waiting when it does not
EARLY_MARGIN = 0.1


def lead_of_build(build: Mapping[str, Any]) -> float | None:
    """Seconds one CodeBuild build spent before its BUILD phase (None: no timings)."""
    durations = [
        p.get("durationInSeconds")
        for p in build.get("phases", []) or []
        if p.get("phaseType") in LEAD_PHASES
    ]
    known = [float(d) for d in durations if d is not None]
    return sum(known) if known else None


def lead_from_builds(builds: Iterable[Mapping[str, Any]]) -> float | None:
    """Median lead of the newest `LEAD_SAMPLES` successful builds (`batch_get_builds` order)."""
    leads = []
    for build in builds:
        if build.get("buildStatus") != "SUCCEEDED":
            continue
        lead = lead_of_build(build)
        if lead is not None:
            leads.append(lead)
        if len(leads) == LEAD_SAMPLES:
            break
    return statistics.median(leads) if leads else None


@dataclass
class EarlyStartPlan:
    """Expected ends of builds in flight and start times of their dependents.

    estimates: image -> typical total duration of its build (lead included);
    lead_of: image -> its lead (None: unknown, then the median of the leads known, else 0);
    base_of: image -> its base among the selected images (None: none or already built);
    margin: start this fraction of the lead earlier than the lead alone says."""

    estimates: Mapping[str, float]
    lead_of: Callable[[str], float | None]
    base_of: Callable[[str], str | None]
    margin: float = EARLY_MARGIN
    started: dict[str, float] = field(default_factory=dict)  # in flight: image -> start time
    _leads: dict[str, float | None] = field(default_factory=dict)

    def lead(self, name: str) -> float:
        if name not in self._leads:
            self._leads[name] = self.lead_of(name)
        own = self._leads[name]
        if own is not None:
            return own
        known = [v for v in self._leads.values() if v is not None]
        return statistics.median(known) if known else 0.0

    def expected_end(self, name: str) -> float | None:
        """When the build of `name` (in flight) should push its tag; None when unknown."""
        if name not in self.started or name not in self.estimates:
            return None
        total = self.estimates[name]
        end = self.started[name] + total
        base = self.base_of(name)
        if base is not None and base in self.started:
            base_end = self.expected_end(base)
            if base_end is not None:  # it waits for its base, then does its own work
                end = max(end, base_end + max(total - self.lead(name), 0.0))
        return end

    def start_time(self, name: str, base: str) -> float | None:
        """When to start `name` whose base `base` is in flight (None: no estimate, wait)."""
        end = self.expected_end(base)
        return None if end is None else end - self.lead(name) * (1 + self.margin)
