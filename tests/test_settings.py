"""One settings object: explicit values over the environment over defaults, validated once."""

from pathlib import Path

import pytest

from build_assets.settings import Settings, SettingsError


def test_explicit_wins_over_environment_wins_over_default(tmp_path: Path) -> None:
    env = {"BUILD_ASSETS_REGISTRY": "env.example/ns/", "BUILD_ASSETS_ENV": "prod"}
    s = Settings.resolve(env, repo=tmp_path, registry=None)
    assert s.registry == "env.example/ns"  # trailing slash normalised
    assert s.env == "prod" and s.backend == "local" and s.git_branch == "main"
    assert s.manifest == tmp_path.resolve() / "images.yaml"
    explicit = Settings.resolve(env, repo=tmp_path, registry="cli.example", env="qa")
    assert explicit.registry == "cli.example" and explicit.env == "qa"


def test_concurrency_default_depends_on_the_backend(tmp_path: Path) -> None:
    assert Settings.resolve({}, repo=tmp_path).concurrency == 4
    assert Settings.resolve({"BUILD_ASSETS_BACKEND": "codebuild"}, repo=tmp_path).concurrency == 20
    env = {"BUILD_ASSETS_MAX_CONCURRENT_BUILDS": "7"}
    assert Settings.resolve(env, repo=tmp_path).concurrency == 7


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BUILD_ASSETS_BACKEND": "kubernetes"}, "BUILD_ASSETS_BACKEND: unknown backend"),
        ({"BUILD_ASSETS_MAX_CONCURRENT_BUILDS": "many"}, "BUILD_ASSETS_MAX_CONCURRENT_BUILDS"),
        ({"BUILD_ASSETS_SENSOR_INTERVAL": "-5"}, "BUILD_ASSETS_SENSOR_INTERVAL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env, message, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.resolve(env, repo=tmp_path)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_missing_registry_says_how_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="stack up"):
        Settings.resolve({}, repo=tmp_path).require_registry()


def test_no_module_outside_settings_reads_build_assets_variables() -> None:
    import importlib

    root = Path(importlib.import_module("build_assets").__file__).parent
    readers = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if p.name != "settings.py"
        and (
            'os.environ.get("BUILD_ASSETS' in p.read_text()
            or 'os.getenv("BUILD_ASSETS' in p.read_text()
        )
    ]
    assert readers == []
