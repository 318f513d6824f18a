"""Build leases in a real PostgreSQL server (tests/postgres_plugin.py): the store every
machine sees (`BUILD_ASSETS_LEASE_URL`), with expiry on the server's clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from build_assets.engine.lease import (
    Holder,
    LeaseStore,
    PostgresLeaseStore,
    SqliteLeaseStore,
    live_keys,
    open_store,
)
from build_assets.errors import UserError
from build_assets.settings import Settings, SettingsError
from build_assets.stack.postgres import PostgresInfo
from tests.engine.test_lease import Clock


def test_one_live_holder_across_machines(postgres_db: PostgresInfo) -> None:
    store = PostgresLeaseStore(postgres_db.url)
    assert isinstance(store, LeaseStore)
    remote = Holder("machine-a", 1, None, "run-a", "token-a")
    here = Holder.current("run-b")
    assert store.acquire("reg/x@v1", remote).acquired
    lost = store.acquire("reg/x@v1", here)
    assert not lost.acquired and lost.holder == remote
    assert store.holder("reg/x@v1") == remote
    assert live_keys(store, "reg/x@") == ["reg/x@v1"]
    assert not store.renew("reg/x@v1", here) and store.renew("reg/x@v1", remote)
    store.release("reg/x@v1", here)  # not ours: nothing happens
    assert store.holder("reg/x@v1") == remote
    store.release("reg/x@v1", remote)
    assert store.holder("reg/x@v1") is None and live_keys(store) == []
    again = store.acquire("reg/x@v1", here)
    assert again.acquired and again.previous == remote


def test_expiry_frees_a_silent_machine(postgres_db: PostgresInfo) -> None:
    clock = Clock()
    store = PostgresLeaseStore(postgres_db.url, clock=clock)
    remote = Holder("machine-a", 1, None, "run-a", "token-a")
    assert store.acquire("k", remote, ttl_s=60).acquired
    clock.now += 59
    assert not store.acquire("k", Holder.current("b"), ttl_s=60).acquired
    clock.now += 2
    assert store.holder("k") is None
    assert store.acquire("k", Holder.current("b")).acquired


def test_racing_acquirers_get_one_grant(postgres_db: PostgresInfo) -> None:
    """Eight threads (eight connections) race for one key: exactly one wins."""
    store = PostgresLeaseStore(postgres_db.url)
    holders = [Holder(f"m{i}", i + 1, None, f"run-{i}", f"t{i}") for i in range(8)]
    barrier = threading.Barrier(len(holders))
    grants = []

    def race(h: Holder) -> None:
        barrier.wait()
        grants.append(PostgresLeaseStore(postgres_db.url).acquire("race", h))

    threads = [threading.Thread(target=race, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [g for g in grants if g.acquired]
    assert len(winners) == 1
    assert all(g.holder == winners[0].holder for g in grants)
    assert store.holder("race") == winners[0].holder


def test_setting_chooses_the_store(tmp_path: Path, postgres_db: PostgresInfo) -> None:
    env = {"BUILD_ASSETS_LEASE_URL": postgres_db.url, "BUILD_ASSETS_HOME": str(tmp_path)}
    settings = Settings.resolve(env)
    assert isinstance(open_store(settings.lease_url, settings.home), PostgresLeaseStore)
    assert isinstance(open_store(None, tmp_path), SqliteLeaseStore)
    with pytest.raises(SettingsError, match="BUILD_ASSETS_LEASE_URL: expected a postgresql://"):
        Settings.resolve({"BUILD_ASSETS_LEASE_URL": "mysql://x@db/y"})


def test_unreachable_server_is_one_line(postgres_db: PostgresInfo) -> None:
    url = postgres_db.url.replace(f":{postgres_db.port}/", ":1/")
    with pytest.raises(UserError, match=r"lease store: cannot connect to postgresql://…@127"):
        PostgresLeaseStore(url).acquire("k", Holder.current())
