"""Pytest plugin: one real PostgreSQL server per test session (`-p tests.postgres_plugin`).

`postgres_server` starts Debian's PostgreSQL (initdb + pg_ctl, build_assets.stack.postgres)
in a temporary folder on 127.0.0.1 at a free port, with a `dagster` database, and stops and
deletes it at the end. `postgres_db` gives each test a fresh, empty database on that server
(Dagster's tables are created on first use). Outside CI a missing PostgreSQL skips the tests
that need it; under CI (CI=true) it fails them, so a missing install step shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from build_assets.errors import UserError
from build_assets.stack.postgres import (
    PostgresInfo,
    bindir,
    postgres_down,
    postgres_up,
    remove_data,
)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresInfo]:
    """The session's server (its `dagster` database exists)."""
    # Not under pytest's own temp root: that is private to root (0700), and as root the
    # server runs as the `postgres` user, which must reach its data folder.
    home = Path(tempfile.mkdtemp(prefix="ba-pg-"))
    os.chmod(home, 0o711)
    try:
        info = postgres_up(home, log=_quiet)
    except UserError as e:
        shutil.rmtree(home, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"postgres did not start: {e}", pytrace=False)
        pytest.skip(f"postgres unavailable: {e}")
    try:
        yield info
    finally:
        postgres_down(home, log=_quiet)
        remove_data(home)
        shutil.rmtree(home, ignore_errors=True)


def psql(info: PostgresInfo, sql: str, database: str | None = None) -> list[list[str]]:
    """Rows of `sql` (each a list of text columns) through the real psql client."""
    argv = [str(bindir() / "psql"), "-h", info.host, "-p", str(info.port), "-U", info.user]
    argv += ["-d", database or info.database, "-v", "ON_ERROR_STOP=1", "-tAF", "\t", "-c", sql]
    env = {**os.environ, "PGPASSWORD": info.password}
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


@pytest.fixture
def postgres_db(postgres_server: PostgresInfo) -> PostgresInfo:
    """A new empty database on the session's server, for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    psql(postgres_server, f"CREATE DATABASE {name}", database="postgres")
    return replace(postgres_server, database=name)
