"""Declarative automation, the alternative to the git sensor.

`AutomationCondition.eager()` alone ignores code versions; adding
`code_version_changed().since_last_handled()` makes Dagster's automation sensor request an
image as soon as the loaded code location shows a new version for it. Because versions are
Merkle hashes along `base`, a base change changes the code version of every image above it
and of their Lambda functions, so one evaluation requests the whole cascade in one run.

`code_version_changed()` compares with the previous evaluation, not with what was recorded:
after a revert (or a force-push back to built content) reloaded between two evaluations, or
a run recorded by another process (`build-assets materialize`, a click in the UI), the
loaded code versions can equal the previous evaluation's while the latest materializations
carry other ones, and the UI shows those assets Unsynced with nothing requested.
`RecordedVersionDiffers` is true exactly then (Dagster's recorded code version, read with
`instance.get_latest_materialization_code_versions`, differs from the loaded one); the run it
requests finds every tag in the registry and records the images as `cached`, no build.

Use it with the location builder::

    defs = build_definitions(translator=AutomatedImageAssetTranslator())

which adds `build_assets_automation`, an automation sensor evaluated in the code server
(`RecordedVersionDiffers` is Python, not one of Dagster's serializable conditions); turn it
on in the UI (`dagster dev` runs it). Limits (Dagster's): code versions change only when the
location reloads (set BUILD_ASSETS_REF to a ref the git sensor fetches, and reload, or
restart), runs build what the run's own load sees (no commit pinning, unlike the git
sensor), and assets that are already missing at the first evaluation are not requested.
"""

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationContext,
    AutomationResult,
    DefaultSensorStatus,
)

from build_assets.core.targets import Target
from build_assets.core.versioning import VersionSet
from build_assets.dagster.translator import ImageAssetTranslator

SENSOR_NAME = "build_assets_automation"


class RecordedVersionDiffers(AutomationCondition[AssetKey]):
    """True for an asset whose latest materialization recorded another code version than the
    loaded one (never materialized: false, `eager()` handles missing assets)."""

    def __eq__(self, other: object) -> bool:  # no state: every instance is the same condition
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self).__qualname__)

    @property
    def name(self) -> str:
        return "recorded_version_differs"

    @property
    def description(self) -> str:
        return "the latest materialization recorded another code version"

    def evaluate(self, context: AutomationContext) -> AutomationResult:  # type: ignore[override]
        current = context.asset_graph.get(context.key).code_version
        instance = context.asset_graph_view.instance
        recorded = instance.get_latest_materialization_code_versions([context.key])
        was = recorded.get(context.key)
        differs = was is not None and was != current
        true = context.candidate_subset if differs else context.get_empty_subset()
        return AutomationResult(context, true)


def image_automation_condition() -> AutomationCondition:
    """Eager, plus: request when the asset's code version changed since it was last handled,
    or when it newly differs from the code version its latest materialization recorded."""
    return (
        AutomationCondition.eager()
        | AutomationCondition.code_version_changed().since_last_handled()
        | RecordedVersionDiffers().newly_true()
    )


def build_automation_sensor(
    name: str = SENSOR_NAME, default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED
) -> AutomationConditionSensorDefinition:
    """The automation sensor of every asset, evaluated in the code server (needed by the
    Python condition `RecordedVersionDiffers`)."""
    return AutomationConditionSensorDefinition(
        name,
        target=AssetSelection.all(),
        use_user_code_server=True,
        default_status=default_status,
        description="Requests images and functions whose code version changed (automation).",
    )


class AutomatedImageAssetTranslator(ImageAssetTranslator):
    """The default translator with `image_automation_condition()` on every image and function."""

    automation_sensor = True  # build_definitions adds `build_automation_sensor()`

    def get_automation_condition(
        self, target: Target, versions: VersionSet
    ) -> AutomationCondition | None:
        return image_automation_condition()
