"""Live progress in the terminal: one row per image and function (state, elapsed, estimate,
log link), redrawn in place on a terminal (rich's live display) and one plain line per state
change anywhere else (CI logs). `ProgressView` shows a run of this process (fed by
`engine.progress` events); `watch_runs` shows runs of a Dagster instance started elsewhere,
from the `[NAME] …` lines their step writes to the event log.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from build_assets.engine import progress

REFRESH_PER_SECOND = 4
WATCH_INTERVAL_S = 1.0  # how often `status --watch` reads the event log
STYLE = {
    progress.QUEUED: "dim",
    progress.WAITING: "dim",
    progress.PREPARING: "cyan",
    progress.UPLOADING: "cyan",
    progress.BUILDING: "bold blue",
    progress.PUSHING: "bold cyan",
    progress.DEPLOYING: "bold cyan",
    progress.CACHED: "green",
    progress.DONE: "bold green",
    progress.FAILED: "bold red",
    progress.BLOCKED: "yellow",
    progress.CANCELLED: "magenta",
}


def terminal_stream() -> TextIO | None:
    """A stream on a duplicate of this process's stdout, made now: Dagster redirects fd 1 to
    its compute-log capture while a step runs, and the display must still reach the screen
    (None when stdout has no file descriptor, e.g. under a test's capture)."""
    try:
        fd = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return os.fdopen(fd, "w", buffering=1, encoding=sys.stdout.encoding or "utf-8")


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = round(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _rows(board: progress.Board) -> list[progress.Row]:
    """Images first (in the order the run saw them), then functions."""
    rows = list(board.rows.values())
    return [r for r in rows if r.kind == progress.IMAGE] + [
        r for r in rows if r.kind != progress.IMAGE
    ]


def render_board(board: progress.Board, title: str, now: float | None = None) -> Table:
    """The progress table of one run."""
    now = time.time() if now is None else now
    rows = _rows(board)
    done = sum(r.finished for r in rows)
    table = Table(title=f"{title}  ({done}/{len(rows)} finished)", title_justify="left")
    table.add_column("target", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("elapsed", justify="right", no_wrap=True)
    table.add_column("estimate", justify="right", no_wrap=True)
    table.add_column("log", overflow="fold")
    for r in rows:
        name = r.name if r.kind == progress.IMAGE else f"λ {r.name}"
        idle = r.state in progress.IDLE
        table.add_row(
            escape(name),
            f"[{STYLE.get(r.state, '')}]{escape(r.label)}[/]",
            "" if idle else _seconds(r.elapsed(now)),
            f"~{_seconds(r.estimate_s)}" if r.estimate_s is not None else "",
            f"[link={r.log_url}]{escape(r.log_url)}[/link]" if r.log_url else "",
        )
    return table


def plain_line(ev: progress.Progress, row: progress.Row | None, *, with_log: bool = True) -> str:
    """One line per state change (non-terminal output)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.at))
    who = ev.name if ev.kind == progress.IMAGE else f"lambda {ev.name}"
    text = f"{stamp} {who}: {ev.label}"
    if row is not None and ev.state in progress.TERMINAL and row.active_at is not None:
        text += f" in {_seconds(row.elapsed(ev.at))}"
    if ev.estimate_s is not None and ev.state in progress.ACTIVE:
        text += f" (est. {_seconds(ev.estimate_s)})"
    if ev.log_url and ev.state not in progress.IDLE and (with_log or ev.state == progress.FAILED):
        text += f" log {ev.log_url}"
    return text


class LineWriter:
    """One line per change of state or detail of a target (a new log link alone is not a
    change: it is printed with the next line, once)."""

    def __init__(self, console: Console, prefix: str = "") -> None:
        self.console = console
        self.prefix = prefix
        self._shown: dict[tuple[str, str], tuple[str, str, str | None]] = {}

    def write(self, ev: progress.Progress, row: progress.Row | None) -> None:
        key = (ev.kind, ev.name)
        last = self._shown.get(key)
        if last is not None and last[:2] == (ev.state, ev.detail):
            return
        new_log = ev.log_url is not None and (last is None or last[2] != ev.log_url)
        self._shown[key] = (ev.state, ev.detail, ev.log_url)
        line = self.prefix + plain_line(ev, row, with_log=new_log)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class ProgressView:
    """A context manager showing one run: `update` is the `on_progress` callback."""

    shows = True

    def __init__(
        self, title: str, console: Console | None = None, *, live: bool | None = None
    ) -> None:
        self._own: TextIO | None = None
        if console is None:
            self._own = terminal_stream()
            console = Console(file=self._own) if self._own else Console()
        self.console = console
        self.title = title
        self.live = self.console.is_terminal if live is None else live
        self.board = progress.Board()
        self._lock = threading.Lock()
        self._display: Live | None = None
        self._lines = LineWriter(self.console)

    def __enter__(self) -> ProgressView:
        if self.live:
            self._display = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._display.start()
        else:
            self.console.print(self.title, markup=False, highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()  # leaves the final table on the screen
            self._display = None
        if self._own is not None:
            self._own.close()  # a duplicate descriptor: stdout itself stays open
            self._own = None

    def _render(self) -> Table:
        with self._lock:
            return render_board(self.board, self.title)

    def update(self, ev: progress.Progress) -> None:
        with self._lock:
            changed = self.board.apply(ev)
            row = self.board.row(ev.kind, ev.name)
        if changed and not self.live:
            self._lines.write(ev, row)

    def cancelled(self) -> list[progress.Row]:
        """Targets whose builds were cancelled, or that never finished."""
        return [r for r in _rows(self.board) if r.state == progress.CANCELLED or not r.finished]


# -- status --watch ----------------------------------------------------------------------------


class _Watched:
    """One run followed through the instance's event log."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run_id: str = run["run_id"]
        self.board = progress.Board()
        self.cursor: str | None = None
        self.status: str = run.get("status", "")
        self.finished = False
        self.lines: LineWriter | None = None

    def read(self, instance: Any) -> list[progress.Progress]:
        """New progress events of the run; updates its status (read first: a run seen
        finished has written all its events)."""
        run = instance.get_run_by_id(self.run_id)
        conn = instance.get_records_for_run(self.run_id, cursor=self.cursor)
        self.cursor = conn.cursor
        events = []
        for record in conn.records:
            entry = record.event_log_entry
            ev = progress.Progress.parse(entry.user_message or "", entry.timestamp, self.run_id)
            if ev is not None and self.board.apply(ev):
                events.append(ev)
        if run is not None:
            self.status = run.status.value
            self.finished = run.is_finished
        return events


def watch_runs(
    instance: Any,
    console: Console | None = None,
    *,
    as_json: bool = False,
    interval_s: float = WATCH_INTERVAL_S,
) -> int:
    """Follow every run in flight in `instance` (and any that starts meanwhile) until all are
    over: a live table per run on a terminal, a line per change otherwise, JSON lines with
    `as_json`. Returns 1 when a watched run failed, else 0."""
    from build_assets.dagster.submit import in_flight_runs

    console = console or Console()
    watched: dict[str, _Watched] = {}

    def look() -> None:
        for run in in_flight_runs(instance):
            watched.setdefault(run["run_id"], _Watched(run))
        for w in watched.values():
            if w.finished:
                continue
            for ev in w.read(instance):
                if as_json:
                    print(json.dumps(ev.to_dict()), flush=True)
                elif not live:
                    w.lines = w.lines or LineWriter(console, f"run {w.run_id[:8]} ")
                    w.lines.write(ev, w.board.row(ev.kind, ev.name))

    def render() -> Group:
        return Group(
            *(
                render_board(w.board, f"Run {w.run_id} ({w.status.lower()})")
                for w in watched.values()
            )
        )

    live = console.is_terminal and not as_json
    look()
    if not watched:
        if as_json:
            print(json.dumps({"runs": []}))
        else:
            console.print("No runs in flight.")
        return 0
    display = Live(get_renderable=render, console=console, refresh_per_second=2) if live else None
    if display is not None:
        display.start()
    try:
        while not all(w.finished for w in watched.values()):
            time.sleep(interval_s)  # polling the event log: nothing to wait on in-process
            look()
    finally:
        if display is not None:
            display.stop()
    failed = [w.run_id for w in watched.values() if w.status != "SUCCESS"]
    if not as_json:
        for w in watched.values():
            console.print(f"run {w.run_id}: {w.status}", markup=False)
    return 1 if failed else 0
