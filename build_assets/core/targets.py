"""What build-assets materializes: one target per image and one per Lambda function.

This is the one enumeration of keys in the product. The Dagster translator maps a target to
an `AssetKey` (default: its `path`); the CLI, the async launcher and the sensor name targets
by `path` or by `name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from build_assets.errors import UserError

if TYPE_CHECKING:
    from build_assets.core.versioning import ImageVersion, VersionSet

IMAGE, LAMBDA = "image", "lambda"


@dataclass(frozen=True)
class Target:
    """An image (`kind="image"`, `name` = image) or a Lambda function deployed from one."""

    kind: Literal["image", "lambda"]
    name: str
    image: str  # the image this target is built from (itself, for an image)
    version: str  # the image version this target should be at

    @property
    def path(self) -> tuple[str, str]:
        """The default asset key path: ("image", NAME) or ("lambda", FUNCTION)."""
        return (self.kind, self.name)

    @property
    def is_image(self) -> bool:
        return self.kind == IMAGE


def targets_of(versions: VersionSet) -> list[Target]:
    """Every target of a version set: images in dependency order, then their functions."""
    out = [Target(IMAGE, img.name, img.name, img.version) for img in versions]
    out += [Target(LAMBDA, fn, img.name, img.version) for img in versions for fn in img.lambdas]
    return out


def image_target(image: ImageVersion) -> Target:
    return Target(IMAGE, image.name, image.name, image.version)


def function_targets(image: ImageVersion) -> list[Target]:
    return [Target(LAMBDA, fn, image.name, image.version) for fn in image.lambdas]


def select(targets: Iterable[Target], names: Iterable[str], option: str = "--select"):
    """Targets named by image or function name (or 'image/NAME', 'lambda/FN'); one clear
    line for a name that is neither."""
    targets = list(targets)
    by_name: dict[str, list[Target]] = {}
    for t in targets:
        by_name.setdefault(t.name, []).append(t)
        by_name.setdefault("/".join(t.path), []).append(t)
    chosen: list[Target] = []
    for name in names:
        found = by_name.get(name)
        if not found:
            raise UserError(f"{option}: '{name}' is neither an image nor a Lambda function")
        chosen.extend(t for t in found if t not in chosen)
    return chosen


def stale_targets(
    targets: Iterable[Target],
    image_digests: Mapping[str, str | None],
    running: Mapping[str, str | None],
    repository_of,
) -> list[Target]:
    """The one stale rule.

    An image is stale when the tag of its current version is not in the registry (the
    registry is the truth for "built"). A function is stale when it does not run its image's
    current version pinned by digest (`repository@digest`), or that image is not built yet.
    Versions are Merkle hashes along `base`, so a base change makes the whole cascade stale.
    """
    out = []
    for t in targets:
        digest = image_digests.get(t.image)
        if t.is_image:
            if digest is None:
                out.append(t)
        elif digest is None or running.get(t.name) != f"{repository_of(t.image)}@{digest}":
            out.append(t)
    return out


def resync_targets(
    targets: Iterable[Target], recorded: Mapping[Target, str | None]
) -> list[Target]:
    """Targets whose version recorded by the last materialization (Dagster's code version)
    is not their current version: after a revert or a force-push back to built content the
    registry holds every tag, yet the records still carry the newer versions. Recording them
    again costs a registry look-up (`cached`), never a build. Never recorded: not selected."""
    return [t for t in targets if recorded.get(t) is not None and recorded[t] != t.version]
