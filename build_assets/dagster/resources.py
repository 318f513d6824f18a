"""The Dagster resource that says where the monorepo is and how images are built.

Every field defaults to its environment variable (see `settings.py`), so the same code
location runs on the local embedded stack or on AWS CodeBuild by environment alone.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from build_assets.engine.builders.base import Builder
from build_assets.errors import UserError
from build_assets.settings import BACKENDS, Settings

ENV_MAX_BUILDS = "BUILD_ASSETS_MAX_CONCURRENT_BUILDS"
ENV_LAMBDA_ROLE = "BUILD_ASSETS_LAMBDA_ROLE"


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
    max_concurrent_builds: int | None = Field(
        default=None, description="builds in flight at once (BUILD_ASSETS_MAX_CONCURRENT_BUILDS)"
    )
    lambda_role: str | None = Field(
        default=None, description="execution role for functions created on the local stack"
    )

    def settings(self) -> Settings:
        s = Settings.from_env(self.repo, self.manifest, self.backend, self.registry)
        if s.backend not in BACKENDS:
            raise UserError(
                f"BUILD_ASSETS_BACKEND: unknown backend '{s.backend}' (use local or codebuild)"
            )
        return s

    def registry_prefix(self) -> str:
        registry = self.settings().registry
        if not registry:
            raise UserError(
                'BUILD_ASSETS_REGISTRY is not set: run `eval "$(build-assets stack up)"` for the'
                " local stack, or set it to <account>.dkr.ecr.<region>.amazonaws.com"
            )
        return registry

    def concurrency(self) -> int:
        if self.max_concurrent_builds:
            return self.max_concurrent_builds
        default = 4 if self.settings().backend == "local" else 20
        return int(os.environ.get(ENV_MAX_BUILDS) or default)

    def make_builder(self) -> Builder:
        """The builder of the configured backend."""
        settings = self.settings()
        if settings.backend == "codebuild":
            from build_assets.aws.clients import aws_errors, bucket_name, make_session
            from build_assets.aws.codebuild import CodeBuildBuilder

            env = self.env or settings.env
            session = make_session()
            with aws_errors("resolve", "the context bucket"):
                bucket = bucket_name(session, env, self.bucket)  # same default as bootstrap
            return CodeBuildBuilder(bucket=bucket, env=env, session=session)
        from build_assets.engine.builders.local import LocalDockerBuilder

        return LocalDockerBuilder(max_parallel=self.concurrency())

    def create_missing_functions(self) -> bool:
        """On the local stack, functions are created on first deploy; on AWS they must exist."""
        return self.settings().backend == "local"
