"""Leases: at most one builder per (repository, version) at a time, across processes.

A scheduler acquires the lease of an image version before it starts a build and releases it
when the build is over. Another scheduler that finds a live holder does not build: it waits
until the lease is released (or its holder dies), then finds the pushed tag in the registry.

A holder is live while its lease has not expired (a heartbeat renews it) and, on this host,
while its process runs (pid + process start time, so a reused pid is not mistaken for it). A
dead holder's lease is taken over at once.

`LeaseStore` is the protocol; `SqliteLeaseStore` serves every builder of one machine (a SQLite
file in the state folder, short `BEGIN IMMEDIATE` transactions); `PostgresLeaseStore` serves
every machine that reaches one PostgreSQL database (`BUILD_ASSETS_LEASE_URL`, e.g. the Dagster
instance's), with expiry on the server's clock so machines' clocks do not matter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

DEFAULT_TTL_S = 120.0
_PRUNE_AFTER_S = 7 * 24 * 3600.0  # released leases are kept a while: they name the last holder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_time INTEGER,
    run_id TEXT,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    released INTEGER NOT NULL DEFAULT 0
);
"""


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (None if it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """True if `pid` runs and, when `start_time` is known, is the process that started then."""
    if pid <= 0:
        return False
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) a lease: one scheduler of one process of one host."""

    host: str
    pid: int
    start_time: int | None
    run_id: str | None
    token: str  # unique per holder: two schedulers of one process are two holders

    @classmethod
    def current(cls, run_id: str | None = None) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_time(pid), run_id, uuid.uuid4().hex)

    def alive_here(self) -> bool:
        """False only when this host can tell the holder's process is gone."""
        if self.host != socket.gethostname():
            return True  # another machine: only the expiry tells
        return process_alive(self.pid, self.start_time)

    def describe(self) -> str:
        who = f"run {self.run_id}" if self.run_id else "a build"
        return f"{who} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class Grant:
    """The outcome of `acquire`: who holds the lease now, and who held it before us."""

    acquired: bool
    holder: Holder  # us when acquired, else the live holder
    previous: Holder | None = None  # the last holder (released or dead) when we took it


