"""Maps build targets (images, Lambda functions) to Dagster `AssetSpec`s: the one place for
asset keys and specs. Modelled on `DagsterDbtTranslator`: one small method per decision,
each overridable in a subclass::

    class MyTranslator(ImageAssetTranslator):
        def get_group_name(self, target, versions):
            return "images"
"""

from __future__ import annotations

import re
from typing import Any

from dagster import (
    AssetKey,
    AssetSpec,
    AutomationCondition,
    CodeReferencesMetadataValue,
    LocalFileCodeReference,
    UrlCodeReference,
)

from build_assets.core.targets import Target, targets_of
from build_assets.core.versioning import VersionSet
from build_assets.errors import UserError

_OWNER = re.compile(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


class ImageAssetTranslator:
    """Default mapping: images under ["image", NAME], Lambda functions under ["lambda", FN].

    `code_url`: a URL template for the link from each asset to its Dockerfile in the git
    host's browser, with `{path}` (repo-relative) and `{line}`, e.g.
    ``https://github.com/acme/mono/blob/main/{path}#L{line}``; without it the link is the
    local file (Dagster's "open in editor").
    """

    def __init__(self, code_url: str | None = None) -> None:
        self.code_url = code_url

    def get_asset_key(self, target: Target) -> AssetKey:
        return AssetKey(list(target.path))

    def get_group_name(self, target: Target, versions: VersionSet) -> str:
        if not target.is_image:
            return "lambda_functions"
        image = versions[target.image]
        is_base = image.name in _bases_of(versions)
        return "base_images" if is_base and not image.lambdas else "lambda_images"

    def get_description(self, target: Target, versions: VersionSet) -> str:
        image = versions[target.image]
        if not target.is_image:
            return f"AWS Lambda function {target.name}, running image {image.name}."
        told = image.spec.description or dockerfile_comment(versions, image.name)
        if told:
            return told
        paths = ", ".join(image.spec.source_paths) or "no source paths"
        base = f" on {image.base}" if image.base else ""
        return f"Docker image built from {image.spec.dockerfile}{base} with {paths}."

    def get_tags(self, target: Target, versions: VersionSet) -> dict[str, str]:
        return {}

    def get_owners(self, target: Target, versions: VersionSet) -> list[str]:
        """The manifest's `owners` of the image (a function has its image's owners)."""
        owners = list(getattr(versions[target.image].spec, "owners", ()))
        for owner in owners:
            if not _OWNER.match(owner):
                raise UserError(
                    f"{versions.manifest.source}: image '{target.image}', field 'owners':"
                    f" '{owner}' is neither an email address nor 'team:NAME'"
                )
        return owners

    def get_kinds(self, target: Target, versions: VersionSet) -> set[str]:
        return {"docker"} if target.is_image else {"lambda", "aws"}

    def get_automation_condition(
        self, target: Target, versions: VersionSet
    ) -> AutomationCondition | None:
        return None

    def get_code_version(self, target: Target, versions: VersionSet) -> str:
        return target.version

    def get_code_reference(self, target: Target, versions: VersionSet):
        """Where the Dockerfile of the target's image is: a URL from `code_url`, else the
        local file."""
        path = versions[target.image].spec.dockerfile
        if self.code_url:
            url = self.code_url.format(path=path, line=1)
            return UrlCodeReference(url=url, label=path)
        return LocalFileCodeReference(file_path=str(versions.root / path), line_number=1)

    def get_metadata(self, target: Target, versions: VersionSet) -> dict[str, Any]:
        image = versions[target.image]
        code = {
            "dagster/code_references": CodeReferencesMetadataValue(
                code_references=[self.get_code_reference(target, versions)]
            )
        }
        if not target.is_image:
            return {"function_name": target.name, "image": image.name, **code}
        return {
            "dockerfile": image.spec.dockerfile,
            "source_paths": list(image.spec.source_paths),
            "tag": image.tag,
            "context_files": image.file_count,
            **code,
        }

    def get_upstream_key(self, reference: str) -> AssetKey:
        """The key of an external base image (`FROM` outside the manifest)."""
        from build_assets.dagster.upstream import upstream_key

        return upstream_key(reference)

    def get_deps(self, target: Target, versions: VersionSet) -> list[AssetKey]:
        image = versions[target.image]
        if not target.is_image:
            return [self.get_asset_key(_image_target(versions, image.name))]
        from build_assets.dagster.upstream import external_bases

        upstream = [self.get_upstream_key(ref) for ref in external_bases(versions, image.name)]
        if image.base:
            return [self.get_asset_key(_image_target(versions, image.base)), *upstream]
        return upstream

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


def dockerfile_comment(versions: VersionSet, name: str) -> str | None:
    """The leading `#` comment block of an image's Dockerfile (no directives), if any."""
    try:
        text = (versions.root / versions[name].spec.dockerfile).read_text(errors="replace")
    except OSError:
        return None
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if not lines and re.match(r"^(syntax|escape|check)\s*=", body):
            continue  # a parser directive, not a description
        lines.append(body)
    return " ".join(x for x in lines if x).strip() or None


def _image_target(versions: VersionSet, name: str) -> Target:
    from build_assets.core.targets import image_target

    return image_target(versions[name])


_BASES: dict[int, tuple[VersionSet, frozenset[str]]] = {}


def _bases_of(versions: VersionSet) -> frozenset[str]:
    """Names of the images some other image is built on (once per version set, not per spec)."""
    cached = _BASES.get(id(versions))
    if cached is None or cached[0] is not versions:
        cached = (versions, frozenset(img.base for img in versions if img.base))
        _BASES.clear()  # one version set at a time is enough: keep no others alive
        _BASES[id(versions)] = cached
    return cached[1]
