"""Live progress: the event stream of the scheduler and `BuildRun` (simulated builder), and
`build-assets materialize` on the real local stack — under a pseudo-terminal (tmux: the screen
is read mid-build), with a plain pipe (one line per state change), its Dagster run log (the plan
table, one `[NAME]` line per change, duration metadata) and `status --watch` of a run started
by another process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from build_assets.core.versioning import VersionSet, worktree_versions
from build_assets.engine import progress
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.engine.records import SUCCEEDED, BuildRecord, BuildRecords
from build_assets.engine.scheduler import BuildScheduler
from tests.images import shell_image

ROOT = Path(__file__).resolve().parents[2]
CASCADE = {"root": None, "mid": "root", "leaf": "mid", "side": "root", "solo": None}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def _cascade(root: Path) -> VersionSet:
    files = {"images.yaml": "images:\n"}
    for name, base in CASCADE.items():
        head = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" if base else "FROM scratch\n"
        files[f"{name}/Dockerfile"] = head + f"COPY {name}/Dockerfile /{name}\n"
        files["images.yaml"] += f"  {name}:\n    dockerfile: {name}/Dockerfile\n"
        if base:
            files["images.yaml"] += f"    base: {base}\n"
    return worktree_versions(_write(root, files))


def _states(events: list[progress.Progress], name: str) -> list[str]:
    return [e.label for e in events if e.name == name]


# -- the event stream (simulated builder) --------------------------------------------------------


def test_scheduler_emits_each_state_change_once_in_order(tmp_path: Path) -> None:
    versions = _cascade(tmp_path / "repo")
    builder = SimulatedBuilder({"root": 0.2, "mid": 0.05}, default_duration=0.01, fail={"mid"})
    events: list[progress.Progress] = []
    sched = BuildScheduler(builder, "reg", on_progress=events.append, on_event=lambda m: None)
    outcomes = {o.name: o.status for o in sched.run(versions, CASCADE)}

    assert outcomes == {
        "root": "built",
        "mid": "failed",
        "leaf": "blocked",
        "side": "built",
        "solo": "built",
    }
    assert _states(events, "root") == ["queued", "preparing", "building", "done"]
    assert _states(events, "mid") == [
        "waiting for root",
        "preparing",
        "building",
        "failed: build FAILED",
    ]
    assert _states(events, "leaf") == ["waiting for mid", "blocked: base mid failed"]
    # every event is a change: no two consecutive events of a target are the same
    for name in CASCADE:
        labels = _states(events, name)
        assert all(a != b for a, b in zip(labels, labels[1:], strict=False)), labels
    # a dependent starts only after its base is done
    at = {(e.name, e.state): e.at for e in events}
    assert at[("mid", progress.PREPARING)] >= at[("root", progress.DONE)]
    # the simulated 0.2 s of root are spent building
    assert sched.progress.durations("root")["build_s"] >= 0.19


def test_concurrency_limit_shows_queued_and_counts_queue_wait(tmp_path: Path) -> None:
    versions = _cascade(tmp_path / "repo")
    builder = SimulatedBuilder({"root": 0.15, "solo": 0.15}, default_duration=0.01)
    events: list[progress.Progress] = []
    sched = BuildScheduler(
        builder, "reg", max_concurrent=1, on_progress=events.append, on_event=lambda m: None
    )
    list(sched.run(versions, ["root", "solo", "mid"]))
    # root and solo are both ready at once; one waits for the single build slot
    waits = {n: sched.progress.durations(n)["queue_wait_s"] for n in ("root", "solo")}
    assert max(waits.values()) >= 0.14 and min(waits.values()) < 0.05, waits
    # mid waited for its base (not for a slot), then may queue for the slot solo holds
    assert _states(events, "mid")[0] == "waiting for root"


def test_cached_image_and_cancelled_build(tmp_path: Path) -> None:
    versions = _cascade(tmp_path / "repo")
    builder = SimulatedBuilder(default_duration=30.0)
    req = BuildScheduler(builder, "reg").request_for(versions["solo"], None)
    builder.pushed[req.image_uri] = "sha256:" + "0" * 64
    events: list[progress.Progress] = []
    sched = BuildScheduler(builder, "reg", on_progress=events.append, on_event=lambda m: None)
    run = sched.run(versions, ["solo", "root"])
    assert next(run).name == "solo"  # cached at once; root is building for 30 s
    run.close()  # what a Ctrl-C does to the step's generator
    assert _states(events, "solo") == ["queued", "cached"]
    assert _states(events, "root")[-1] == "cancelled: sim-1"
    assert builder.cancelled == ["sim-1"]


def test_estimates_are_the_median_of_previous_real_builds(tmp_path: Path) -> None:
    versions = _cascade(tmp_path / "repo")
    records = BuildRecords(tmp_path / "builds.sqlite")
    for seconds, cached in ((10.0, False), (30.0, False), (20.0, False), (0.0, True)):
        records.add(
            BuildRecord.for_image(
                versions["root"], "reg", SUCCEEDED, cached=cached, duration_s=seconds
            )
        )
    records.add(BuildRecord.for_image(versions["solo"], "other-reg", SUCCEEDED, duration_s=99.0))
    assert progress.load_estimates(records.path, "reg", ["root", "solo"]) == {"root": 20.0}

    events: list[progress.Progress] = []
    sched = BuildScheduler(
        SimulatedBuilder(),
        "reg",
        records=records,
        on_progress=events.append,
        on_event=lambda m: None,
    )
    list(sched.run(versions, ["root", "solo"]))
    assert {e.estimate_s for e in events if e.name == "root"} == {20.0}
    assert {e.estimate_s for e in events if e.name == "solo"} == {None}


MARKERS = [("LOGIN", 5.0), ("BUILD", 6.0), ("PUSH", 12.0), ("DONE", 13.0)]  # script times


@pytest.mark.parametrize(
    ("seen", "states", "build_s", "push_s"),
    [
        # a poll saw it preparing at 10 (the BUILD marker was written at 6, read too late)
        (
            (progress.PREPARING, "LOGIN", 10.0),
            [progress.PREPARING, progress.BUILDING, progress.PUSHING, progress.DONE],
            2,
            1,
        ),
        # a poll saw it pushing: the earlier phases are not replayed backwards
        ((progress.PUSHING, "", 12.5), [progress.PUSHING, progress.DONE], 0, 0.5),
    ],
)
def test_replayed_phases_stay_in_order_and_in_time(seen, states, build_s, push_s) -> None:
    events: list[progress.Progress] = []
    tracker = progress.ProgressTracker(events.append, clock=lambda: 99.0)
    state, detail, at = seen
    tracker.set("app", state, detail, at=at)
    tracker.replay("app", MARKERS)
    assert [e.state for e in events] == states
    assert [e.at for e in events] == sorted(e.at for e in events)
    durations = tracker.durations("app")
    assert (durations["build_s"], durations["push_s"]) == (build_s, push_s)


def test_log_line_round_trip() -> None:
    cases = [
        progress.Progress("base-x", progress.IMAGE, progress.WAITING, "base-y"),
        progress.Progress(
            "app", progress.IMAGE, progress.BUILDING, "BUILD", estimate_s=41.6, log_url="file:///l"
        ),
        progress.Progress("fn", progress.LAMBDA, progress.DONE, "updated"),
        progress.Progress(
            "b", progress.IMAGE, progress.FAILED, "build FAILED in BUILD", log_url="https://x/y?z=1"
        ),
        progress.Progress("c", progress.IMAGE, progress.QUEUED),
    ]
    for ev in cases:
        back = progress.Progress.parse(ev.line(), at=5.0, run_id="r")
        assert back is not None, ev.line()
        expected_est = round(ev.estimate_s) if ev.estimate_s is not None else None
        assert (back.name, back.kind, back.state, back.detail, back.log_url) == (
            ev.name,
            ev.kind,
            ev.state,
            ev.detail,
            ev.log_url,
        )
        assert back.estimate_s == expected_est
    assert cases[1].line() == "[app] image building: BUILD · est. 42s · log file:///l"
    assert progress.Progress.parse("Started execution of step", at=0.0) is None
    assert progress.Progress.parse("[x] image exploded", at=0.0) is None


def test_listeners_see_events_only_inside_their_block() -> None:
    seen: list[str] = []
    ev = progress.Progress("a", progress.IMAGE, progress.DONE)
    progress.publish(ev)
    with progress.listening(lambda e: seen.append(e.name)):
        progress.publish(ev)
        with progress.listening(lambda e: seen.append("inner")):
            progress.publish(ev)
    progress.publish(ev)
    assert seen == ["a", "a", "inner"]


# -- the CLI on the real local stack ---------------------------------------------------------------


def _slow_repo(root: Path, shell: str, sleep_s: int) -> Path:
    """slow-base (a RUN of `sleep_s` s, never in the layer cache) -> app, app2."""
    token = uuid.uuid4().hex  # a fresh RUN line: the engine's layer cache cannot skip it
    on_base = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
    return _write(
        root,
        {
            "images.yaml": (
                "images:\n"
                "  slow-base:\n    dockerfile: d/base/Dockerfile\n    source_paths: [pkg]\n"
                "  app:\n    dockerfile: d/app/Dockerfile\n    base: slow-base\n"
                "  app2:\n    dockerfile: d/app2/Dockerfile\n    base: slow-base\n"
            ),
            "pkg/a.py": "A = 1\n",
            "d/base/Dockerfile": f"FROM {shell}\nCOPY pkg /pkg\nRUN sleep {sleep_s} # {token}\n",
            "d/app/Dockerfile": on_base + "COPY d/app/Dockerfile /a\n",
            "d/app2/Dockerfile": on_base + "COPY d/app2/Dockerfile /a\n",
        },
    )


def _env(stack, state: Path, namespace: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(stack.env())
    for key in ("DAGSTER_HOME", "BUILD_ASSETS_REPO", "BUILD_ASSETS_MANIFEST", "CI"):
        env.pop(key, None)
    env.update(
        BUILD_ASSETS_HOME=str(state),
        BUILD_ASSETS_REGISTRY=f"{stack.registry}/{namespace}",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def _until(
    check: Callable[[], str | None],
    timeout: float,
    what: str,
    last: Callable[[], str] = lambda: "",
) -> str:
    """Poll `check` until it returns text (the screen, the output), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.2)  # polling a screen: the process under test is not ours to signal
    pytest.fail(f"timed out waiting for {what}; last seen:\n{last()}")


