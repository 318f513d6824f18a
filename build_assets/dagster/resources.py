"""The Dagster resource: the settings of one project, as configurable fields.

Every field is optional and falls back to its environment variable (`build_assets.settings`),
so the same code location runs on the local stack or on AWS CodeBuild by environment alone.
The resource only hands a `Project` to the assets and the sensor; it decides nothing.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from build_assets.engine.builders.base import Builder
from build_assets.project import Project
from build_assets.settings import Settings


class ImageBuildResource(ConfigurableResource):
    """Where the monorepo lives, which backend builds, and where images are pushed."""

    repo: str | None = Field(default=None, description="monorepo folder (BUILD_ASSETS_REPO)")
    manifest: str | None = Field(default=None, description="images.yaml (BUILD_ASSETS_MANIFEST)")
    backend: str | None = Field(
        default=None, description="local | codebuild (BUILD_ASSETS_BACKEND)"
    )
    registry: str | None = Field(
        default=None, description="registry prefix (BUILD_ASSETS_REGISTRY)"
    )
    bucket: str | None = Field(default=None, description="S3 bucket for contexts (codebuild)")
    env: str | None = Field(default=None, description="environment name (BUILD_ASSETS_ENV)")
    ref: str | None = Field(default=None, description="git ref to build (BUILD_ASSETS_REF)")
    home: str | None = Field(
        default=None, description="build records and local state (BUILD_ASSETS_HOME)"
    )
    max_concurrent_builds: int | None = Field(
        default=None, description="builds in flight at once (BUILD_ASSETS_MAX_CONCURRENT_BUILDS)"
    )
    lambda_role: str | None = Field(
        default=None,
        description="execution role for functions created on the local stack"
        " (BUILD_ASSETS_LAMBDA_ROLE)",
    )

    def settings(self) -> Settings:
        """Fields over the environment, validated once (one line naming a bad value)."""
        return Settings.resolve(
            repo=self.repo,
            manifest=self.manifest,
            backend=self.backend,
            registry=self.registry,
            bucket=self.bucket,
            env=self.env,
            ref=self.ref,
            home=self.home,
            max_concurrent_builds=self.max_concurrent_builds,
            lambda_role=self.lambda_role,
        )

    def make_builder(self) -> Builder | None:
        """A builder to use instead of the backend's (None: the project makes its own)."""
        return None

    def project(self) -> Project:
        """The project these settings describe."""
        return Project(self.settings(), builder=self.make_builder())
