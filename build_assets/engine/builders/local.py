"""The local builder: runs `scripts/build_image.sh` against a real Docker engine and registry.

Each build gets its own thread: it writes the request's context (exactly the hashed files) to a
tar, extracts it safely into a private temp folder and runs the build script there, with output
to a log file under `work_dir/logs`. The engine is the script's DOCKER_HOST (this process's, or
the builder's `env`; see `build-assets stack up`); the registry is whatever `request.repository`
names.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from build_assets.engine import registry
from build_assets.engine.builders.base import BuildHandle, BuildRequest, BuildResult
from build_assets.engine.processes import clean_orphaned_once, owner_prefix, popen_owned
from build_assets.engine.progress import script_phases
from build_assets.errors import BuildError, UserError
from build_assets.settings import child_environment

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_image.sh"
LOG_TAIL_LINES = 50
CANCEL_GRACE_S = 10.0
DIGEST_RE = re.compile(r"^BUILD_ASSETS_DIGEST=(sha256:[0-9a-f]{64})\s*$", re.M)
_ARG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_counter = itertools.count(1)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a (possibly large) log file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _extract(archive: Path, dest: Path) -> None:
    """Extract a context tar, refusing absolute paths, `..` and links leaving `dest`."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            link = (target.parent / member.linkname).resolve() if member.issym() else target
            for path in (target, link):
                if path != root and root not in path.parents:
                    raise tarfile.TarError(f"unsafe path in context: {member.name}")
            if not (member.isfile() or member.isdir() or member.issym()):
                raise tarfile.TarError(f"unsupported entry in context: {member.name}")
        tar.extractall(dest)


DEFAULT_ENGINE = "unix:///var/run/docker.sock"


def foreign_platform_problem(platform: str) -> str:
    """Why a build for `platform` failed with 'exec format error', and what to do."""
    return (
        f"this Docker engine cannot run {platform} programs (a RUN step failed with 'exec"
        " format error'): register QEMU emulation on the engine's host (apt-get install"
        " qemu-user-static binfmt-support) or build it on CodeBuild"
        f" (BUILD_ASSETS_BACKEND=codebuild), which runs {platform} natively"
    )


