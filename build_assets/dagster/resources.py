"""The Dagster resource: the settings of one project, as configurable fields.

Its fields are those of `RESOURCE_SETTINGS`, typed and described from the `Settings` fields of
the same names (`settings.explicit_fields`), not declared again here. Every field is optional
and falls back to its environment variable, so the same code location runs on the local stack
or on AWS CodeBuild by environment alone. The resource only hands a `Project` to the assets and
the sensor; it decides nothing.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, create_model

from build_assets.engine.builders.base import Builder
from build_assets.project import Project
from build_assets.settings import Settings, explicit_fields

# the settings a resource's config may give, in the order the UI lists them
RESOURCE_SETTINGS = (
    "repo",
    "manifest",
    "backend",
    "registry",
    "bucket",
    "env",
    "ref",
    "home",
    "max_concurrent_builds",
    "lambda_role",
)

_SettingsFields: Any = create_model(
    "_SettingsFields",
    __base__=ConfigurableResource,
    __module__=__name__,
    **{
        name: (kind | None, Field(default=None, description=description))
        for name, (kind, description) in explicit_fields(RESOURCE_SETTINGS).items()
    },
)


class ImageBuildResource(_SettingsFields):
    """Where the monorepo lives, which backend builds, and where images are pushed."""

    def settings(self) -> Settings:
        """Fields over the environment, validated once (one line naming a bad value)."""
        return Settings.resolve(**{name: getattr(self, name) for name in RESOURCE_SETTINGS})

    def make_builder(self) -> Builder | None:
        """A builder to use instead of the backend's (None: the project makes its own)."""
        return None

    def project(self) -> Project:
        """The project these settings describe."""
        return Project(self.settings(), builder=self.make_builder())
