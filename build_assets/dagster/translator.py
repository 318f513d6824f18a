"""Maps build targets (images, Lambda functions) to Dagster `AssetSpec`s: the one place for
asset keys and specs. Modelled on `DagsterDbtTranslator`: one small method per decision,
each overridable in a subclass::

    class MyTranslator(ImageAssetTranslator):
        def get_group_name(self, target, versions):
            return "images"
"""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetSpec, AutomationCondition

from build_assets.core.targets import Target, targets_of
from build_assets.core.versioning import VersionSet


class ImageAssetTranslator:
    """Default mapping: images under ["image", NAME], Lambda functions under ["lambda", FN]."""

    def get_asset_key(self, target: Target) -> AssetKey:
        return AssetKey(list(target.path))

    def get_group_name(self, target: Target, versions: VersionSet) -> str:
        if not target.is_image:
            return "lambda_functions"
        image = versions[target.image]
        is_base = any(other.base == image.name for other in versions)
        return "base_images" if is_base and not image.lambdas else "lambda_images"

    def get_description(self, target: Target, versions: VersionSet) -> str:
        image = versions[target.image]
        if not target.is_image:
            return f"AWS Lambda function {target.name}, running image {image.name}."
        paths = ", ".join(image.spec.source_paths) or "no source paths"
        base = f" on {image.base}" if image.base else ""
        return f"Docker image built from {image.spec.dockerfile}{base} with {paths}."

    def get_tags(self, target: Target, versions: VersionSet) -> dict[str, str]:
        return {}

    def get_owners(self, target: Target, versions: VersionSet) -> list[str]:
        return []

    def get_kinds(self, target: Target, versions: VersionSet) -> set[str]:
        return {"docker"} if target.is_image else {"lambda", "aws"}

    def get_automation_condition(
        self, target: Target, versions: VersionSet
    ) -> AutomationCondition | None:
        return None

    def get_code_version(self, target: Target, versions: VersionSet) -> str:
        return target.version

    def get_metadata(self, target: Target, versions: VersionSet) -> dict[str, Any]:
        image = versions[target.image]
        if not target.is_image:
            return {"function_name": target.name, "image": image.name}
        return {
            "dockerfile": image.spec.dockerfile,
            "source_paths": list(image.spec.source_paths),
            "tag": image.tag,
            "context_files": image.file_count,
        }

    def get_deps(self, target: Target, versions: VersionSet) -> list[AssetKey]:
        image = versions[target.image]
        if not target.is_image:
            return [self.get_asset_key(_image_target(versions, image.name))]
        if image.base:
            return [self.get_asset_key(_image_target(versions, image.base))]
        return []

    def get_asset_spec(self, target: Target, versions: VersionSet) -> AssetSpec:
        """The spec of one target, assembled from the decisions above."""
        return AssetSpec(
            key=self.get_asset_key(target),
            deps=self.get_deps(target, versions),
            description=self.get_description(target, versions),
            group_name=self.get_group_name(target, versions),
            code_version=self.get_code_version(target, versions),
            kinds=self.get_kinds(target, versions),
            tags=self.get_tags(target, versions),
            owners=self.get_owners(target, versions),
            automation_condition=self.get_automation_condition(target, versions),
            skippable=True,
            metadata=self.get_metadata(target, versions),
        )

    # -- helpers built on the decisions ---------------------------------------------------------

    def specs(self, versions: VersionSet) -> list[AssetSpec]:
        """Every spec of a version set: images in dependency order, then their functions."""
        return [self.get_asset_spec(t, versions) for t in targets_of(versions)]

    def keys(self, versions: VersionSet) -> dict[AssetKey, Target]:
        """Asset key -> target, for every target of `versions` (in `targets_of` order)."""
        return {self.get_asset_key(t): t for t in targets_of(versions)}


def _image_target(versions: VersionSet, name: str) -> Target:
    from build_assets.core.targets import image_target

    return image_target(versions[name])
