"""Environment-driven settings shared by the CLI, the builders and the Dagster layer.

Every value has an environment variable; Dagster resources use these as their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_REPO = "BUILD_ASSETS_REPO"
ENV_MANIFEST = "BUILD_ASSETS_MANIFEST"
ENV_BACKEND = "BUILD_ASSETS_BACKEND"
ENV_REGISTRY = "BUILD_ASSETS_REGISTRY"
ENV_HOME = "BUILD_ASSETS_HOME"
ENV_ENV = "BUILD_ASSETS_ENV"

BACKENDS = ("local", "codebuild")


def state_home() -> Path:
    """Folder for build records and the local stack (BUILD_ASSETS_HOME, default ~/.build-assets)."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".build-assets").expanduser()


@dataclass(frozen=True)
class Settings:
    """Resolved settings (explicit arguments win over the environment)."""

    repo: Path
    manifest: Path
    backend: str
    registry: str | None
    home: Path
    env: str

    @classmethod
    def from_env(
        cls,
        repo: str | Path | None = None,
        manifest: str | Path | None = None,
        backend: str | None = None,
        registry: str | None = None,
    ) -> Settings:
        repo_path = Path(repo or os.environ.get(ENV_REPO) or ".").expanduser().resolve()
        manifest_path = Path(manifest or os.environ.get(ENV_MANIFEST) or repo_path / "images.yaml")
        if not manifest_path.is_absolute():
            manifest_path = (Path.cwd() / manifest_path).resolve()
        return cls(
            repo=repo_path,
            manifest=manifest_path,
            backend=backend or os.environ.get(ENV_BACKEND) or "local",
            registry=registry or os.environ.get(ENV_REGISTRY) or None,
            home=state_home(),
            env=os.environ.get(ENV_ENV) or "dev",
        )
