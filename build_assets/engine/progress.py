"""Structured progress of a build run: one `Progress` event per state change of an image or a
Lambda function, folded into a `Board` (what each target is doing, since when, how long each
state took) by whoever watches: the live terminal table, `status --watch`, the Dagster run log.

Events reach front ends two ways: a `ProgressTracker` calls its `emit` callback (the Dagster
step logs one line per event, see `Progress.line`), and `publish` hands them to the listeners
of the current context (`listening`), so an in-process caller (the CLI around
`dagster.materialize`) sees them without the step knowing about any terminal.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

QUEUED, WAITING, PREPARING, UPLOADING = "queued", "waiting", "preparing", "uploading"
BUILDING, PUSHING, DEPLOYING = "building", "pushing", "deploying"
CACHED, DONE, FAILED, BLOCKED, CANCELLED = "cached", "done", "failed", "blocked", "cancelled"
STATES = (
    QUEUED,
    WAITING,
    PREPARING,
    UPLOADING,
    BUILDING,
    PUSHING,
    DEPLOYING,
    CACHED,
    DONE,
    FAILED,
    BLOCKED,
    CANCELLED,
)
IDLE = frozenset({QUEUED, WAITING})
ACTIVE = frozenset({PREPARING, UPLOADING, BUILDING, PUSHING, DEPLOYING})
TERMINAL = frozenset({CACHED, DONE, FAILED, BLOCKED, CANCELLED})
IMAGE, LAMBDA = "image", "lambda"
ESTIMATE_SAMPLES = 5  # previous builds an estimate is the median of

# local build script markers (scripts/build_image.sh) -> our state
_SCRIPT_PHASES = {
    "LOGIN": PREPARING,
    "PULL_CACHE": PREPARING,
    "WAIT_BASE": PREPARING,  # early start: waiting for the base tag
    "BUILD": BUILDING,
    "PUSH": PUSHING,
    "DONE": PUSHING,
}
_SCRIPT_ORDER = (PREPARING, BUILDING, PUSHING, DONE)  # the order the script goes through them
_CODEBUILD_QUEUED = frozenset({"SUBMITTED", "QUEUED"})
# "BUILD_ASSETS_PHASE=BUILD at=1764412345.123" (the time since build-assets 0.x; older
# scripts print no time)
_PHASE_RE = re.compile(rb"^BUILD_ASSETS_PHASE=([A-Z_]+)(?: at=(\d+(?:\.\d+)?))?\s*$", re.M)
_SEP = " · "
_LINE_RE = re.compile(
    r"^\[(?P<name>[^\]\s]+)\] (?P<kind>image|lambda) (?P<state>[a-z]+)"
    r"(?: for (?P<waiting>[^·]+?)|: (?P<detail>[^·]+?))?"
    r"(?: · est\. (?P<est>\d+)s)?(?: · log (?P<log>\S+))?$"
)


@dataclass(frozen=True)
class Progress:
    """One target entering a state (or a new detail of it: a build phase, a log link)."""

    name: str
    kind: str  # image | lambda
    state: str  # one of STATES
    detail: str = ""  # the base waited for, the build phase, why it failed or is blocked
    at: float = 0.0  # wall-clock time of the change
    estimate_s: float | None = None  # typical duration of this image's build (previous builds)
    log_url: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        """'waiting for base-x', 'building: BUILD', 'failed: build FAILED in BUILD', 'done'."""
        if not self.detail:
            return self.state
        return (
            f"{self.state} for {self.detail}"
            if self.state == WAITING
            else (f"{self.state}: {self.detail}")
        )

    def line(self) -> str:
        """The run-log line of this event: '[NAME] KIND LABEL[ · est. Ns][ · log URL]'.
        Parsed back by `Progress.parse` (`status --watch`); the `[NAME]` prefix is what the
        run view's log filter matches."""
        label = self.label.replace(_SEP, " ").replace("\n", " ")
        text = f"[{self.name}] {self.kind} {label}"
        if self.estimate_s is not None:
            text += f"{_SEP}est. {round(self.estimate_s)}s"
        if self.log_url:
            text += f"{_SEP}log {self.log_url}"
        return text

    @classmethod
    def parse(cls, text: str, at: float, run_id: str | None = None) -> Progress | None:
        """The event of a `line()`, or None for any other log message."""
        found = _LINE_RE.match(text.strip())
        if not found or found["state"] not in STATES:
            return None
        est = found["est"]
        return cls(
            name=found["name"],
            kind=found["kind"],
            state=found["state"],
            detail=(found["waiting"] or found["detail"] or "").strip(),
            at=at,
            estimate_s=float(est) if est is not None else None,
            log_url=found["log"],
            run_id=run_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "label": self.label}