@runtime_checkable
class LeaseStore(Protocol):
    """Where leases live; every method is one short transaction."""

    def acquire(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> Grant:
        """Take the lease unless another live holder has it."""

    def renew(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> bool:
        """Push the expiry back; False when the lease is no longer ours."""

    def release(self, key: str, holder: Holder) -> None:
        """Give the lease up (no-op if it is not ours)."""

    def holder(self, key: str) -> Holder | None:
        """The live holder of `key`, if any."""


def open_store(url: str | None, home: Path) -> LeaseStore:
    """The store of a `lease_url` setting (PostgreSQL), else this machine's SQLite file."""
    if url:
        return PostgresLeaseStore(url)
    return SqliteLeaseStore(home / "leases.sqlite")


def live_keys(store: LeaseStore, prefix: str = "") -> list[str]:
    """Keys with a live holder that start with `prefix` (stores without a listing: none)."""
    listing = getattr(store, "keys", None)
    if listing is None:
        return []
    return [k for k in listing(prefix) if store.holder(k) is not None]


class SqliteLeaseStore:
    """Leases in a SQLite file every process of this machine sees (`open_store`: in the state
    home)."""

    def __init__(self, path: str | Path, clock=time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._ready = False

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @staticmethod
    def _row_holder(row: tuple) -> Holder:
        token, host, pid, start_time, run_id = row
        return Holder(host, pid, start_time, run_id, token)

    def _live(self, row: tuple | None, now: float) -> bool:
        if row is None or row[-1] or row[-2] <= now:  # absent, released or expired
            return False
        return self._row_holder(row[:5]).alive_here()

    _COLS = "token, host, pid, start_time, run_id, expires_at, released"

    def acquire(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> Grant:
        now = self.clock()
        with self._tx() as conn:
            row = conn.execute(f"SELECT {self._COLS} FROM leases WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == holder.token:
                previous = None  # already ours: a renewal
            elif self._live(row, now):
                return Grant(False, self._row_holder(row[:5]))
            else:
                previous = self._row_holder(row[:5]) if row is not None else None
            conn.execute(
                "INSERT OR REPLACE INTO leases (key, token, host, pid, start_time, run_id,"
                " acquired_at, expires_at, released) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    key,
                    holder.token,
                    holder.host,
                    holder.pid,
                    holder.start_time,
                    holder.run_id,
                    now,
                    now + ttl_s,
                ),
            )
            if previous is None and row is None:
                conn.execute(
                    "DELETE FROM leases WHERE released = 1 AND expires_at < ?",
                    (now - _PRUNE_AFTER_S,),
                )
        return Grant(True, holder, previous)

    def renew(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE key = ? AND token = ? AND released = 0",
                (self.clock() + ttl_s, key, holder.token),
            )
            return cur.rowcount == 1

    def release(self, key: str, holder: Holder) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE leases SET released = 1, expires_at = ? WHERE key = ? AND token = ?",
                (self.clock(), key, holder.token),
            )

    def holder(self, key: str) -> Holder | None:
        now = self.clock()
        with self._tx() as conn:
            row = conn.execute(f"SELECT {self._COLS} FROM leases WHERE key = ?", (key,)).fetchone()
        return self._row_holder(row[:5]) if self._live(row, now) else None

    def keys(self, prefix: str = "") -> list[str]:
        """Keys not released and not expired that start with `prefix`."""
        if not self.path.exists():
            return []
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT key FROM leases WHERE released = 0 AND expires_at > ?"
                " AND substr(key, 1, ?) = ?",
                (self.clock(), len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS build_assets_leases (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_time BIGINT,
    run_id TEXT,
    acquired_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    released BOOLEAN NOT NULL DEFAULT FALSE
)
"""
_PG_NOW = "extract(epoch from clock_timestamp())::double precision"


class PostgresLeaseStore:
    """Leases in a PostgreSQL table every machine sees; one short transaction per call.

    `acquire` locks the key's row (`SELECT ... FOR UPDATE` after an `INSERT ... ON CONFLICT DO
    NOTHING`), so two machines racing for one version serialise on it. Times are the server's
    (`clock_timestamp()`), unless a `clock` is given (tests)."""

    def __init__(self, url: str, clock=None) -> None:
        self.url = url
        self.clock = clock
        self._ready = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _tx(self):
        import psycopg2

        try:
            conn = psycopg2.connect(self.url, connect_timeout=10)
        except psycopg2.OperationalError as e:
            from build_assets.errors import UserError

            where = self.url.rsplit("@", 1)[-1]
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"lease store: cannot connect to postgresql://…@{where}: {first}"
            ) from None
        try:
            with conn, conn.cursor() as cur:
                if not self._ready:
                    with self._lock:
                        cur.execute("SELECT pg_advisory_xact_lock(4242013)")  # one CREATE at once
                        cur.execute(_PG_SCHEMA)
                        self._ready = True
                yield cur
        finally:
            conn.close()

    def _now(self, cur) -> float:
        if self.clock is not None:
            return float(self.clock())
        cur.execute(f"SELECT {_PG_NOW}")
        return float(cur.fetchone()[0])

    _COLS = "token, host, pid, start_time, run_id, expires_at, released"

    @staticmethod
    def _live(row: tuple | None, now: float) -> bool:
        if row is None or row[-1] or row[-2] <= now:
            return False
        return SqliteLeaseStore._row_holder(row[:5]).alive_here()

    def acquire(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> Grant:
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(
                "INSERT INTO build_assets_leases (key, token, host, pid, acquired_at, expires_at,"
                " released) VALUES (%s, '', '', 0, 0, 0, TRUE) ON CONFLICT (key) DO NOTHING",
                (key,),
            )
            cur.execute(
                f"SELECT {self._COLS} FROM build_assets_leases WHERE key = %s FOR UPDATE", (key,)
            )
            row = cur.fetchone()
            fresh = row[0] == ""  # the placeholder row we just made
            if row[0] == holder.token:
                previous = None
            elif self._live(row, now):
                return Grant(False, SqliteLeaseStore._row_holder(row[:5]))
            else:
                previous = None if fresh else SqliteLeaseStore._row_holder(row[:5])
            cur.execute(
                "UPDATE build_assets_leases SET token = %s, host = %s, pid = %s, start_time = %s,"
                " run_id = %s, acquired_at = %s, expires_at = %s, released = FALSE WHERE key = %s",
                (
                    holder.token,
                    holder.host,
                    holder.pid,
                    holder.start_time,
                    holder.run_id,
                    now,
                    now + ttl_s,
                    key,
                ),
            )
            if fresh:
                cur.execute(
                    "DELETE FROM build_assets_leases WHERE released AND expires_at < %s",
                    (now - _PRUNE_AFTER_S,),
                )
        return Grant(True, holder, previous)

    def renew(self, key: str, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> bool:
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(
                "UPDATE build_assets_leases SET expires_at = %s"
                " WHERE key = %s AND token = %s AND NOT released",
                (now + ttl_s, key, holder.token),
            )
            return cur.rowcount == 1

    def release(self, key: str, holder: Holder) -> None:
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(
                "UPDATE build_assets_leases SET released = TRUE, expires_at = %s"
                " WHERE key = %s AND token = %s",
                (now, key, holder.token),
            )

    def holder(self, key: str) -> Holder | None:
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(f"SELECT {self._COLS} FROM build_assets_leases WHERE key = %s", (key,))
            row = cur.fetchone()
        return SqliteLeaseStore._row_holder(row[:5]) if self._live(row, now) else None

    def keys(self, prefix: str = "") -> list[str]:
        """Keys not released and not expired that start with `prefix`."""
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute(
                "SELECT key FROM build_assets_leases WHERE NOT released AND expires_at > %s"
                " AND left(key, %s) = %s",
                (now, len(prefix), prefix),
            )
            return [r[0] for r in cur.fetchall()]


class Heartbeat:
    """Renews a set of held leases from a background thread every `ttl_s / 4` seconds."""

    def __init__(self, store: LeaseStore, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, key: str) -> None:
        with self._lock:
            self._keys.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="lease-heartbeat")
                self._thread.daemon = True
                self._thread.start()

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys.discard(key)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock:
                keys = list(self._keys)
            for key in keys:
                with contextlib.suppress(Exception):  # a missed beat is retried; expiry is long
                    self.store.renew(key, self.holder, self.ttl_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
