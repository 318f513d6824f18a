"""Likely secrets in a build context: the pure detector, and `plan` warning about them (on a
real git repository, as a subprocess) without failing, silenced per path by `allow_secrets`
or by leaving the file out with .dockerignore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from build_assets.core.secrets import likely_secrets, looks_like_secret, printable
from tests.gitutil import make_repo, write


@pytest.mark.parametrize(
    "path",
    [
        "app/.env",
        "app/.env.local",
        "keys/id_rsa",
        "id_ed25519",
        "tls/server.pem",
        "tls/server.key",
        "home/.aws/credentials",
        "home/.docker/config.json",
        ".netrc",
        "x/.git-credentials",
    ],
)
def test_credential_files_are_found(path: str) -> None:
    assert looks_like_secret(path)


@pytest.mark.parametrize(
    "path",
    ["app/main.py", ".env.example", "id_rsa.pub", "aws/credentials", "docs/key.md", "env.py"],
)
def test_ordinary_files_are_not(path: str) -> None:
    assert not looks_like_secret(path)


def test_token_files_need_a_token() -> None:
    files = {"a/.npmrc": b"registry=https://r.example\n", "b/.npmrc": b"//r/:_authToken=abc\n"}
    assert likely_secrets(files, read=files.__getitem__) == ["b/.npmrc"]
    assert likely_secrets(["a/.env", "b/.env", "c/x.pem"], allow=["a/.env", "*.pem"]) == ["b/.env"]
    assert printable("caf\udce9.pem") == "caf\\xe9.pem"


def _plan(repo: Path, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env.update(BUILD_ASSETS_HOME=str(home))  # no registry: plan still reads every context
    return subprocess.run(
        [sys.executable, "-m", "build_assets", "plan", "--json", "--repo", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_plan_warns_and_allow_secrets_silences(tmp_path: Path) -> None:
    manifest = "images:\n  app:\n    dockerfile: app/Dockerfile\n    source_paths: [app]\n"
    repo = make_repo(
        tmp_path / "repo",
        {
            "images.yaml": manifest,
            "app/Dockerfile": "FROM scratch\n",
            "app/main.py": "x = 1\n",
            "app/keys/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",  # tracked
        },
    )
    write(repo, {"app/.env.local": "TOKEN=1\n"})  # untracked, not ignored
    proc = _plan(repo, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("build-assets: warning: image 'app': ")
    assert "app/.env.local, app/keys/id_rsa" in line and ".dockerignore" in line
    [image] = json.loads(proc.stdout)["images"]
    assert image["warnings"] == [line.removeprefix("build-assets: warning: ")]

    write(repo, {"images.yaml": manifest + "    allow_secrets: ['app/keys/*']\n"})
    write(repo, {".dockerignore": "**/.env*\n"})  # Docker anchors patterns at the root
    proc = _plan(repo, tmp_path / "home")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "warnings" not in json.loads(proc.stdout)["images"][0]


def test_materialization_warns_in_the_run_log(tmp_path: Path) -> None:
    """The Dagster step logs the same warning before it builds (simulated builder)."""
    from dagster import DagsterInstance, materialize

    from build_assets.dagster.assets import build_images_asset
    from build_assets.dagster.resources import ImageBuildResource
    from build_assets.engine.builders.simulated import SimulatedBuilder

    repo = tmp_path / "repo"
    (repo / "app" / "keys").mkdir(parents=True)
    (repo / "app" / "Dockerfile").write_text("FROM scratch\nCOPY app /app\n")
    (repo / "app" / "keys" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (repo / "images.yaml").write_text(
        "images:\n  app:\n    dockerfile: app/Dockerfile\n    source_paths: [app]\n"
    )
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo)
    builder = SimulatedBuilder()

    class Simulated(ImageBuildResource):
        def make_builder(self):
            return builder

    resource = Simulated(repo=str(repo), registry="reg.invalid", home=str(tmp_path / "home"))
    versions = resource.project().versions()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [build_images_asset(versions, pool=None)],
            resources={"image_builds": resource},
            instance=instance,
        )
        assert result.success
        logs = [e.message for e in instance.all_logs(result.run_id)]
    assert any("app/keys/id_rsa" in (m or "") and "credentials" in (m or "") for m in logs)
