"""Maps manifest images to Dagster `AssetSpec`s; subclass it to change keys, groups or tags.

Modelled on `DagsterDbtTranslator`: every decision is one small method.
"""

from __future__ import annotations

from dagster import AssetKey, AssetSpec

from build_assets.core.versioning import ImageVersion, VersionSet


class ImageAssetTranslator:
    """Default mapping: images under ["image", NAME], Lambda functions under ["lambda", FN]."""

    def get_image_key(self, image: ImageVersion) -> AssetKey:
        return AssetKey(["image", image.name])

    def get_lambda_key(self, function: str, image: ImageVersion) -> AssetKey:
        return AssetKey(["lambda", function])

    def get_image_group(self, image: ImageVersion, versions: VersionSet) -> str:
        is_base = any(other.base == image.name for other in versions)
        return "base_images" if is_base and not image.lambdas else "lambda_images"

    def get_lambda_group(self, function: str, image: ImageVersion) -> str:
        return "lambda_functions"

    def get_description(self, image: ImageVersion) -> str:
        paths = ", ".join(image.spec.source_paths) or "no source paths"
        base = f" on {image.base}" if image.base else ""
        return f"Docker image built from {image.spec.dockerfile}{base} with {paths}."

    def get_tags(self, image: ImageVersion) -> dict[str, str]:
        return {}

    def get_owners(self, image: ImageVersion) -> list[str]:
        return []

    def get_image_spec(self, image: ImageVersion, versions: VersionSet) -> AssetSpec:
        deps = [self.get_image_key(versions[image.base])] if image.base else []
        return AssetSpec(
            key=self.get_image_key(image),
            deps=deps,
            description=self.get_description(image),
            group_name=self.get_image_group(image, versions),
            code_version=image.version,
            kinds={"docker"},
            tags=self.get_tags(image),
            owners=self.get_owners(image),
            skippable=True,
            metadata={
                "dockerfile": image.spec.dockerfile,
                "source_paths": list(image.spec.source_paths),
                "tag": image.tag,
                "context_files": image.file_count,
            },
        )

    def get_lambda_spec(self, function: str, image: ImageVersion) -> AssetSpec:
        return AssetSpec(
            key=self.get_lambda_key(function, image),
            deps=[self.get_image_key(image)],
            description=f"AWS Lambda function {function}, running image {image.name}.",
            group_name=self.get_lambda_group(function, image),
            code_version=image.version,
            kinds={"lambda"},
            tags=self.get_tags(image),
            owners=self.get_owners(image),
            skippable=True,
            metadata={"function_name": function, "image": image.name},
        )

    def specs(self, versions: VersionSet) -> list[AssetSpec]:
        """Every spec of a version set: images in dependency order, then their functions."""
        out = [self.get_image_spec(img, versions) for img in versions]
        for img in versions:
            out.extend(self.get_lambda_spec(fn, img) for fn in img.lambdas)
        return out
