"""One build, really run: phases, the buildspec's commands in a shell session, its report.

A `Build` goes through CodeBuild's phases (SUBMITTED, QUEUED, PROVISIONING, DOWNLOAD_SOURCE,
INSTALL, PRE_BUILD, BUILD, POST_BUILD, UPLOAD_ARTIFACTS, FINALIZING, COMPLETED) in a thread of
its own and reports them as `batch_get_builds` does (`to_api`).

The shell session (`shell`): each command runs in a fresh `bash` (or `sh`) that starts from
the environment and folder the previous command left, so `export` and `cd` carry across
commands and phases as in CodeBuild (shell options and functions do not). Each command leads
its own process group; StopBuild, a timeout and the end of the build kill every group the
build made. Phase transitions follow CodeBuild's: a failed INSTALL or
PRE_BUILD ends the build (FINALIZING), a failed BUILD still runs POST_BUILD, `on-failure:
CONTINUE` goes on to the next phase (the build still ends FAILED), `finally` always runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from build_assets.settings import child_environment
from build_assets.stack.codebuild.buildspec import Buildspec, BuildspecError, parse
from build_assets.stack.codebuild.logs import BuildLog
from build_assets.stack.codebuild.record import BuildRecord, now
from build_assets.stack.codebuild.shell import (
    group_alive,
    kill_group,
    parse_env0,
    pump,
    wrapper_script,
)
from build_assets.stack.codebuild.source import SourceError, extract
from build_assets.stack.codebuild.variables import resolve

COMMAND_PHASES = ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD")
WAIT_STEP_S = 0.1


class _End(Exception):
    """The build is being ended from outside (StopBuild, timeout)."""


class Build(BuildRecord):
    """A build started by StartBuild; `start()` runs it in a thread."""

    def __init__(self, *, build_id: str, **kwargs: Any) -> None:
        super().__init__(build_id=build_id, **kwargs)
        self._end: tuple[str, str, str] | None = None  # (status, statusCode, message)
        self._deadline: float | None = None
        self._groups: list[int] = []
        self._proc: subprocess.Popen | None = None
        self._spec: Buildspec | None = None
        self._thread = threading.Thread(target=self._run, name=build_id, daemon=True)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, status: str = "STOPPED", code: str = "BUILD_STOPPED", message: str = "") -> None:
        """End the build (StopBuild, the service shutting down): its processes are killed."""
        with self._lock:
            if self._end is None and not self.complete:
                self._end = (status, code, message or "Build was stopped")
        # the build's thread sees it within WAIT_STEP_S and kills the running command's group

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def _check(self) -> None:
        """Raise _End when the build is stopped or over its timeout."""
        with self._lock:
            if self._end is None and self._deadline is not None and now() >= self._deadline:
                self._end = (
                    "TIMED_OUT",
                    "BUILD_TIMED_OUT",
                    f"Build has timed out. (timeoutInMinutes {self.timeout_min})",
                )
            if self._end is not None:
                raise _End()

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(WAIT_STEP_S, left))

    # -- the run ----------------------------------------------------------------------------

    def _run(self) -> None:
        failed: tuple[str, str] | None = None  # (status, phase) that decides the build status
        record: dict[str, Any] | None = None
        env: dict[str, str] = {}
        try:
            self._instant("SUBMITTED")
            self._instant("QUEUED")
            with self._lock:
                self._deadline = now() + self.timeout_min * self.minute_s
            record = self._begin("PROVISIONING")
            self._wait(self.provisioning_s)
            if self.fault:
                self._close(
                    record,
                    "FAULT",
                    "INTERNAL_ERROR",
                    "Injected provisioning fault (local CodeBuild fault knob)",
                )
                failed = ("FAULT", "PROVISIONING")
                record = None
                raise _Skip()
            self._prepare_dirs()
            self._log = BuildLog(self.dir / "build.log", self.svc.logs, self.group, self.stream)
            self._log.container(f"Running on local CodeBuild (host {os.uname().nodename})")
            self._close(record, "SUCCEEDED")

            record = self._begin("DOWNLOAD_SOURCE")
            try:
                spec = self._spec = self._download_source()
                env = self._initial_env(spec)
            except BuildspecError as exc:
                self._close(record, "FAILED", "YAML_FILE_ERROR", str(exc))
                failed, record = ("FAILED", "DOWNLOAD_SOURCE"), None
                raise _Skip() from None
            except SourceError as exc:
                self._close(record, "FAILED", "CLIENT_ERROR", str(exc))
                failed, record = ("FAILED", "DOWNLOAD_SOURCE"), None
                raise _Skip() from None
            self._close(record, "SUCCEEDED")
            record = None

            aborted, first_failure = "", ""
            for phase in COMMAND_PHASES:
                if aborted and aborted != "BUILD":
                    break  # INSTALL/PRE_BUILD aborted: straight to FINALIZING
                body = spec.phase(phase.lower())
                record = self._begin(phase)
                env["CODEBUILD_BUILD_SUCCEEDING"] = "0" if first_failure else "1"
                env, error = self._run_phase(spec, body, env)
                if error:
                    self._close(record, "FAILED", "COMMAND_EXECUTION_ERROR", error)
                    first_failure = first_failure or phase
                    if body.on_failure == "ABORT":
                        aborted = aborted or phase
                else:
                    self._close(record, "SUCCEEDED")
                record = None
            if first_failure:
                failed = ("FAILED", first_failure)
            if aborted in ("INSTALL", "PRE_BUILD"):
                raise _Skip()
            self._instant("UPLOAD_ARTIFACTS")
        except _Skip:
            pass
        except _End:
            status, code, message = self._end or ("STOPPED", "BUILD_STOPPED", "")
            if record is not None:
                self._close(record, status, code, message)
            failed = (status, self.current)
            if self._log is not None:
                self._log.container(message)
        except Exception as exc:  # noqa: BLE001 - the service's own fault: the build FAULTs
            if record is not None:
                self._close(record, "FAULT", "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            failed = ("FAULT", self.current)
        finally:
            self._finalize(env, failed)

    def _prepare_dirs(self) -> None:
        for sub in ("src", "home", "tmp", "state"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    def _download_source(self) -> Buildspec:
        src_type = self.source.get("type", "NO_SOURCE")
        src_dir = self.dir / "src"
        if src_type == "S3":
            location = self.source.get("location") or ""
            bucket, _, key = location.partition("/")
            if not bucket or not key:
                raise SourceError(f"invalid S3 source location: {location!r}")
            self._log.container(f"Downloading source s3://{bucket}/{key}")  # type: ignore[union-attr]
            try:
                body = self.svc.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise SourceError(f"cannot download s3://{bucket}/{key}: {exc}") from None
            try:
                extract(body, src_dir)
            except (zipfile.BadZipFile, ValueError, OSError) as exc:
                raise SourceError(f"cannot extract s3://{bucket}/{key}: {exc}") from None
        elif src_type != "NO_SOURCE":
            raise SourceError(f"source type {src_type} is not supported by the local CodeBuild")
        text = self.source.get("buildspec") or ""
        if not text or "\n" not in text and text.endswith((".yml", ".yaml")):
            path = src_dir / (text or "buildspec.yml")
            if not path.is_file():
                raise BuildspecError(f"YAML_FILE_ERROR: cannot find buildspec file {path.name}")
            text = path.read_text()
        return parse(text)

    def _resolve(self, kind: str, ref: str) -> str:
        return resolve(kind, ref, self.svc.ssm, self.svc.secrets)

    def _initial_env(self, spec: Buildspec) -> dict[str, str]:
        """CodeBuild's variables, then the buildspec's, the project's and StartBuild's."""
        python_bin = str(Path(sys.executable).parent)
        path = child_environment().get("PATH", "/usr/local/bin:/usr/bin:/bin")  # the service's PATH
        env = {
            "PATH": f"{python_bin}:{path}" if python_bin not in path.split(":") else path,
            "LANG": "C.UTF-8",
            "HOME": str(self.dir / "home"),
            "TMPDIR": str(self.dir / "tmp"),
            "AWS_REGION": self.svc.region,
            "AWS_DEFAULT_REGION": self.svc.region,
            # the build's credentials: moto accepts any (CodeBuild hands the service role's)
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": self.svc.moto_url,
            "AWS_ENDPOINT_URL_CODEBUILD": self.svc.codebuild_url,
            "CODEBUILD_BUILD_ID": self.id,
            "CODEBUILD_BUILD_ARN": self.arn,
            "CODEBUILD_BUILD_NUMBER": str(self.number),
            "CODEBUILD_BUILD_IMAGE": self.image,
            "CODEBUILD_BUILD_SUCCEEDING": "1",
            "CODEBUILD_INITIATOR": self.initiator,
            "CODEBUILD_PROJECT_ARN": self.project.get("arn", ""),
            "CODEBUILD_SRC_DIR": str(self.dir / "src"),
            "CODEBUILD_SOURCE_VERSION": self.source.get("location", ""),
            "CODEBUILD_START_TIME": str(int(self.start_time * 1000)),
            "CODEBUILD_LOG_PATH": self.stream,
        }
        if self.svc.docker_host:
            env["DOCKER_HOST"] = self.svc.docker_host
        env.update(spec.variables)
        for name, ref in spec.parameter_store.items():
            env[name] = self._resolve("PARAMETER_STORE", ref)
        for name, ref in spec.secrets_manager.items():
            env[name] = self._resolve("SECRETS_MANAGER", ref)
        for var in self.env_vars:  # project, then StartBuild overrides (already merged)
            kind, value = var.get("type", "PLAINTEXT"), var.get("value", "")
            env[var["name"]] = value if kind == "PLAINTEXT" else self._resolve(kind, value)
        return env

    def _run_phase(
        self, spec: Buildspec, body: Any, env: dict[str, str]
    ) -> tuple[dict[str, str], str]:
        """Run a phase's commands, then its `finally`; return (env after, error or '')."""
        error = ""
        for command in body.commands:
            env, rc = self._command(spec.shell, command, env)
            if rc != 0:
                error = f"Error while executing command: {command}. Reason: exit status {rc}"
                break
        for command in body.finally_commands:
            env, rc = self._command(spec.shell, command, env)
            if rc != 0 and not error:
                error = f"Error while executing command: {command}. Reason: exit status {rc}"
        return env, error

    def _command(self, shell: str, command: str, env: dict[str, str]) -> tuple[dict[str, str], int]:
        self._check()
        state = self.dir / "state"
        cwd_file = state / "cwd"
        cwd = cwd_file.read_text().strip() if cwd_file.exists() else str(self.dir / "src")
        if not Path(cwd).is_dir():
            cwd = str(self.dir / "src")
        wrapper = state / "command.sh"
        wrapper.write_text(wrapper_script(state, command))
        with contextlib.suppress(FileNotFoundError):
            (state / "env0").unlink()
        log = self._log
        assert log is not None
        log.container(f"Running command {command}")
        proc = subprocess.Popen(
            [shutil.which(shell) or shell, str(wrapper)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._proc = proc
            self._groups.append(proc.pid)
        reader = threading.Thread(target=pump, args=(proc.stdout, log.line), daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                try:
                    self._check()
                except _End:
                    kill_group(proc.pid)
                    proc.wait()
                    raise
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=WAIT_STEP_S)
        finally:
            with self._lock:
                self._proc = None
            # a background process of the command may keep its output open: don't wait for it
            reader.join(timeout=1.0)
        rc = proc.returncode
        if rc != 0:
            log.container(f"Command did not exit successfully {command} exit status {rc}")
        after = parse_env0(state / "env0")
        return (after if after is not None else env), rc

    def _finalize(self, env: dict[str, str], failed: tuple[str, str] | None) -> None:
        record = self._begin("FINALIZING")
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:  # what the commands left running in the background
            if group_alive(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        exported = []
        if env and self._spec is not None:
            names = self._spec.exported_variables
            exported = [{"name": n, "value": env.get(n, "")} for n in names]
        self._close(record, "SUCCEEDED")
        status = failed[0] if failed else "SUCCEEDED"
        with self._lock:
            self.exported = exported
            self.phases.append({"phaseType": "COMPLETED", "startTime": now()})
            self.current = "COMPLETED"
            self.status = status
            self.end_time = now()
        if self._log is not None:
            self._log.close()
        for sub in ("src", "tmp", "home"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self._ended.set()


class _Skip(Exception):
    """A phase failed in a way that goes straight to FINALIZING."""