@dataclass
class _Run:
    """One execution of the build script (shared by handles attached to the same image)."""

    build_id: str
    request: BuildRequest
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    error: str | None = None  # a failure before or around the script (context, extraction)
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class LocalDockerBuilder:
    """`Builder` that builds and pushes with the local Docker engine (thread per build)."""

    name = "local"
    uses_local_engine = True  # preflight checks the engine and the registry it pushes to

    def __init__(
        self,
        work_dir: Path | str,
        *,
        registry_host: str | None = None,
        max_parallel: int | None = None,
        network: str | None = None,
        env: Mapping[str, str] | None = None,
        poll_timeout: float = 1.0,
        script: Path | str = SCRIPT,
    ) -> None:
        """
        work_dir: logs and temporary contexts (`Project`: <settings home>/local-builds).
        registry_host: used when a request's repository has no host.
        max_parallel: builds running at once (default 4; see Settings.local_parallel).
        network: network for RUN steps (e.g. "host"); the engine default otherwise.
        env: extra environment for the build script (DOCKER_HOST etc. come from os.environ).
        """
        self.work_dir = Path(work_dir)
        self.registry_host = registry_host
        parallel = max_parallel or 4
        self._slots = threading.BoundedSemaphore(max(1, parallel))
        self.network = network
        self.env = dict(env or {})
        self.poll_timeout = poll_timeout
        self.script = Path(script)
        self._cond = threading.Condition()
        self._inflight: dict[str, _Run] = {}
        self._engine_checked = False

    # -- protocol -------------------------------------------------------------------------

    def existing_digest(self, request: BuildRequest) -> str | None:
        """Digest of `request.image_uri` in the registry, or None if the tag is absent."""
        return registry.manifest_digest(
            request.repository, request.tag, registry=self.registry_host
        )

    def start(self, request: BuildRequest) -> BuildHandle:
        """Start building in a background thread; attach to an identical build in flight."""
        self._validate(request)
        with self._cond:
            run = self._inflight.get(request.image_uri)
            if run is None or run.done.is_set():
                run = self._new_run(request)
                self._inflight[request.image_uri] = run
                threading.Thread(
                    target=self._execute, args=(run,), name=run.build_id, daemon=True
                ).start()
        return BuildHandle(
            request=request, build_id=run.build_id, started_at=time.time(), state={"run": run}
        )

    def poll(
        self, handles: Sequence[BuildHandle], timeout: float | None = None
    ) -> list[BuildHandle]:
        """Handles whose builds are over, waiting up to `timeout` s for at least one."""
        deadline = time.monotonic() + (self.poll_timeout if timeout is None else timeout)
        with self._cond:
            while True:
                done = [h for h in handles if self._run(h).done.is_set()]
                remaining = deadline - time.monotonic()
                if done or not handles or remaining <= 0:
                    return done
                self._cond.wait(remaining)

    def finish(self, handle: BuildHandle) -> BuildResult:
        """The pushed image of a finished build (waits if still running); else BuildError."""
        run = self._run(handle)
        run.done.wait()
        req = handle.request
        tail = log_tail(run.log_path)
        log_url = run.log_path.resolve().as_uri()
        duration = (run.finished or time.monotonic()) - run.started
        data = run.log_path.read_bytes() if run.log_path.exists() else b""
        text = data.decode(errors="replace")
        stamped = script_phases(data)
        phases = [phase for phase, _ in stamped]

        def fail(message: str, status: str = "FAILED", phase: str | None = None) -> BuildError:
            return BuildError(
                req.image,
                message,
                status=status,
                phase=phase,
                log_tail=tail,
                log_url=log_url,
                build_id=run.build_id,
            )

        if run.cancelled:
            raise fail("build cancelled", status="STOPPED", phase=phases[-1] if phases else None)
        if run.error:
            raise fail(run.error, phase="PREPARE")
        if run.returncode != 0:
            phase = phases[-1] if phases else "PREPARE"
            if req.platform and "exec format error" in text:
                raise fail(foreign_platform_problem(req.platform), phase=phase)
            if not self._engine_answers():
                self._engine_checked = False  # the next start says so before trying
                raise fail(
                    f"the Docker engine at {self.engine_host} stopped answering during {phase}:"
                    ' start it again (eval "$(build-assets stack up)") and re-run',
                    phase=phase,
                )
            raise fail(
                f"build script failed (exit {run.returncode}) in {phase}; log: {run.log_path}",
                phase=phase,
            )
        found = DIGEST_RE.findall(text)
        try:
            digest = registry.manifest_digest(req.repository, req.tag, registry=self.registry_host)
        except registry.RegistryError as e:
            raise fail(f"pushed, but cannot read the digest back: {e}", phase="PUSH") from None
        if digest is None:
            raise fail(
                f"the script succeeded but {req.image_uri} is not in the registry", phase="PUSH"
            )
        extra: dict = {"log_path": str(run.log_path), "phases": stamped}
        if found and found[-1] != digest:
            extra["script_digest"] = found[-1]
        return BuildResult.built(
            req,
            digest,
            self.name,
            build_id=run.build_id,
            log_url=log_url,
            duration_s=round(duration, 3),
            log_tail=tail,
            extra=extra,
        )

    def cancel(self, handle: BuildHandle) -> None:
        """Stop the build: SIGTERM its process group, SIGKILL after a grace period."""
        run = self._run(handle)
        with self._cond:
            if run.done.is_set():
                return
            run.cancelled = True
            proc = run.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            threading.Thread(target=self._escalate, args=(proc,), daemon=True).start()

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _run(handle: BuildHandle) -> _Run:
        run = handle.state.get("run")
        if not isinstance(run, _Run):
            raise ValueError(f"{handle.build_id} is not a handle of the local builder")
        return run

    def _validate(self, request: BuildRequest) -> None:
        for key, value in request.build_args.items():
            if not _ARG_KEY_RE.match(key):
                raise UserError(f"{request.image}: build arg name {key!r} is not valid")
            if "\n" in value or "\r" in value:
                raise UserError(f"{request.image}: build arg {key} must be a single line")
        if not shutil.which("docker"):
            raise UserError("docker not found: apt-get install docker.io")
        if not self.script.is_file():
            raise UserError(f"build script missing: {self.script} (reinstall build-assets)")
        if not self._engine_checked:
            if not self._engine_answers():
                raise UserError(
                    f"no Docker engine answers at {self.engine_host}: run"
                    ' eval "$(build-assets stack up)" or set DOCKER_HOST'
                )
            self._engine_checked = True

    @property
    def engine_host(self) -> str:
        """The Docker engine the build script talks to: its environment's DOCKER_HOST."""
        return child_environment(self.env).get("DOCKER_HOST") or DEFAULT_ENGINE

    def _engine_answers(self) -> bool:
        """The engine of the script's environment answers (TLS when it sets DOCKER_TLS_VERIFY)."""
        from build_assets.stack.local import docker_ping

        tls = bool(child_environment(self.env).get("DOCKER_TLS_VERIFY"))
        return docker_ping(self.engine_host, timeout=5.0, tls_verify=tls)

    def _new_run(self, request: BuildRequest) -> _Run:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        while True:
            build_id = f"local-{request.image}-{request.tag}-{next(_counter)}"
            path = logs / f"{_safe_name(build_id)}.log"
            try:
                with open(path, "x") as fh:
                    now = time.strftime("%Y-%m-%d %H:%M:%S")
                    fh.write(f"# {build_id}: {request.image_uri} ({now})\n")
            except FileExistsError:
                continue
            return _Run(build_id=build_id, request=request, log_path=path)

    def _script_env(self, request: BuildRequest) -> dict[str, str]:
        env = child_environment(self.env)
        for key in (
            "BASE_IMAGE",
            "BASE_WAIT_REF",
            "BASE_ARG",
            "PLATFORM",
            "BUILD_ARGS",
            "CACHE_FROM",
        ):
            env.pop(key, None)
        for key in ("ECR_REGISTRY", "DOCKER_NETWORK"):
            env.pop(key, None)
        env.update(
            IMAGE_REPO=request.repository,
            IMAGE_TAG=request.tag,
            DOCKERFILE=request.dockerfile,
            BUILD_ARGS="\n".join(f"{k}={v}" for k, v in sorted(request.build_args.items())),
            IMAGE_LABELS="\n".join(f"{k}={v}" for k, v in sorted(request.labels.items())),
        )
        if request.base_image or request.base_wait:
            env["BASE_ARG"] = request.base_arg
        if request.base_image:
            env["BASE_IMAGE"] = request.base_image
        elif request.base_wait:  # the local builder never starts early; kept for symmetry
            env["BASE_WAIT_REF"] = request.base_wait
        if request.platform:
            env["PLATFORM"] = request.platform
        if request.previous_tag and request.previous_tag != request.tag:
            env["CACHE_FROM"] = f"{request.repository}:{request.previous_tag}"
        if self.network:
            env["DOCKER_NETWORK"] = self.network
        return env

    def _execute(self, run: _Run) -> None:
        """Thread body: prepare the context, run the script, record the outcome."""
        tmp_root = self.work_dir / "tmp"
        try:
            with self._slots:
                if run.cancelled:
                    return
                tmp_root.mkdir(parents=True, exist_ok=True)
                clean_orphaned_once(tmp_root)  # what builders killed before us left behind
                prefix = owner_prefix() + _safe_name(run.build_id) + "-"
                tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
                try:
                    context = tmp / "context"
                    archive = tmp / "context.tar"
                    with open(archive, "wb") as fh:
                        run.request.context.write_tar(fh)
                    _extract(archive, context)
                    archive.unlink()
                    with open(run.log_path, "ab") as log:
                        with self._cond:
                            if run.cancelled:
                                return
                            # own process group, stopped with it when this process dies
                            run.proc = popen_owned(
                                ["bash", str(self.script)],
                                cwd=context,
                                env=self._script_env(run.request),
                                stdin=subprocess.DEVNULL,
                                stdout=log,
                                stderr=subprocess.STDOUT,
                            )
                        run.returncode = run.proc.wait()
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        except Exception as e:  # reported through finish() as a BuildError
            run.error = str(e) or type(e).__name__
            with contextlib.suppress(OSError), open(run.log_path, "a") as fh:
                fh.write(f"build_assets: {run.error}\n")
        finally:
            with self._cond:
                run.finished = time.monotonic()
                run.done.set()
                if self._inflight.get(run.request.image_uri) is run:
                    del self._inflight[run.request.image_uri]
                self._cond.notify_all()

    @staticmethod
    def _escalate(proc: subprocess.Popen) -> None:
        try:
            proc.wait(timeout=CANCEL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