class Tmux:
    """A private tmux server (its own socket) running one command in a 160x40 terminal."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = str(tmp_path / "tmux.sock")

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items() if k.isidentifier())
        script = f"env -i {exports} {command}; echo EXIT=$?; sleep 600"
        self("new-session", "-d", "-x", "160", "-y", "40", "-s", "t", "bash", "-c", script)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, ok: Callable[[str], bool], timeout: float, what: str) -> str:
        """The screen, once `ok(screen)` holds (polled), else the test fails."""

        seen = [""]

        def check() -> str | None:
            seen[0] = self.screen()
            return seen[0] if ok(seen[0]) else None

        return _until(check, timeout, what, lambda: seen[0])

    def stop(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _row(screen: str, name: str) -> str | None:
    for line in screen.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == name:
            return cells[2]
    return None


@pytest.fixture
def tmux(tmp_path: Path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed")
        pytest.skip("tmux is not installed")
    t = Tmux(tmp_path)
    yield t
    t.stop()


@pytest.mark.stack
def test_live_table_in_a_terminal(local_stack, tmux: Tmux, tmp_path: Path) -> None:
    shell = shell_image(local_stack.registry, tmp_path, "progress-shell")
    repo = _slow_repo(tmp_path / "repo", shell, sleep_s=8)
    env = _env(local_stack, tmp_path / "state", f"progress-tty-{uuid.uuid4().hex[:8]}")
    tmux.start(f"{_quote(sys.executable)} -m build_assets materialize --repo {repo}", env)

    building = lambda s: (_row(s, "slow-base") or "").startswith("building")  # noqa: E731
    screen = tmux.wait_for(building, 120, "slow-base building on the screen")
    assert _row(screen, "app") == "waiting for slow-base", screen
    assert _row(screen, "app2") == "waiting for slow-base", screen
    assert "STEP_START" not in screen and "RUN_START" not in screen  # no Dagster event lines

    final = tmux.wait_for(lambda s: "EXIT=" in s, 180, "the end")
    assert "EXIT=0" in final, final
    for name in ("slow-base", "app", "app2"):
        assert _row(final, name) == "done", final
    assert "(3/3 finished)" in final
    assert "built" in final and "success" in final


@pytest.mark.stack
def test_ctrl_c_cancels_the_builds_in_flight(local_stack, tmux: Tmux, tmp_path: Path) -> None:
    shell = shell_image(local_stack.registry, tmp_path, "progress-shell")
    repo = _slow_repo(tmp_path / "repo", shell, sleep_s=60)
    env = _env(local_stack, tmp_path / "state", f"progress-int-{uuid.uuid4().hex[:8]}")
    tmux.start(f"{_quote(sys.executable)} -m build_assets materialize --repo {repo}", env)
    building = lambda s: (_row(s, "slow-base") or "").startswith("building")  # noqa: E731
    tmux.wait_for(building, 120, "slow-base building")
    started = time.monotonic()
    tmux("send-keys", "-t", "t", "C-c")
    final = tmux.wait_for(lambda s: "EXIT=" in s, 60, "the exit")
    assert time.monotonic() - started < 30  # not the 60 s of the RUN step
    assert "EXIT=130" in final, final
    joined = " ".join(final.split())
    assert "cancelled: slow-base" in joined, final
    # ours ends with one line; Dagster's compute-log helper process (same process group, so it
    # gets the terminal's SIGINT too) may print its own traceback: not ours to silence
    assert "build_assets/" not in final and "KeyboardInterrupt" not in final.split("^C")[0]


@pytest.mark.stack
def test_plain_output_run_log_and_duration_metadata(local_stack, tmp_path: Path) -> None:
    shell = shell_image(local_stack.registry, tmp_path, "progress-shell")
    repo = _slow_repo(tmp_path / "repo", shell, sleep_s=3)
    state = tmp_path / "state"
    env = _env(local_stack, state, f"progress-plain-{uuid.uuid4().hex[:8]}")
    cmd = [sys.executable, "-m", "build_assets", "materialize", "--repo", str(repo)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln[:2].isdigit() and ln[2] == ":"]
    by_target: dict[str, list[str]] = {}
    for ln in lines:
        name, _, label = ln.split(" ", 1)[1].partition(": ")
        by_target.setdefault(name, []).append(label.split(" in ")[0].split(" log ")[0])
    assert set(by_target) == {"slow-base", "app", "app2"}, res.stdout
    assert by_target["app"][0] == "waiting for slow-base"
    assert by_target["slow-base"][0] == "queued" and by_target["slow-base"][-1] == "done"
    assert "building" in by_target["slow-base"]
    for name in ("app", "app2"):  # quick builds too: the script's time-stamped phase markers
        assert by_target[name][-3:] == ["building", "pushing", "done"], by_target[name]
    for name, labels in by_target.items():  # one line per change: never the same state twice
        assert len(labels) == len(set(labels)), (name, labels)
    assert "\x1b[" not in res.stdout  # no redraws, no colours in a pipe
    assert "STEP_START" not in res.stdout + res.stderr

    # --json stays one JSON object
    res = subprocess.run([*cmd, "--all", "--json"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["cached"] == ["slow-base", "app", "app2"]

    # the run view: the plan table, then [NAME] lines; durations as float metadata
    from dagster import AssetKey, DagsterInstance, FloatMetadataValue

    os.environ["DAGSTER_HOME"] = str(state / "dagster")
    try:
        with DagsterInstance.get() as instance:
            records = instance.get_run_records(limit=2)
            first = records[-1].dagster_run.run_id
            entries = instance.all_logs(first)
            messages = [e.user_message for e in entries]
            [observed] = [e.asset_observation for e in entries if e.asset_observation]
            mats = [e.asset_materialization for e in entries if e.asset_materialization]
            mat = next(m for m in mats if m.asset_key == AssetKey(["image", "slow-base"]))
            quick = next(m for m in mats if m.asset_key == AssetKey(["image", "app"]))
    finally:
        os.environ.pop("DAGSTER_HOME", None)
    plan = next(m for m in messages if m.startswith("Plan at"))
    assert plan.endswith(": 3 to build, 0 cached, 0 blocked") and "|" not in plan  # one line
    table = observed.metadata["plan"].value  # markdown, rendered by the run view
    assert "| slow-base | image |" in table and "| build |" in table and plan in table
    assert observed.asset_key == AssetKey(["image", "slow-base"])  # the run's first target
    assert any(m.startswith("[slow-base] image building") for m in messages)
    assert any(m == "[app] image waiting for slow-base" for m in messages)
    assert messages.index(plan) < min(i for i, m in enumerate(messages) if m.startswith("[app]"))
    meta = mat.metadata
    for key in ("queue_wait_s", "build_s", "push_s"):
        assert isinstance(meta[key], FloatMetadataValue), key
    assert meta["build_s"].value >= 3.0  # the RUN sleep
    assert quick.metadata["build_s"].value > 0 and quick.metadata["push_s"].value > 0


@pytest.mark.stack
def test_status_watch_follows_a_run_started_elsewhere(local_stack, tmp_path: Path) -> None:
    shell = shell_image(local_stack.registry, tmp_path, "progress-shell")
    repo = _slow_repo(tmp_path / "repo", shell, sleep_s=6)
    state = tmp_path / "state"
    env = _env(local_stack, state, f"progress-watch-{uuid.uuid4().hex[:8]}")
    env["DAGSTER_HOME"] = str(state / "dagster")
    (state / "dagster").mkdir(parents=True)
    (state / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    out = tmp_path / "materialize.out"
    cmd = [sys.executable, "-m", "build_assets"]
    with open(out, "w") as fh:
        runner = subprocess.Popen(
            [*cmd, "materialize", "--repo", str(repo)], env=env, stdout=fh, stderr=fh
        )
    try:
        _until(
            lambda: "slow-base: building" if "slow-base: building" in out.read_text() else None,
            120,
            "the other process building",
        )
        watch = subprocess.run(
            [*cmd, "status", "--watch", "--repo", str(repo)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        runner.wait(timeout=180)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    text = watch.stdout
    assert "slow-base: building" in text  # the state it was in when the watch began
    assert "slow-base: done" in text and "app: done" in text and "app2: done" in text
    assert text.strip().splitlines()[-1].endswith(": SUCCESS")