@dataclass
class Row:
    """What one target is doing, folded from its events."""

    name: str
    kind: str
    state: str = QUEUED
    detail: str = ""
    estimate_s: float | None = None
    log_url: str | None = None
    first_at: float = 0.0  # first event (the run's start for this target)
    entered_at: float = 0.0  # when the current state began
    active_at: float | None = None  # when work on it began (preparing / deploying)
    ended_at: float | None = None
    spent: dict[str, float] = field(default_factory=dict)  # state -> seconds spent in it

    @property
    def label(self) -> str:
        return Progress(self.name, self.kind, self.state, self.detail).label

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def elapsed(self, now: float) -> float:
        """Seconds of work so far (or of waiting, before any work began)."""
        end = self.ended_at if self.ended_at is not None else now
        start = self.active_at if self.active_at is not None else self.first_at
        return max(0.0, end - start)


class Board:
    """Every target's row, in first-seen order, folded from `Progress` events."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def apply(self, ev: Progress) -> bool:
        """Fold one event in; False when it changes nothing (same state, detail and link)."""
        row = self.rows.get((ev.kind, ev.name))
        if row is None:
            row = self.rows[(ev.kind, ev.name)] = Row(
                ev.name, ev.kind, first_at=ev.at, entered_at=ev.at
            )
        elif (row.state, row.detail) == (ev.state, ev.detail) and (
            ev.log_url in (None, row.log_url)
        ):
            return False
        if row.state != ev.state:
            row.spent[row.state] = row.spent.get(row.state, 0.0) + max(0.0, ev.at - row.entered_at)
            row.entered_at = ev.at
        row.state, row.detail = ev.state, ev.detail
        row.log_url = ev.log_url or row.log_url
        if ev.estimate_s is not None:
            row.estimate_s = ev.estimate_s
        if ev.state in ACTIVE and row.active_at is None:
            row.active_at = ev.at
        if ev.state in TERMINAL:
            row.ended_at = ev.at
        return True

    def row(self, kind: str, name: str) -> Row | None:
        return self.rows.get((kind, name))

    def durations(self, name: str) -> dict[str, float]:
        """An image's seconds in the queue (waiting for a build slot, not for its base), in
        preparation + build, and in push."""
        row = self.rows.get((IMAGE, name))
        spent = row.spent if row else {}
        return {
            "queue_wait_s": round(spent.get(QUEUED, 0.0), 3),
            "build_s": round(sum(spent.get(s, 0.0) for s in (PREPARING, UPLOADING, BUILDING)), 3),
            "push_s": round(spent.get(PUSHING, 0.0), 3),
        }

    def in_state(self, *states: str) -> list[Row]:
        return [r for r in self.rows.values() if r.state in states]


class ProgressTracker(Board):
    """A board that turns state changes into events: the scheduler and `BuildRun` call `set`."""

    def __init__(
        self,
        emit: Callable[[Progress], None] | None = None,
        *,
        run_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.emit = emit or (lambda ev: None)
        self.run_id = run_id
        self.clock = clock
        self.estimates: dict[str, float] = {}

    def set(
        self,
        name: str,
        state: str,
        detail: str = "",
        *,
        kind: str = IMAGE,
        log_url: str | None = None,
        at: float | None = None,
    ) -> None:
        """Move a target to `state` (now, or at `at`); emits an event only when something
        changed."""
        ev = Progress(
            name,
            kind,
            state,
            detail,
            at=self.clock() if at is None else at,
            estimate_s=self.estimates.get(name) if kind == IMAGE else None,
            log_url=log_url,
            run_id=self.run_id,
        )
        if self.apply(ev):
            row = self.rows[(kind, name)]
            try:
                self.emit(replace(ev, log_url=row.log_url))
            except Exception as exc:  # noqa: BLE001 - a display problem must not stop builds
                log.warning("progress listener failed on %s: %s", ev.line(), exc)

    def replay(
        self, name: str, phases: list[tuple[str, float | None]], log_url: str | None = None
    ) -> None:
        """The states an image's build went through between two looks at it, from the build
        script's time-stamped phase markers: those past the state last seen, in order, at their
        own times (never before the state seen); a quick build otherwise jumps from 'preparing'
        to 'done', its build and push times lost."""
        for phase, at in phases:
            row = self.rows.get((IMAGE, name))
            state = DONE if phase == "DONE" else _SCRIPT_PHASES.get(phase, BUILDING)
            if at is None or (row is not None and row.state in TERMINAL):
                continue
            if row is not None and row.state in _SCRIPT_ORDER:
                if _SCRIPT_ORDER.index(state) < _SCRIPT_ORDER.index(row.state):
                    continue  # a poll saw the build past this phase already
                at = max(at, row.entered_at)  # seen later than it happened: keep time forward
            self.set(name, state, phase if state == PREPARING else "", at=at, log_url=log_url)


# -- what a builder's handle tells about its build ----------------------------------------------


def handle_log_url(handle: Any) -> str | None:
    """The log link of a build in flight, when its builder exposes one."""
    run = handle.state.get("run")
    path = getattr(run, "log_path", None)
    if isinstance(path, Path):
        return path.resolve().as_uri()
    build = handle.state.get("build")
    if isinstance(build, dict) and build.get("arn") and handle.state.get("project"):
        from build_assets.aws.build_status import console_url

        region = str(build["arn"]).split(":")[3]
        return console_url(region, handle.state["project"], handle.build_id)
    return None


def script_phases(data: bytes) -> list[tuple[str, float | None]]:
    """The build script's phase markers in its output: (PHASE, wall-clock time if stamped)."""
    return [(m[0].decode(), float(m[1]) if m[1] else None) for m in _PHASE_RE.findall(data)]


