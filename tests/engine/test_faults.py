"""Faults on the real local stack: killed runs, concurrent runs, a registry going away, a stack
restart and a read-only state folder. Each asserts what a user sees (exit code, one line, no
traceback) and what really happened (build records, registry tags, processes, temp folders)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from build_assets.engine import registry
from build_assets.engine.processes import clean_orphaned, owner_prefix
from build_assets.engine.records import BuildRecords
from build_assets.stack.local import StackInfo, stack_down, stack_status, stack_up
from tests.images import shell_image
from tests.polling import until as _until
from tests.stack_plugin import private_engine_stack

ROOT = Path(__file__).resolve().parents[2]


def _quiet(_: str) -> None:
    pass


def _wait_dead(pids: list[int], timeout: float) -> list[int]:
    """Block on pidfds until every pid has exited; return those still alive at the timeout."""
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    try:
        while fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(fds), [], [], deadline - time.monotonic())
            for fd in ready:
                os.close(fd)
                del fds[fd]
    finally:
        alive = list(fds.values())
        for fd in fds:
            os.close(fd)
    return alive


def _group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _processes_with_env(marker: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


# ---------------------------------------------------------------------------------------------
# process groups and temp folders (no stack needed)


def test_build_group_dies_with_its_owner_on_kill_9(tmp_path: Path) -> None:
    owner_code = textwrap.dedent(
        """
        import sys, threading
        from build_assets.engine.processes import popen_owned
        def body():
            proc = popen_owned(["bash", "-c", "sleep 300 & sleep 300 & wait"])
            print(proc.pid, flush=True)
            proc.wait()
        threading.Thread(target=body).start()
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    guard = int(owner.stdout.readline())  # type: ignore[union-attr]
    _until(lambda: len(_group_members(guard)) >= 4, 10, "guard, script and two sleeps")
    members = _group_members(guard)
    owner.kill()
    owner.wait()
    assert _wait_dead(members, 15) == []


def test_only_temp_folders_of_dead_owners_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f"{dead.pid}.12345-local-x-1-abc"
    mine = tmp_path / f"{owner_prefix()}local-y-1-def"
    foreign = tmp_path / "not-ours"
    for d in (orphan, mine, foreign):
        (d / "context").mkdir(parents=True)
    assert clean_orphaned(tmp_path) == [orphan]
    assert mine.exists() and foreign.exists() and not orphan.exists()


# ---------------------------------------------------------------------------------------------
# helpers for runs of the CLI on the stack


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repo(root: Path, *, shell: str | None = None, sleep_s: int = 6) -> Path:
    """slow-base (a RUN that takes `sleep_s` s when `shell` is given) -> app; plus other."""
    slow = f"FROM {shell}\nRUN sleep {sleep_s}\n" if shell else "FROM scratch\nCOPY pkg /pkg\n"
    files = {
        "images.yaml": (
            "images:\n"
            "  slow-base:\n    dockerfile: d/base/Dockerfile\n    source_paths: [pkg]\n"
            "  app:\n    dockerfile: d/app/Dockerfile\n    base: slow-base\n"
            "  other:\n    dockerfile: d/other/Dockerfile\n"
        ),
        "pkg/a.py": "A = 1\n",
        "d/base/Dockerfile": slow,
        "d/app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY d/app/Dockerfile /a\n",
        "d/other/Dockerfile": "FROM scratch\nCOPY d/other/Dockerfile /o\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def _env(state: Path, reg: str, stack: StackInfo | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if stack is not None:
        env.update(stack.env())
    for key in ("DAGSTER_HOME", "BUILD_ASSETS_REPO", "BUILD_ASSETS_MANIFEST"):
        env.pop(key, None)
    env.update(BUILD_ASSETS_HOME=str(state), BUILD_ASSETS_REGISTRY=reg, PYTHONPATH=str(ROOT))
    return env


def _cli(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "build_assets", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 300),
        **kw,
    )


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _assert_each_built_once(state: Path) -> None:
    """slow-base and app built exactly once over both runs; `other` (quick, independent) at
    most once: the dead run's engine may finish pushing it after its owner died, and the
    re-run then finds it in the registry (cached) instead of building it again."""
    builds = _real_builds(state)
    assert builds.get("slow-base") == 1 and builds.get("app") == 1, builds
    assert builds.get("other", 0) <= 1, builds


