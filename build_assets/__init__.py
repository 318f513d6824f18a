"""build-assets: content-addressed Docker / Lambda image builds as Dagster assets.

The public API, imported lazily so `build-assets plan` never pays for Dagster or boto3:

- `Project`, `Settings`: the Dagster-free core (versions, targets, the stale rule, builds);
- `ImageAssetTranslator`, `ImageBuildResource`, `build_definitions`: the Dagster layer;
- `Builder`, `BuildRequest`, `BuildResult`: the protocol a new backend implements;
- `UserError`, `ManifestError`, `GitError`, `BuildError`, `SettingsError`: errors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Project": "build_assets.project",
    "Settings": "build_assets.settings",
    "SettingsError": "build_assets.settings",
    "Target": "build_assets.core.targets",
    "ImageAssetTranslator": "build_assets.dagster.translator",
    "ImageBuildResource": "build_assets.dagster.resources",
    "build_definitions": "build_assets.dagster.location",
    "ImagesComponent": "build_assets.dagster.component",
    "Builder": "build_assets.engine.builders.base",
    "BuildRequest": "build_assets.engine.builders.base",
    "BuildResult": "build_assets.engine.builders.base",
    "UserError": "build_assets.errors",
    "ManifestError": "build_assets.errors",
    "GitError": "build_assets.errors",
    "BuildError": "build_assets.errors",
}
__all__ = [
    "BuildError",
    "BuildRequest",
    "BuildResult",
    "Builder",
    "GitError",
    "ImageAssetTranslator",
    "ImageBuildResource",
    "ImagesComponent",
    "ManifestError",
    "Project",
    "Settings",
    "SettingsError",
    "Target",
    "UserError",
    "build_definitions",
]

if TYPE_CHECKING:
    from build_assets.core.targets import Target
    from build_assets.dagster.component import ImagesComponent
    from build_assets.dagster.location import build_definitions
    from build_assets.dagster.resources import ImageBuildResource
    from build_assets.dagster.translator import ImageAssetTranslator
    from build_assets.engine.builders.base import Builder, BuildRequest, BuildResult
    from build_assets.errors import BuildError, GitError, ManifestError, UserError
    from build_assets.project import Project
    from build_assets.settings import Settings, SettingsError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'build_assets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes plus the lazy exports (`dg list components` walks `dir()`)."""
    return sorted(set(globals()) | set(__all__))
