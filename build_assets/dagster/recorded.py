"""What Dagster recorded: the code version of each asset's latest materialization.

The registry decides what is built; Dagster's staleness (the UI's "Unsynced") compares each
asset's current code version with the one its latest materialization recorded. After a
revert or a force-push back to built content those differ although every tag is in the
registry, so the selections of `materialize`, the git sensor and the automation condition
add the targets recorded at another version (`core.targets.resync_targets`): their run
records them again as `cached` (a registry look-up, no build).
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey, DagsterInstance

from build_assets.core.targets import Target


def recorded_versions(
    instance: DagsterInstance, by_key: Mapping[AssetKey, Target]
) -> dict[Target, str | None]:
    """Target -> the code version of its asset's latest materialization (None: never)."""
    if not by_key:
        return {}
    codes = instance.get_latest_materialization_code_versions(list(by_key))
    return {target: codes.get(key) for key, target in by_key.items()}
