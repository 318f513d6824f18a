"""A registry nobody answers: one wording for every command, naming the fix (issue 18).

`plan` used to say `registry 127.0.0.1:… not reachable: [Errno 111] Connection refused`
where `materialize` and `status` said what to run; now `plan` (both its cached and its full
path), `status`, `materialize` and the core's look-ups (the sensor, runs) say the same line.
Real git repositories and a real closed port; nothing else is needed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from build_assets.engine.preflight import registry_down
from build_assets.errors import UserError
from build_assets.project import Project
from tests.cli.test_plan_cli import run_cli
from tests.gitutil import seed_repo


@pytest.fixture
def dead_registry() -> str:
    """A registry prefix on a 127.0.0.1 port that was free a moment ago (nothing listens)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}/team"


def _error_lines(proc) -> list[str]:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln.removeprefix("build-assets: error: ") for ln in proc.stderr.splitlines()]


def test_plan_status_and_materialize_say_the_same_line(tmp_path: Path, dead_registry: str) -> None:
    repo = seed_repo(tmp_path / "repo")
    home = tmp_path / "state"
    expected = registry_down(dead_registry)
    assert 'eval "$(build-assets stack up)"' in expected and dead_registry in expected
    for _ in range(2):  # the first run fills the plan caches, the second takes the fast path
        plan = run_cli("plan", cwd=repo, home=home, registry=dead_registry)
        assert _error_lines(plan) == [expected]
    as_json = run_cli("plan", "--json", cwd=repo, home=home, registry=dead_registry)
    assert _error_lines(as_json) == [expected]
    status = run_cli("status", cwd=repo, home=home, registry=dead_registry)
    assert _error_lines(status) == [expected]
    materialize = run_cli("materialize", cwd=repo, home=home, registry=dead_registry)
    assert expected in _error_lines(materialize)  # with the engine's line where none runs


def test_the_core_lookups_say_it_too(tmp_path: Path, dead_registry: str) -> None:
    """What the git sensor's SkipReason and a run's failure carry."""
    repo = seed_repo(tmp_path / "repo")
    project = Project.from_env(repo=str(repo), registry=dead_registry, home=str(tmp_path / "s"))
    with pytest.raises(UserError) as err:
        project.stale(project.versions())
    assert str(err.value) == registry_down(dead_registry)
