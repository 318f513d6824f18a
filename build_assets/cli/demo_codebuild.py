"""`build-assets demo --backend codebuild`: what the demo needs beyond the local backend.

`prepare_codebuild` does what the seed's infrastructure code did before its first build
(`bootstrap`, then the Lambda functions); `CodeBuildDemoResource` builds through the local
CodeBuild; `project_builds` is the seed's verification question (`list-builds-for-project`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from build_assets.dagster.resources import ImageBuildResource

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64  # what a function runs before its first build


class CodeBuildDemoResource(ImageBuildResource):
    """The codebuild backend on the local stack: polls every second (local builds take
    seconds, not minutes). ECR answers through the stack's registry, which mirrors every push
    into moto's ECR (`stack.ecr_registry`)."""

    def make_builder(self) -> Any:
        from build_assets.aws.clients import bucket_name, make_session
        from build_assets.engine.builders.codebuild import CodeBuildBuilder

        s = self.settings()
        session = make_session()
        return CodeBuildBuilder(
            bucket_name(session, s.env, s.bucket),
            s.env,
            session=session,
            poll_interval=1.0,
            max_poll_interval=5.0,
        )


def prepare_codebuild(repo: Path, env: str, registry: str) -> None:
    """`bootstrap --env ENV` for `repo`, then its Lambda functions where missing, on a
    placeholder image in `registry` (build-assets only ever updates functions on this
    backend)."""
    from build_assets.aws.bootstrap import bootstrap
    from build_assets.aws.bootstrap_inputs import images_from_manifest
    from build_assets.aws.clients import make_client
    from build_assets.core.manifest import load_manifest
    from build_assets.engine.deploy import (
        current_image,
        deploy_function,
        ensure_local_execution_role,
    )
    from build_assets.engine.scheduler import repository_for

    images, overrides = images_from_manifest(load_manifest(repo / "images.yaml", repo))
    bootstrap(images, overrides, env=env)
    manifest = load_manifest(repo / "images.yaml", repo)
    client = make_client("lambda")
    role = ensure_local_execution_role(make_client("iam"))
    for name, spec in manifest.images.items():
        placeholder = f"{repository_for(registry, name, manifest, env)}@{PLACEHOLDER_DIGEST}"
        for fn in spec.lambdas:
            if current_image(client, fn) is None:
                deploy_function(client, fn, placeholder, create_if_missing=True, role_arn=role)


def project_builds(projects: list[str]) -> dict[str, list[str]]:
    """Build ids of each CodeBuild project, newest first (`list_builds_for_project`)."""
    from build_assets.aws.clients import make_client

    client = make_client("codebuild")
    return {
        p: client.list_builds_for_project(projectName=p, sortOrder="DESCENDING")["ids"]
        for p in projects
    }
