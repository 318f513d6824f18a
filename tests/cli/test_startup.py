"""Start-up cost: the commands people run most import only what they need.

Each command runs in a fresh interpreter with `-X importtime`, whose report names every module
imported; `--help` and `status --help` must not pull in Dagster or boto3/botocore, and a
`plan --json` / `plan --since HEAD --json` answered from the version caches of a clean tree
must not even import pydantic (manifest validation) or rich (the table).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gitutil import ALL_IMAGES, seed_repo
from tests.importtime import run_importtime, top_level

HEAVY = {"dagster", "boto3", "botocore"}
VALIDATION = {"pydantic", "rich"}


def imported(*args: str, cwd: Path, home: Path) -> tuple[set[str], str]:
    """Top-level packages a `python -X importtime -m build_assets ARGS` run imported, and its
    stdout (asserting success)."""
    proc, modules = run_importtime(*args, cwd=cwd, home=home)
    return top_level(modules), proc.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


@pytest.mark.parametrize("args", [("--help",), ("status", "--help"), ("plan", "--help")])
def test_help_imports_neither_dagster_nor_boto(args: tuple[str, ...], tmp_path: Path) -> None:
    names, out = imported(*args, cwd=tmp_path, home=tmp_path / "home")
    assert "usage: build-assets" in out
    assert not names & HEAVY, sorted(names & HEAVY)


def test_every_command_is_still_listed_in_help(tmp_path: Path) -> None:
    _, out = imported("--help", cwd=tmp_path, home=tmp_path / "home")
    for command in ("plan", "status", "materialize", "bootstrap", "stack", "demo"):
        assert command in out


@pytest.mark.parametrize("args", [("bootstrap", "--help"), ("stack", "--help")])
def test_moved_commands_keep_their_options_without_their_modules(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    names, out = imported(*args, cwd=tmp_path, home=tmp_path / "home")
    assert ("--dry-run" in out) if args[0] == "bootstrap" else ("{up,down,status}" in out)
    assert not names & HEAVY, sorted(names & HEAVY)


@pytest.mark.parametrize("args", [("plan", "--json"), ("plan", "--since", "HEAD", "--json")])
def test_cached_plan_of_a_clean_tree_imports_no_validation(
    args: tuple[str, ...], repo: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first_names, first = imported(*args, cwd=repo, home=home)  # computes and caches
    assert "pydantic" in first_names  # the first run validated: the test can tell
    names, again = imported(*args, cwd=repo, home=home)
    assert json.loads(again) == json.loads(first)
    assert {img["name"] for img in json.loads(again)["images"]} == set(ALL_IMAGES)
    assert not names & (HEAVY | VALIDATION), sorted(names & (HEAVY | VALIDATION))
