"""Build leases: one holder per (repository, version), liveness, expiry, and the scheduler
waiting for another process's build instead of building the same version again."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from build_assets.core.versioning import VersionSet, worktree_versions
from build_assets.engine.builders.simulated import SimulatedBuilder
from build_assets.engine.lease import Heartbeat, Holder, LeaseStore, SqliteLeaseStore
from build_assets.engine.scheduler import BUILT, CACHED, BuildScheduler, lease_key


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _dead_holder() -> Holder:
    """The identity of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"])
    proc.wait()
    me = Holder.current("dead-run")
    return Holder(me.host, proc.pid, me.start_time, "dead-run", "dead-token")


def test_one_live_holder_then_release(tmp_path: Path) -> None:
    store = SqliteLeaseStore(tmp_path / "leases.sqlite")
    assert isinstance(store, LeaseStore)
    a, b = Holder.current("run-a"), Holder.current("run-b")
    first = store.acquire("reg/x@v1", a)
    assert first.acquired and first.previous is None
    second = store.acquire("reg/x@v1", b)
    assert not second.acquired and second.holder == a
    assert store.holder("reg/x@v1") == a
    assert store.acquire("reg/x@v2", b).acquired  # another version is another lease
    assert not store.renew("reg/x@v1", b)
    assert store.renew("reg/x@v1", a)

    store.release("reg/x@v1", b)  # not b's: nothing happens
    assert store.holder("reg/x@v1") == a
    store.release("reg/x@v1", a)
    assert store.holder("reg/x@v1") is None
    again = store.acquire("reg/x@v1", b)
    assert again.acquired and again.previous == a  # b learns who built it last


def test_dead_process_is_taken_over_at_once(tmp_path: Path) -> None:
    store = SqliteLeaseStore(tmp_path / "leases.sqlite")
    dead = _dead_holder()
    assert store.acquire("k", dead).acquired
    assert store.holder("k") is None  # its pid is gone: not live
    grant = store.acquire("k", Holder.current("run-b"))
    assert grant.acquired and grant.previous == dead


def test_expired_holder_on_another_host_is_taken_over(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteLeaseStore(tmp_path / "leases.sqlite", clock=clock)
    remote = Holder("some-other-host", 1, None, "remote-run", "remote-token")
    assert store.acquire("k", remote, ttl_s=60).acquired
    clock.now += 59
    assert not store.acquire("k", Holder.current("b"), ttl_s=60).acquired  # pid unknown: expiry
    assert store.renew("k", remote, ttl_s=60)  # heartbeat pushes the expiry back
    clock.now += 59
    assert store.holder("k") == remote
    clock.now += 2
    assert store.holder("k") is None
    assert store.acquire("k", Holder.current("b")).acquired


def test_heartbeat_renews_from_a_thread(tmp_path: Path) -> None:
    renewed = threading.Event()

    class Watched(SqliteLeaseStore):
        def renew(self, key: str, holder: Holder, ttl_s: float = 120.0) -> bool:
            ok = super().renew(key, holder, ttl_s)
            renewed.set()
            return ok

    store = Watched(tmp_path / "leases.sqlite")
    me = Holder.current("r")
    store.acquire("k", me, ttl_s=0.2)
    beat = Heartbeat(store, me, ttl_s=0.2)
    beat.add("k")
    try:
        assert renewed.wait(10)
    finally:
        beat.stop()
    assert store.holder("k") == me


def _repo(root: Path) -> VersionSet:
    (root / "base").mkdir(parents=True)
    (root / "base" / "Dockerfile").write_text("FROM scratch\n")
    (root / "app").mkdir()
    (root / "app" / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (root / "images.yaml").write_text(
        "images:\n  base:\n    dockerfile: base/Dockerfile\n"
        "  app:\n    dockerfile: app/Dockerfile\n    base: base\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return worktree_versions(root)


class GatedBuilder(SimulatedBuilder):
    """Builds finish only once `gate` is set (a build in flight for as long as a test likes)."""

    def __init__(self, gate: threading.Event, pushed: dict[str, str]) -> None:
        super().__init__()
        self.gate = gate
        self.pushed = pushed  # shared: the registry both processes push to

    def poll(self, handles):
        self.gate.wait(30)
        return super().poll(handles)


def test_second_scheduler_waits_and_reuses_the_first_ones_push(tmp_path: Path) -> None:
    versions = _repo(tmp_path / "repo")
    leases = SqliteLeaseStore(tmp_path / "leases.sqlite")
    registry: dict[str, str] = {}
    gate, a_building, b_waiting, a_done = (threading.Event() for _ in range(4))
    builder_a = GatedBuilder(gate, registry)
    builder_b = GatedBuilder(threading.Event(), registry)

    def on_a(msg: str) -> None:
        if "building" in msg:
            a_building.set()

    def on_b(msg: str) -> None:
        if "waiting for it" in msg:
            b_waiting.set()

    sched_a = BuildScheduler(builder_a, "reg", leases=leases, run_id="run-A", on_event=on_a)
    sched_b = BuildScheduler(
        builder_b,
        "reg",
        leases=leases,
        run_id="run-B",
        on_event=on_b,
        sleep=lambda s: a_done.wait(30),  # B looks again once A is over
    )
    results: dict[str, list] = {}

    def run(label: str, sched: BuildScheduler) -> None:
        results[label] = list(sched.run(versions, ["base", "app"]))

    ta = threading.Thread(target=run, args=("a", sched_a))
    ta.start()
    assert a_building.wait(30)
    tb = threading.Thread(target=run, args=("b", sched_b))
    tb.start()
    assert b_waiting.wait(30)
    req = sched_a.request_for(versions["base"], None)
    assert leases.holder(lease_key(req)).run_id == "run-A"
    gate.set()
    ta.join(30)
    a_done.set()
    tb.join(30)

    assert [(o.name, o.status) for o in results["a"]] == [("base", BUILT), ("app", BUILT)]
    b = {o.name: o for o in results["b"]}
    assert b["base"].status == CACHED and "run run-A" in (b["base"].reason or "")
    assert b["app"].status == CACHED  # base was A's: app's lease was A's too, or already pushed
    assert builder_b.started == []  # B built nothing
    assert len(builder_a.started) == 2
    assert leases.holder(lease_key(req)) is None  # every lease released


def test_scheduler_takes_over_from_a_dead_holder_and_builds(tmp_path: Path) -> None:
    versions = _repo(tmp_path / "repo")
    leases = SqliteLeaseStore(tmp_path / "leases.sqlite")
    gate = threading.Event()
    gate.set()
    builder = GatedBuilder(gate, {})
    sched = BuildScheduler(builder, "reg", leases=leases, run_id="run-C")
    key = lease_key(sched.request_for(versions["base"], None))
    assert leases.acquire(key, _dead_holder()).acquired  # a crashed run left its lease
    outcomes = list(sched.run(versions, ["base"]))
    assert [(o.name, o.status) for o in outcomes] == [("base", BUILT)]
    assert leases.holder(key) is None
