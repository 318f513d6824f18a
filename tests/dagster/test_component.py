"""`build_assets.ImagesComponent` through the real `dg` CLI (dagster-dg-cli) in a dg project
made on disk, on the real local stack: list, scaffold, check (good and bad attributes), list
definitions, and launch real builds whose checks run in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from build_assets.engine.registry import manifest_digest
from tests.gitutil import ALL_IMAGES, LAMBDA_CREATE, LAMBDA_HARMONIZE, seed_repo

pytestmark = pytest.mark.stack

PYPROJECT = """\
[project]
name = "imgproj"
version = "0.1.0"
requires-python = ">=3.11"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "imgproj"
"""
DEFINITIONS = """\
from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    return load_from_defs_folder(path_within_project=Path(__file__).parent.parent.parent)
"""


def make_project(root: Path) -> Path:
    """A dg project like `create-dagster project` makes, using this Python environment."""
    pkg = root / "src" / "imgproj"
    (pkg / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "defs" / "__init__.py").write_text("")
    (pkg / "definitions.py").write_text(DEFINITIONS)
    return root


def dg(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dg", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def test_component_with_the_dg_cli(stack_env, tmp_path: Path) -> None:
    mono = seed_repo(tmp_path / "mono")
    project = make_project(tmp_path / "proj")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    registry = f"{stack_env.registry}/dg{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "DAGSTER_HOME": str(home),
        "NO_COLOR": "1",
    }
    env.pop("BUILD_ASSETS_REPO", None)

    listed = dg(project, "list", "components", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "build_assets.ImagesComponent" in {c["key"] for c in json.loads(listed.stdout)["items"]}

    made = dg(
        project,
        "scaffold",
        "defs",
        "build_assets.ImagesComponent",
        "images",
        "--repo",
        str(mono),
        "--registry",
        registry,
        env=env,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    defs_yaml = project / "src/imgproj/defs/images/defs.yaml"
    text = defs_yaml.read_text()
    assert text.startswith("type: build_assets.ImagesComponent") and f"repo: {mono}" in text

    checked = dg(project, "check", "defs", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # translation attributes reach every asset
    defs_yaml.write_text(
        text.replace(
            f"  registry: {registry}\n",
            f"  registry: {registry}\n  translation:\n    owners: [team:platform]\n"
            "    tags: {team: platform}\n",
        )
    )
    out = dg(project, "list", "defs", "--json", env=env)
    assert out.returncode == 0, out.stderr
    defs = json.loads(out.stdout)
    keys = {a["asset_key"] for a in defs["assets"]}
    assert keys == {f"image/{i}" for i in ALL_IMAGES} | {
        f"lambda/{LAMBDA_HARMONIZE}",
        f"lambda/{LAMBDA_CREATE}",
    }
    assert all(a["owners"] == [{"team": "platform"}] for a in defs["assets"])
    checks = {c["key"] for c in defs["asset_checks"]}
    assert f"image/{ALL_IMAGES[0]}:in_registry" in checks
    assert f"lambda/{LAMBDA_HARMONIZE}:runs_materialized_image" in checks
    assert [s["name"] for s in defs["schedules"]] == ["image_checks_schedule"]

    # a bad attribute: one message naming the field, non-zero exit
    good = defs_yaml.read_text()
    defs_yaml.write_text(good.replace(f"  repo: {mono}\n", f"  repo: {mono}\n  backend: k8s\n"))
    bad = dg(project, "check", "defs", env=env)
    assert bad.returncode != 0
    assert "attributes.backend: unknown backend 'k8s'" in bad.stdout + bad.stderr
    defs_yaml.write_text(
        good.replace("  translation:\n", "  sensor: {interval_seconds: 0}\n  translation:\n")
    )
    bad = dg(project, "check", "defs", env=env)
    assert bad.returncode != 0 and "attributes.sensor" in bad.stdout + bad.stderr
    defs_yaml.write_text(good)

    # real builds on the local stack; the images' checks run in the same run
    launched = dg(project, "launch", "--assets", "key:image/*", env=env)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    with DagsterInstance.from_config(str(home)) as instance:
        for name in ALL_IMAGES:
            event = instance.get_latest_materialization_event(AssetKey(["image", name]))
            assert event is not None, name
            meta = event.asset_materialization.metadata
            tag, digest = meta["tag"].value, meta["digest"].value
            assert manifest_digest(f"{registry}/{name}", tag) == digest
            check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [AssetCheckKey(AssetKey(["image", name]), "in_registry")]
            )
            evaluation = list(check.values())[0]
            assert evaluation.status.value == "SUCCEEDED", name


def test_cli_selection_by_group(stack_env, tmp_path: Path) -> None:
    """`dagster asset materialize --select 'group:base_images'` builds exactly the bases."""
    mono = seed_repo(tmp_path / "mono")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BUILD_ASSETS_REPO": str(mono),
        "BUILD_ASSETS_REGISTRY": f"{stack_env.registry}/sel{uuid.uuid4().hex[:8]}",
    }
    done = subprocess.run(
        ["dagster", "asset", "materialize", "-m", "build_assets.definitions"]
        + ["--select", "group:base_images"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with DagsterInstance.from_config(str(home)) as instance:
        built = {
            name
            for name in ALL_IMAGES
            if instance.get_latest_materialization_event(AssetKey(["image", name]))
        }
    assert built == {n for n in ALL_IMAGES if n.startswith("base-")}