def handle_phase(handle: Any) -> tuple[str, str] | None:
    """(state, detail) of a build in flight from what its builder exposes, else None:
    the local build script's phase markers, CodeBuild's current phase."""
    build = handle.state.get("build")
    if isinstance(build, dict):
        phase = build.get("currentPhase")
        if not phase:
            return None
        return (QUEUED, f"CodeBuild {phase}") if phase in _CODEBUILD_QUEUED else (BUILDING, phase)
    run = handle.state.get("run")
    path = getattr(run, "log_path", None)
    if not isinstance(path, Path):
        return None
    offset, last = handle.state.get("progress_offset", 0), handle.state.get("progress_phase")
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
        cut = data.rfind(b"\n") + 1  # only whole lines: a marker may be half written
        found = script_phases(data[:cut])
        if found:
            last = found[-1][0]
        handle.state["progress_offset"], handle.state["progress_phase"] = offset + cut, last
        handle.state["progress_markers"] = found  # read now, for `ProgressTracker.replay`
    if last is None:
        return (PREPARING, "")
    state = _SCRIPT_PHASES.get(last, BUILDING)
    return (state, last if state == PREPARING else "")


# -- estimates from the build records ----------------------------------------------------------


def load_estimates(records_file: Path, registry: str, names: Iterable[str]) -> dict[str, float]:
    """Median duration of each image's last `ESTIMATE_SAMPLES` real (not cached) successful
    builds in `registry`, from the build records (no row for an image never built)."""
    wanted = set(names)
    if not wanted or not records_file.exists():
        return {}
    samples: dict[str, list[float]] = {}
    try:
        with contextlib.closing(sqlite3.connect(records_file, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT image, duration_s FROM builds WHERE registry = ? AND status = 'SUCCEEDED'"
                " AND cached = 0 AND duration_s IS NOT NULL ORDER BY id DESC LIMIT 2000",
                (registry,),
            ).fetchall()
    except sqlite3.Error:
        return {}  # no estimate is better than no build
    for image, duration in rows:
        got = samples.setdefault(image, [])
        if image in wanted and len(got) < ESTIMATE_SAMPLES:
            got.append(float(duration))
    return {n: statistics.median(d) for n, d in samples.items() if d and n in wanted}


# -- in-process listeners ------------------------------------------------------------------------

Listener = Callable[[Progress], None]
_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar(
    "build_assets_progress_listeners", default=()
)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Within this block (this thread / context), `publish` hands every event to `listener`."""
    if listener is None:
        yield
        return
    token = _listeners.set((*_listeners.get(), listener))
    try:
        yield
    finally:
        _listeners.reset(token)


def publish(ev: Progress) -> None:
    """Hand an event to the listeners of the current context (none: nothing happens)."""
    for listener in _listeners.get():
        try:
            listener(ev)
        except Exception as exc:  # noqa: BLE001 - a display problem must not stop builds
            log.warning("progress listener failed on %s: %s", ev.line(), exc)