def _real_builds(state: Path) -> dict[str, int]:
    """Successful, not cached builds per image in the build records."""
    counts: dict[str, int] = {}
    for r in BuildRecords(state / "builds.sqlite").recent(1000):
        if r.status == "SUCCEEDED" and not r.cached:
            counts[r.image] = counts.get(r.image, 0) + 1
    return counts


def _build_log(state: Path, image: str) -> Path | None:
    logs = sorted((state / "local-builds" / "logs").glob(f"local-{image}-*.log"))
    return logs[-1] if logs else None


def _running_step(state: Path, image: str) -> bool:
    log = _build_log(state, image)
    return log is not None and "RUN sleep" in log.read_text(errors="replace")  # classic or kit


# ---------------------------------------------------------------------------------------------
# on the session stack (own state folder and registry namespace)


@pytest.mark.stack
def test_kill_9_mid_build_then_rerun_builds_each_version_once(
    stack_env: StackInfo, tmp_path: Path
) -> None:
    shell = shell_image(stack_env.registry, tmp_path, "faults-shell")
    repo = _repo(tmp_path / "repo", shell=shell)
    state = tmp_path / "state"
    reg = f"{stack_env.registry}/faults-{uuid.uuid4().hex[:8]}"
    env = _env(state, reg, stack_env)
    first = subprocess.Popen(
        [sys.executable, "-m", "build_assets", "materialize", "--all", "--repo", str(repo)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: _running_step(state, "slow-base"), 120, "the base's RUN step")
    finally:
        first.kill()
        first.wait()
    marker = f"IMAGE_REPO={reg}/slow-base"
    assert _wait_dead(_processes_with_env(marker), 20) == []  # the build script died with it
    assert registry.manifest_digest(f"{reg}/slow-base", _tag(repo, env, "slow-base")) is None

    again = _cli(["materialize", "--all", "--repo", str(repo)], env)
    assert again.returncode == 0, again.stderr
    _assert_each_built_once(state)
    assert [p.name for p in (state / "local-builds" / "tmp").iterdir()] == []  # nothing leaked

    status = _cli(["status", "--json", "--repo", str(repo)], env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["runs"] == []  # the killed run is not "in flight"
    from dagster import DagsterInstance, DagsterRunStatus

    os.environ["DAGSTER_HOME"] = str(state / "dagster")
    try:
        with DagsterInstance.get() as instance:
            runs = instance.get_runs()
            statuses = sorted(r.status.value for r in runs)
    finally:
        os.environ.pop("DAGSTER_HOME")
    assert statuses == sorted([DagsterRunStatus.FAILURE.value, DagsterRunStatus.SUCCESS.value])


def _tag(repo: Path, env: dict[str, str], image: str) -> str:
    res = _cli(["plan", "--json", "--repo", str(repo)], env)
    assert res.returncode == 0, res.stderr
    return next(i["tag"] for i in json.loads(res.stdout)["images"] if i["name"] == image)


@pytest.mark.stack
def test_two_concurrent_materialize_all_build_each_image_once(
    stack_env: StackInfo, tmp_path: Path
) -> None:
    shell = shell_image(stack_env.registry, tmp_path, "faults-shell")
    repo = _repo(tmp_path / "repo", shell=shell, sleep_s=4)
    state = tmp_path / "state"
    env = _env(state, f"{stack_env.registry}/faults-{uuid.uuid4().hex[:8]}", stack_env)
    argv = [sys.executable, "-m", "build_assets", "materialize", "--all", "--repo", str(repo)]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert _real_builds(state) == {"slow-base": 1, "app": 1, "other": 1}  # nobody was killed
    cached = [r for r in BuildRecords(state / "builds.sqlite").recent(100) if r.cached]
    assert {r.image for r in cached} == {"slow-base", "app", "other"}  # the other run's view


# ---------------------------------------------------------------------------------------------
# on a private stack (it is stopped and restarted)


@pytest.fixture
def private_stack(local_stack: StackInfo, tmp_path: Path):
    """A registry + moto of our own (the session's engine reused): safe to stop."""
    home = tmp_path / "pstack"
    info = stack_up(home, log=_quiet, docker_host=local_stack.docker_host)
    try:
        yield home, info
    finally:
        stack_down(home, log=_quiet)


@pytest.mark.stack
def test_stack_restart_keeps_addresses_and_plan_knows_what_is_built(
    private_stack, tmp_path: Path
) -> None:
    home, info = private_stack
    repo = _repo(tmp_path / "repo")
    state = tmp_path / "state"
    env = _env(state, info.registry, info)
    built = _cli(["materialize", "--all", "--repo", str(repo)], env)
    assert built.returncode == 0, built.stderr

    stack_down(home, log=_quiet)
    again = stack_up(home, log=_quiet, docker_host=info.docker_host)
    assert again.registry == info.registry
    assert again.aws_endpoint_url == info.aws_endpoint_url
    plan = _cli(["plan", "--json", "--repo", str(repo)], _env(state, again.registry, again))
    assert plan.returncode == 0, plan.stderr
    assert [i["changed"] for i in json.loads(plan.stdout)["images"]] == [False] * 3

    # the port taken by someone else while the stack is down: one line, non-zero, no move
    stack_down(home, log=_quiet)
    port = int(info.registry.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do

        def took_it() -> bool:  # the stopped registry's port is released a moment later
            try:
                squatter.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

        _until(took_it, 10, "the stopped registry's port to be free")
        squatter.listen()
        start = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "build_assets.cli.stack", "up", "--home", str(home)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert time.monotonic() - start < 10
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert f"port 127.0.0.1:{port}" in res.stderr and "ports.json" in res.stderr


def _kill_mid_build(home: Path, service: str, repo: Path, state: Path, env) -> str:
    """Run `materialize --all` in the background, SIGKILL the stack's `service` while the
    base's RUN step runs, and return the run's stderr (it must fail without a traceback)."""
    run = subprocess.Popen(
        [sys.executable, "-m", "build_assets", "materialize", "--all", "--repo", str(repo)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _until(lambda: _running_step(state, "slow-base"), 120, "the base's RUN step")
    pid = stack_status(home).services[service].pid
    assert pid
    os.kill(pid, signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0
    assert "Traceback" not in err, err
    return err


@pytest.mark.stack
def test_registry_stopped_mid_run_one_line_errors_and_rerun_recovers(
    private_stack, tmp_path: Path
) -> None:
    home, info = private_stack
    shell = shell_image(info.registry, tmp_path, "faults-shell")
    repo = _repo(tmp_path / "repo", shell=shell, sleep_s=3)
    state = tmp_path / "state"
    env = _env(state, f"{info.registry}/faults", info)
    _kill_mid_build(home, "registry", repo, state, env)

    for args in (["materialize", "--all"], ["status"]):
        start = time.monotonic()
        res = _cli([*args, "--repo", str(repo)], env, timeout=60)
        assert time.monotonic() - start < 10
        _one_line_error(res, "registry", "stack up")

    stack_up(home, log=_quiet, docker_host=info.docker_host)  # the same port again
    again = _cli(["materialize", "--all", "--repo", str(repo)], env)
    assert again.returncode == 0, again.stderr
    _assert_each_built_once(state)


@pytest.mark.stack
def test_engine_stopped_mid_build_one_line_and_rerun_recovers(
    local_stack: StackInfo, tmp_path: Path
) -> None:
    home = tmp_path / "engine-stack"  # a private dockerd (and registry, moto): safe to kill
    with private_engine_stack(home) as info:
        shell = shell_image(info.registry, tmp_path, "faults-shell")  # via the session engine
        repo = _repo(tmp_path / "repo", shell=shell, sleep_s=6)
        state = tmp_path / "state"
        env = _env(state, f"{info.registry}/faults-engine", info)
        err = _kill_mid_build(home, "docker", repo, state, env)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        base = lines[0]  # the causes come first, one line per image
        assert f"the Docker engine at {info.docker_host} stopped answering" in base, err
        assert "stack up" in base
        assert base.startswith("slow-base: build FAILED in phase BUILD: "), err
        assert lines[1] == "app: not built: base slow-base failed", err

        # while it is down, a new run says so at once, in one line
        res = _cli(["materialize", "--all", "--repo", str(repo)], env, timeout=120)
        _one_line_error(res, "Docker engine", info.docker_host, "stack up")

        stack_up(home, reuse_docker=False, log=_quiet)  # the engine again, same socket
        again = _cli(["materialize", "--all", "--repo", str(repo)], env)
        assert again.returncode == 0, again.stderr
        _assert_each_built_once(state)


@pytest.mark.stack
def test_moto_stopped_mid_run_fails_the_function_only_and_rerun_deploys(
    private_stack, tmp_path: Path
) -> None:
    home, info = private_stack
    shell = shell_image(info.registry, tmp_path, "faults-shell")
    repo = _repo(tmp_path / "repo", shell=shell, sleep_s=3)
    manifest = repo / "images.yaml"
    manifest.write_text(
        manifest.read_text().replace("base: slow-base\n", "base: slow-base\n    lambda: fn-app\n")
    )
    _git(repo, "commit", "-qam", "a function")
    state = tmp_path / "state"
    env = _env(state, f"{info.registry}/faults-moto", info)
    err = _kill_mid_build(home, "moto", repo, state, env)
    # one line on stderr for the function, saying what is unreachable and what to do
    [problem] = [ln for ln in err.splitlines() if ln.strip()]
    assert problem.startswith("lambda fn-app: deploy of "), err
    assert f"cannot reach {info.aws_endpoint_url}" in problem and "stack up" in problem
    assert _real_builds(state) == {"slow-base": 1, "app": 1, "other": 1}  # images unaffected

    # moto again, same address, empty: the function is created
    stack_up(home, log=_quiet, docker_host=info.docker_host)
    again = _cli(["materialize", "--all", "--repo", str(repo)], env)
    assert again.returncode == 0, again.stderr
    assert _real_builds(state) == {"slow-base": 1, "app": 1, "other": 1}  # nothing rebuilt
    status = _cli(["status", "--json", "--repo", str(repo)], env)
    assert status.returncode == 0, status.stderr
    assert "fn-app" in status.stdout


@pytest.mark.stack
@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_read_only_state_folder_is_one_line(stack_env: StackInfo, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    state = tmp_path / "state"
    env = _env(state, f"{stack_env.registry}/faults-ro", stack_env)
    assert _cli(["materialize", "--all", "--repo", str(repo)], env).returncode == 0
    subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(state)], check=True)
        for args in (["materialize", "--all"], ["status"], ["plan"]):
            start = time.monotonic()
            res = _cli([*args, "--repo", str(repo)], env, timeout=60)
            assert time.monotonic() - start < 10
            if args != ["materialize", "--all"] and res.returncode == 0:
                continue  # plan and status only read: read-only build records are enough
            _one_line_error(res, "state folder", "BUILD_ASSETS_HOME")
    finally:
        subprocess.run(["umount", str(state)], check=True)
