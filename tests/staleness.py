"""Dagster's staleness as the UI shows it ("Unsynced" = STALE): GraphQL
`assetNodes { staleStatus }` answered by dagster_graphql against an in-process workspace
that loads a given `Definitions` object (the supported route; the resolver is internal)."""

from __future__ import annotations

from dagster import DagsterInstance, Definitions

DEFS: Definitions | None = None  # the workspace's loadable target (set per call)

_QUERY = "{ assetNodes { assetKey { path } isMaterializable staleStatus } }"


def stale_statuses(instance: DagsterInstance, defs: Definitions) -> dict[str, str]:
    """'image/NAME' / 'lambda/FN' -> staleStatus (FRESH, STALE, MISSING) of every
    materializable asset of `defs`, as the webserver would answer."""
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster_graphql.test.utils import execute_dagster_graphql

    global DEFS
    DEFS = defs
    origin = LoadableTargetOrigin(module_name=__name__, attribute="DEFS")
    try:
        with in_process_test_workspace(instance, origin) as context:
            result = execute_dagster_graphql(context, _QUERY)
    finally:
        DEFS = None
    assert not result.errors, result.errors
    return {
        "/".join(n["assetKey"]["path"]): n["staleStatus"]
        for n in result.data["assetNodes"]
        if n["isMaterializable"]
    }
