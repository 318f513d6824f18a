"""Declarative automation, the alternative to the git sensor.

`AutomationCondition.eager()` alone ignores code versions; adding
`code_version_changed().since_last_handled()` makes Dagster's automation sensor request an
image as soon as the loaded code location shows a new version for it. Because versions are
Merkle hashes along `base`, a base change changes the code version of every image above it
and of their Lambda functions, so one evaluation requests the whole cascade in one run.

Use it with the location builder::

    defs = build_definitions(translator=AutomatedImageAssetTranslator())

and turn on `default_automation_condition_sensor` in the UI (`dagster dev` runs it).
Limits (Dagster's): code versions change only when the location reloads (set
BUILD_ASSETS_REF to a ref the git sensor fetches, and reload, or restart), runs build what
the run's own load sees (no commit pinning, unlike the git sensor), and assets that are
already missing at the first evaluation are not requested.
"""

from dagster import AutomationCondition

from build_assets.core.targets import Target
from build_assets.core.versioning import VersionSet
from build_assets.dagster.translator import ImageAssetTranslator


def image_automation_condition() -> AutomationCondition:
    """Eager, plus: request when the asset's code version changed since it was last handled."""
    return (
        AutomationCondition.eager()
        | AutomationCondition.code_version_changed().since_last_handled()
    )


class AutomatedImageAssetTranslator(ImageAssetTranslator):
    """The default translator with `image_automation_condition()` on every image and function."""

    def get_automation_condition(
        self, target: Target, versions: VersionSet
    ) -> AutomationCondition | None:
        return image_automation_condition()
