"""The runtime manifest model (`core.model`): the raw document gives the same model as
validation, and the rules the fast paths and the full path share answer alike."""

from __future__ import annotations

import copy
import itertools
import pickle
import posixpath
import subprocess
import sys

import pytest

from build_assets.core import safeyaml
from build_assets.core.manifest import parse_manifest
from build_assets.core.model import DOCKERIGNORE, ImageSpec, Manifest, normalise_path, tag_for

TEXT = """naming: {repository: "team/{image}-{env}"}
dockerignore: .common-ignore
images:
  base:
    dockerfile: ./base/Dockerfile
    source_paths: [shared/, ./lib]
    build_args: {FLAG: true, N: 3, X: 1.5}
    codebuild: {compute_type: BUILD_GENERAL1_LARGE}
  app:
    dockerfile: app/Dockerfile
    base: base
    dockerignore: false
    lambda: app-fn
    codebuild_project: "{image}-builder-{env}"
  tool:
    dockerfile: tool/Dockerfile
    base: public.ecr.aws/lambda/python:3.12
    dockerignore: tool/.ignore
    repository: tools/{image}
"""


def test_the_raw_document_gives_the_validated_model() -> None:
    """What `plan`'s fast paths build from the YAML document is what validation returns."""
    doc = safeyaml.load(TEXT, "images.yaml")
    raw = Manifest.from_document(doc, "images.yaml")
    assert raw == parse_manifest(TEXT, "images.yaml")
    assert raw.images["base"].source_paths == ("shared", "lib")
    assert raw.images["base"].build_args == {"FLAG": "true", "N": "3", "X": "1.5"}
    assert raw.images["app"].lambdas == ("app-fn",)


@pytest.mark.parametrize(
    "doc",
    [
        {"images": {"a": {"dockerfile": 3}}},
        {"images": {"a": {"dockerfile": "D", "source_paths": "one"}}},
        {"images": {"a": {"dockerfile": "D", "codebuild": {"unknown": 1}}}},
        {"images": {"a": {"dockerfile": "D", "dockerignore": True}}},
        {"images": {"a": {}}},
        {"images": ["a"]},
        ["images"],
    ],
)
def test_a_malformed_document_is_refused_not_guessed(doc: object) -> None:
    """The fast paths then take the full path, whose validation names the problem."""
    with pytest.raises((TypeError, KeyError, ValueError)):
        Manifest.from_document(doc)


def test_rules_of_names_tags_and_bases() -> None:
    model = parse_manifest(TEXT, "images.yaml")
    assert model.order() == ["base", "app", "tool"] and model.dependents("base") == ["app"]
    assert model.repository_name("base", "dev") == "team/base-dev"
    assert model.repository_name("tool", "dev") == "tools/tool"
    assert model.repository_name("not-in-it", "prod") == "team/not-in-it-prod"
    assert model.repository_uri("host:5000/ns/", "app", "dev") == "host:5000/ns/team/app-dev"
    assert model.project_name("app", "dev") == "app-builder-dev"
    assert model.project_template("app") == "{image}-builder-{env}"
    assert model.project_template("base") is None  # the default
    assert model.external_base("tool") == "public.ecr.aws/lambda/python:3.12"
    assert model.external_base("app") is None
    assert tag_for("0123456789abcdef" * 4) == "git-0123456789ab"


def test_the_ignore_file_in_force() -> None:
    model = parse_manifest(TEXT, "images.yaml")
    everything = {"base/Dockerfile.dockerignore", DOCKERIGNORE}.__contains__
    assert model.ignore_file_in_force("app", everything) is None  # `false`: none
    assert model.ignore_file_in_force("tool", everything) == "tool/.ignore"  # its own
    assert model.ignore_file_in_force("base", everything) == ".common-ignore"  # manifest-wide
    plain = Manifest.from_document({"images": {"a": {"dockerfile": "a/Dockerfile"}}})
    own = "a/Dockerfile" + DOCKERIGNORE
    assert plain.ignore_file_in_force("a", {own, DOCKERIGNORE}.__contains__) == own
    assert plain.ignore_file_in_force("a", {DOCKERIGNORE}.__contains__) == DOCKERIGNORE
    assert plain.ignore_file_in_force("a", set().__contains__) is None


def test_the_model_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import build_assets.core.model as m;"
        " print(sorted(n for n in sys.modules if n.startswith(('build_assets', 'pydantic',"
        " 'yaml'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ["build_assets", "build_assets.core", "build_assets.core.model"]
    assert out.stdout.strip() == repr([*loaded, "build_assets.core.record"])


def test_normalised_paths_are_normpaths_of_relative_ones() -> None:
    """The quick test that skips `normpath` for most paths changes no answer: every string
    of up to 5 of these pieces."""
    pieces = ["a", ".", "..", "/", "b.c", ".h", "\\", "x"]
    for k in range(1, 6):
        for combo in itertools.product(pieces, repeat=k):
            path = "".join(combo)
            want = path
            if not path.startswith("/") and "\\" not in path:
                norm = posixpath.normpath(path)
                want = path if norm.startswith("..") else norm
            assert normalise_path(path) == want, path


def test_model_objects_are_frozen_values() -> None:
    model = parse_manifest(TEXT, "images.yaml")
    spec = model.images["base"]
    with pytest.raises(AttributeError):
        spec.base = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(model)) == model == copy.deepcopy(model)
    moved = spec.replace(base="app")
    assert moved.base == "app" and spec.base is None and moved != spec
    assert ImageSpec("D", ("a",)) == ImageSpec(dockerfile="D", source_paths=("a",))
    with pytest.raises(TypeError, match="unknown fields"):
        ImageSpec(dockerfile="D", sources=())
    with pytest.raises(TypeError, match="required"):
        ImageSpec()
    assert vars(spec.codebuild)["compute_type"] == "BUILD_GENERAL1_LARGE"
