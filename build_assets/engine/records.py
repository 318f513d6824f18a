"""Build records: what was built (or found cached), when, by whom — a small SQLite file.

A local cache, never the truth: what is built is the registry (`engine.provenance`), so this
file can be deleted without losing anything. `status` shows the most recent builds from it.
The scheduler writes a record per finished image; with a `publish` hook (the project's
`provenance.Publisher`) each successful record's provenance also goes to the registry.
"""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from build_assets.core.context import ContextFile
from build_assets.core.plan import BuiltState

if TYPE_CHECKING:
    from build_assets.core.versioning import ImageVersion
    from build_assets.engine.provenance import Provenance

_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    tag TEXT NOT NULL,
    registry TEXT NOT NULL,
    status TEXT NOT NULL,
    cached INTEGER NOT NULL DEFAULT 0,
    digest TEXT,
    builder TEXT,
    build_id TEXT,
    log_url TEXT,
    started_at REAL NOT NULL,
    duration_s REAL,
    git_commit TEXT,
    run_id TEXT,
    error TEXT,
    identity TEXT,
    base_version TEXT,
    files BLOB
);
CREATE INDEX IF NOT EXISTS builds_image ON builds (registry, image, status, id);
"""

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"


@dataclass
class BuildRecord:
    """One finished build attempt of one image version."""

    image: str
    version: str
    tag: str
    registry: str
    status: str
    cached: bool = False
    digest: str | None = None
    builder: str | None = None
    build_id: str | None = None
    log_url: str | None = None
    started_at: float = field(default_factory=time.time)
    duration_s: float | None = None
    git_commit: str | None = None
    run_id: str | None = None
    error: str | None = None
    identity: dict | None = None
    base_version: str | None = None
    files: tuple[ContextFile, ...] = ()

    @classmethod
    def for_image(cls, image: ImageVersion, registry: str, status: str, **kw) -> BuildRecord:
        return cls(
            image=image.name,
            version=image.version,
            tag=image.tag,
            registry=registry,
            status=status,
            identity=image.identity,
            base_version=image.base_version,
            files=image.files,
            **kw,
        )

    def public_dict(self) -> dict:
        d = asdict(self)
        d.pop("files")
        d.pop("identity")
        return d


class BuildRecords:
    """The build records file (`Settings.records_path`: <home>/builds.sqlite)."""

    def __init__(
        self,
        path: str | Path,
        publish: Callable[[Provenance], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.publish = publish

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        conn.executescript(_SCHEMA)
        return conn

    def add(self, rec: BuildRecord) -> None:
        files = zlib.compress(json.dumps([[f.path, f.mode, f.blob] for f in rec.files]).encode())
        row = rec.public_dict()
        row["cached"] = int(rec.cached)
        row["identity"] = json.dumps(rec.identity) if rec.identity is not None else None
        row["files"] = files
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as conn:
            conn.execute(f"INSERT INTO builds ({cols}) VALUES ({marks})", tuple(row.values()))
        if self.publish is not None and rec.status == SUCCEEDED and rec.identity is not None:
            from build_assets.engine.provenance import Provenance

            self.publish(
                Provenance(rec.image, rec.version, rec.base_version, rec.identity, rec.files)
            )

    def _rows(self, sql: str, args: tuple) -> list[BuildRecord]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(sql, args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d.pop("id")
            d["cached"] = bool(d["cached"])
            d["identity"] = json.loads(d["identity"]) if d["identity"] else None
            blob = d.pop("files")
            d["files"] = (
                tuple(ContextFile(*x) for x in json.loads(zlib.decompress(blob))) if blob else ()
            )
            out.append(BuildRecord(**d))
        return out

    def latest_success(self, registry: str) -> dict[str, BuildRecord]:
        """The newest successful record of each image pushed to `registry`."""
        # one row per image (its newest success): the table grows with every run
        rows = self._rows(
            "SELECT * FROM builds WHERE id IN (SELECT MAX(id) FROM builds"
            " WHERE registry = ? AND status = ? GROUP BY image) ORDER BY id",
            (registry, SUCCEEDED),
        )
        return {r.image: r for r in rows}

    def built_states(self, registry: str) -> dict[str, BuiltState]:
        return {
            name: BuiltState(r.version, r.identity or {}, r.files, r.base_version)
            for name, r in self.latest_success(registry).items()
        }

    def recent(self, limit: int = 20, registry: str | None = None) -> list[BuildRecord]:
        """Most recent records first."""
        if registry is None:
            return self._rows("SELECT * FROM builds ORDER BY id DESC LIMIT ?", (limit,))
        return self._rows(
            "SELECT * FROM builds WHERE registry = ? ORDER BY id DESC LIMIT ?", (registry, limit)
        )
