"""Function journal: each image change build-assets made to a function, and rollback holds.

A hold says "FN was rolled back while its image was at version V": `Project.stale` and every
deploy leave FN alone while the image's version is still V, so a later `materialize`, sensor
run or schedule does not undo the rollback; a new version (or `rollback FN --release`) ends
it. A small SQLite file under BUILD_ASSETS_HOME, beside the build records.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    previous_image TEXT,
    image TEXT NOT NULL,
    version TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    function TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    from_image TEXT,
    to_image TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Hold:
    """FN stays on `to_image` while image `image` is at `version`."""

    function: str
    image: str
    version: str
    from_image: str | None
    to_image: str
    at: float

    def holds_at(self, version: str) -> bool:
        return self.version == version


class FunctionJournal:
    """The journal file (default: $BUILD_ASSETS_HOME/functions.sqlite)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.executescript(_SCHEMA)
        return conn

    def record(self, function: str, previous: str | None, image: str, version: str | None) -> None:
        """One image change of `function` (a deploy or a rollback)."""
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO deploys (function, previous_image, image, version, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (function, previous, image, version, time.time()),
            )

    def previous_of(self, function: str, image: str) -> str | None:
        """The image `function` ran before it was last changed to `image`."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT previous_image FROM deploys WHERE function = ? AND image = ?"
                " AND previous_image IS NOT NULL AND previous_image != image"
                " ORDER BY id DESC LIMIT 1",
                (function, image),
            ).fetchone()
        return row[0] if row else None

    def hold(self, hold: Hold) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO holds VALUES (?, ?, ?, ?, ?, ?)",
                (hold.function, hold.image, hold.version, hold.from_image, hold.to_image, hold.at),
            )

    def holds(self) -> dict[str, Hold]:
        if not self.path.exists():
            return {}
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM holds").fetchall()
        return {r[0]: Hold(*r) for r in rows}

    def get(self, function: str) -> Hold | None:
        return self.holds().get(function)

    def release(self, function: str) -> Hold | None:
        """End the hold on `function`; the hold it had (None: it had none)."""
        held = self.get(function)
        if held is not None:
            with self._connect() as conn:
                conn.execute("DELETE FROM holds WHERE function = ?", (function,))
        return held
