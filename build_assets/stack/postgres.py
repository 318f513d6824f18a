"""A private PostgreSQL server for the local stack and the tests (Debian's `postgresql`).

`postgres_up(home)` runs `initdb` once and `pg_ctl start` on 127.0.0.1 at a free port, kept
stable across restarts by recording it (with a generated password) in `home/postgres.json`,
and creates the database Dagster uses. `postgres_down(home)` stops it and keeps the data.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user
(created by the Debian package) and its folder (`data/` + `server.log`) is owned by it. That
folder is `home/postgres` when that user can reach it, else `/var/lib/build-assets/postgres-
<hash of home>` (a state folder under /root is not reachable by other users).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from build_assets.errors import UserError
from build_assets.settings import child_environment

ENV_POSTGRES_URL = "BUILD_ASSETS_POSTGRES_URL"
SERVER_USER = "postgres"  # the system user of Debian's package, used when we are root
DB_USER = "build_assets"
DEFAULT_DATABASE = "dagster"
PREFERRED_MAJOR = "15"
FALLBACK_ROOT = Path("/var/lib/build-assets")
START_TIMEOUT = 60
STATE_FILE = "postgres.json"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class PostgresInfo:
    """Where the server listens, how to log in, and where its files are."""

    port: int
    password: str
    root: str  # folder with data/ and server.log
    database: str = DEFAULT_DATABASE
    user: str = DB_USER
    host: str = "127.0.0.1"
    alive: bool = False

    @property
    def url(self) -> str:
        """A libpq/SQLAlchemy URL: postgresql://user:password@host:port/database."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.root) / "data"

    @property
    def log(self) -> Path:
        return Path(self.root) / "server.log"

    def env(self) -> dict[str, str]:
        """The libpq URL, and the variables the production Dagster profile
        (deploy/dagster.yaml) reads."""
        return {
            ENV_POSTGRES_URL: self.url,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.database,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }


# ---------------------------------------------------------------------------------------------
# binaries and users


