"""The Dagster internals build-assets relies on (one module: build_assets.dagster.internals).

Fails loudly, naming the moved name, when a Dagster release changes them."""

import importlib

import pytest

from build_assets.dagster.internals import INTERNAL_NAMES


@pytest.mark.parametrize(("module", "name"), INTERNAL_NAMES)
def test_internal_name_still_exists(module: str, name: str) -> None:
    try:
        value = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"Dagster moved {module}.{name}: update build_assets/dagster/internals.py ({exc})"
        )
    assert callable(value)


def test_instance_still_offers_the_webserver_connection_pool() -> None:
    """hold_storage_connections calls it with these keywords (Dagster's webserver does too)."""
    import inspect

    from dagster import DagsterInstance

    params = inspect.signature(DagsterInstance.optimize_for_webserver).parameters
    assert {"statement_timeout", "pool_recycle", "max_overflow"} <= params.keys()


def test_no_other_module_imports_dagster_internals() -> None:
    from pathlib import Path

    root = Path(importlib.import_module("build_assets").__file__).parent
    users = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if "dagster._core" in p.read_text() and p.name != "internals.py"
    ]
    assert users == []
