"""Pytest plugin: a session-wide local build stack (Docker engine, registry, moto).

Register with `pytest_plugins = ["tests.stack_plugin"]` (or `-p tests.stack_plugin`). The
`local_stack` fixture starts the stack under a temporary home, points DOCKER_HOST and the
registry at it for the whole session (AWS_* only per test, through `stack_env`) and stops what
it started at the end. Outside CI a missing binary skips the tests that need the stack; under
CI (CI=true) it fails them, so a missing install step shows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_assets.engine.builders.local import LocalDockerBuilder
from build_assets.errors import UserError
from build_assets.stack.local import StackInfo, stack_down, stack_up


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The running stack; os.environ carries its env() for the session, restored afterwards."""
    home = tmp_path_factory.mktemp("stack")
    try:
        info = stack_up(home, log=_quiet, docker_host=os.environ.get("DOCKER_HOST"))
    except UserError as e:
        stack_down(home, log=_quiet)
        if os.environ.get("CI"):
            pytest.fail(f"local stack did not start: {e}", pytrace=False)
        pytest.skip(f"local stack unavailable: {e}")
    # AWS_* stay per test (`stack_env`): the moto-only plugin owns them for the session.
    env = {k: v for k, v in info.env().items() if not k.startswith("AWS_")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield info
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack_down(home, log=_quiet)


@pytest.fixture
def local_builder(local_stack: StackInfo, tmp_path: Path) -> LocalDockerBuilder:
    """A LocalDockerBuilder on the session stack, with logs under this test's tmp_path."""
    return LocalDockerBuilder(tmp_path / "builder", registry_host=local_stack.registry)


@pytest.fixture
def stack_env(local_stack: StackInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StackInfo:
    """The stack's whole environment (AWS_* included) for one test, with its own state home."""
    for key, value in local_stack.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "state"))
    return local_stack


@contextlib.contextmanager
def private_engine_stack(home: Path) -> Iterator[StackInfo]:
    """A stack of our own under `home` with its own dockerd (safe to stop or kill); skips the
    test on a machine that cannot run a second engine. Stopped (and cleaned up) on exit."""
    try:
        info = stack_up(home, reuse_docker=False, log=_quiet)
    except Exception as e:  # noqa: BLE001 - a machine that cannot run a second engine
        stack_down(home, log=_quiet)
        pytest.skip(f"cannot start a private dockerd: {e}")
    try:
        yield info
    finally:
        stack_down(home, log=_quiet)