def bindir() -> Path:
    """The folder with initdb and pg_ctl: PostgreSQL 15's, else the newest installed."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (p.parent.parent.name != PREFERRED_MAJOR, -_major(p.parent.parent.name)),
    )
    if versions:
        return versions[0].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise UserError("PostgreSQL not found (no initdb): apt-get install postgresql")


def _major(name: str) -> int:
    return int(name) if name.isdigit() else 0


@dataclass(frozen=True)
class _RunAs:
    """The account the server runs as: ourselves, or `postgres` when we are root."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def current(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(None, os.geteuid(), os.getegid())
        try:
            pw = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise UserError(
                f"PostgreSQL refuses to run as root and there is no '{SERVER_USER}' user:"
                " apt-get install postgresql (it creates it) or run as another user"
            ) from None
        return cls(SERVER_USER, pw.pw_uid, pw.pw_gid)

    def kwargs(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.user else {}

    def can_reach(self, path: Path) -> bool:
        """True if this account may traverse every existing folder above and at `path`."""
        if self.user is None:
            return True
        groups = set(os.getgrouplist(self.user, self.gid))
        for folder in [path, *path.parents]:
            try:
                st = folder.stat()
            except FileNotFoundError:
                continue
            if st.st_uid == self.uid:
                ok = st.st_mode & 0o100
            elif st.st_gid in groups:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                return False
        return True

    def own(self, path: Path) -> None:
        if self.user:
            os.chown(path, self.uid, self.gid)


def _run(
    argv: list[str], run_as: _RunAs | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    kwargs = run_as.kwargs() if run_as else {}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env=child_environment(env),
        timeout=START_TIMEOUT + 30,
        **kwargs,
    )


def _why(proc: subprocess.CompletedProcess[str], log: Path | None = None) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    if log is not None:
        with contextlib.suppress(OSError):
            lines += [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else f"exit {proc.returncode}"


# ---------------------------------------------------------------------------------------------
# state


def _state_path(home: Path) -> Path:
    return home / STATE_FILE


def _load(home: Path) -> PostgresInfo | None:
    try:
        data = json.loads(_state_path(home).read_text())
        known = {k: data[k] for k in PostgresInfo.__dataclass_fields__ if k in data}
        return PostgresInfo(**known)
    except (OSError, ValueError, TypeError):
        return None


def _save(home: Path, info: PostgresInfo) -> None:
    path = _state_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the password
    with os.fdopen(fd, "w") as fh:
        payload = {k: v for k, v in asdict(info).items() if k != "alive"}
        fh.write(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".postgres.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _root_for(home: Path, run_as: _RunAs) -> Path:
    """home/postgres if the server's account can reach it, else a folder under /var/lib."""
    inside = home / "postgres"
    if run_as.can_reach(home):
        return inside
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
    return FALLBACK_ROOT / f"postgres-{digest}"


def _free_port(preferred: int | None) -> int:
    """`preferred` if it can be bound on 127.0.0.1, else a free port chosen by the kernel."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise UserError("no free TCP port on 127.0.0.1")


# ---------------------------------------------------------------------------------------------
# server


def _running(info: PostgresInfo, run_as: _RunAs) -> bool:
    if not info.data_dir.is_dir():
        return False
    proc = _run([str(bindir() / "pg_ctl"), "status", "-D", str(info.data_dir)], run_as)
    return proc.returncode == 0


def _initdb(info: PostgresInfo, run_as: _RunAs) -> None:
    root = Path(info.root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    run_as.own(root)
    pwfile = root / "initdb.pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(info.password + "\n")
    run_as.own(pwfile)
    try:
        argv = [
            str(bindir() / "initdb"),
            "-D",
            str(info.data_dir),
            "-U",
            info.user,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-locale",
        ]
        proc = _run(argv, run_as)
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise UserError(f"initdb {info.data_dir} failed: {_why(proc)}")


def _start(info: PostgresInfo, run_as: _RunAs) -> None:
    options = f"-p {info.port} -c listen_addresses={info.host} -k ''"
    argv = [str(bindir() / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT)]
    argv += ["-D", str(info.data_dir), "-l", str(info.log), "-o", options]
    proc = _run(argv, run_as)
    if proc.returncode != 0:
        raise UserError(f"postgres did not start; see {info.log} ({_why(proc, info.log)})")


def _psql(info: PostgresInfo, sql: str) -> str:
    argv = [str(bindir() / "psql"), "-h", info.host, "-p", str(info.port), "-U", info.user]
    argv += ["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", sql]
    proc = _run(argv, env={"PGPASSWORD": info.password, "PGCONNECT_TIMEOUT": "10"})
    if proc.returncode != 0:
        raise UserError(f"postgres at {info.host}:{info.port}: {_why(proc)}")
    return proc.stdout.strip()


def _ensure_database(info: PostgresInfo) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", info.database):
        raise UserError(f"database name '{info.database}': use lowercase letters, digits, '_'")
    exists = _psql(info, f"SELECT 1 FROM pg_database WHERE datname = '{info.database}'")
    if exists != "1":
        _psql(info, f"CREATE DATABASE {info.database}")


def postgres_up(
    home: Path | str, *, database: str = DEFAULT_DATABASE, log: Log = _stderr
) -> PostgresInfo:
    """Start the server recorded under `home` (initdb on first use); idempotent."""
    home = Path(home).expanduser().absolute()
    run_as = _RunAs.current()
    with _locked(home):
        info = _load(home)
        if info is None:
            root = _root_for(home, run_as)
            info = PostgresInfo(_free_port(None), secrets.token_urlsafe(24), str(root))
        info.database = database
        if _running(info, run_as):
            log(f"postgres: already running at {info.host}:{info.port} ({info.root})")
        else:
            info.port = _free_port(info.port)
            if not (info.data_dir / "PG_VERSION").exists():
                _initdb(info, run_as)
            _save(home, info)
            _start(info, run_as)
            log(f"postgres: started at {info.host}:{info.port} ({info.root})")
        _save(home, info)
        _ensure_database(info)
        info.alive = True
        return info


def postgres_status(home: Path | str) -> PostgresInfo | None:
    """The recorded server with its liveness, or None if none was ever started here."""
    info = _load(Path(home).expanduser().absolute())
    if info is not None:
        info.alive = _running(info, _RunAs.current())
    return info


def postgres_down(home: Path | str, *, log: Log = _stderr) -> bool:
    """Stop the server recorded under `home` (data kept); True if it was running."""
    home = Path(home).expanduser().absolute()
    if _load(home) is None:
        return False  # never started here: nothing to say
    run_as = _RunAs.current()
    with _locked(home):
        info = _load(home)
        if info is None or not _running(info, run_as):
            log("postgres: not running")
            return False
        argv = [str(bindir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(info.data_dir)]
        proc = _run(argv, run_as)
        if proc.returncode != 0:
            raise UserError(f"postgres did not stop: {_why(proc, info.log)}")
        log(f"postgres: stopped ({info.host}:{info.port})")
        return True


def remove_data(home: Path | str) -> None:
    """Delete the server's folder and record (stop it first)."""
    home = Path(home).expanduser().absolute()
    info = _load(home)
    if info is not None:
        shutil.rmtree(info.root, ignore_errors=True)
    _state_path(home).unlink(missing_ok=True)


__all__ = [
    "ENV_POSTGRES_URL",
    "PostgresInfo",
    "bindir",
    "postgres_down",
    "postgres_status",
    "postgres_up",
    "remove_data",
]
