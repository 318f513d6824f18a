"""`images.yaml`: the typed model (order, dependents, what is a build input) and every
validation problem as one line naming the file, the image and the field, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_assets.core.manifest import Manifest, load_manifest, parse_manifest
from build_assets.errors import ManifestError, UserError
from tests.gitutil import ALL_IMAGES, BASES, CREATE, HARMONIZE, SEED_MANIFEST, write

SRC = "images.yaml"
D = "    dockerfile: Dockerfile\n"  # a valid entry body


def parse(text: str, existing: set[str] | None = None) -> Manifest:
    """parse_manifest, with `existing` as the paths that exist (None: no path check)."""
    exists = None if existing is None else (lambda p: p in existing)
    return parse_manifest(text, SRC, exists)


def problems(text: str, existing: set[str] | None = None) -> list[str]:
    """The lines of the ManifestError that `text` must raise."""
    with pytest.raises(ManifestError) as info:
        parse(text, existing)
    err = info.value
    assert isinstance(err, UserError) and err.exit_code == 2
    assert str(err) == "\n".join(err.lines)
    assert all("\n" not in line for line in err.lines)
    return err.lines


# --- the model ----------------------------------------------------------------------------------


def test_seed_manifest_model() -> None:
    m = parse(SEED_MANIFEST)
    assert list(m.images) == ALL_IMAGES
    assert m.order() == ALL_IMAGES
    harmonize = m.images[HARMONIZE]
    assert harmonize.base == "base-receipt-agent"
    assert harmonize.lambdas == ("metadata-harmonizer-dev-harmonize-metadata",)  # str -> tuple
    assert harmonize.build_args == {"HANDLER": "harmonize_metadata.handler"}
    assert harmonize.context_roots() == [
        "infra/metadata_harmonizer_step_functions/lambdas/Dockerfile",
        "infra/metadata_harmonizer_step_functions/lambdas",
        "receipt_agent",
    ]
    assert m.images["base-receipt-dynamo"].base is None
    assert "receipt_agent/pyproject.toml" in m.all_paths()
    assert m.all_paths() == sorted(set(m.all_paths()))


def test_dependents_are_transitive_and_in_dependency_order() -> None:
    m = parse(SEED_MANIFEST)
    assert m.dependents("base-receipt-dynamo") == [BASES[1], BASES[2], HARMONIZE, CREATE]
    assert m.dependents("base-receipt-label") == [BASES[2], HARMONIZE, CREATE]
    assert m.dependents("base-receipt-agent") == [HARMONIZE]
    assert m.dependents(HARMONIZE) == []


def test_order_puts_bases_first_and_is_stable_otherwise() -> None:
    m = parse(
        "images:\n"
        f"  app:\n{D}    base: mid\n"
        f"  other:\n{D}"
        f"  mid:\n{D}    base: root\n"
        f"  root:\n{D}"
        f"  zz:\n{D}    base: root\n"
    )
    assert m.order() == ["root", "mid", "app", "other", "zz"]


def test_lambda_is_one_name_or_a_list() -> None:
    m = parse(f"images:\n  a:\n{D}    lambda: fn-a\n  b:\n{D}    lambda: [fn-b1, fn_b2]\n")
    assert m.images["a"].lambdas == ("fn-a",)
    assert m.images["b"].lambdas == ("fn-b1", "fn_b2")


def test_build_args_scalars_become_strings() -> None:
    m = parse(f"images:\n  a:\n{D}    build_args: {{FLAG: true, N: 3, F: 1.5, S: text}}\n")
    assert m.images["a"].build_args == {"FLAG": "true", "N": "3", "F": "1.5", "S": "text"}


def test_identity_is_what_is_built_and_nothing_else() -> None:
    """Only the Dockerfile path, source_paths (as a set), build_args and base are build
    inputs: the deploy target and CodeBuild settings are not."""
    one = parse(
        "images:\n  root:\n" + D + "  a:\n" + D + "    base: root\n"
        "    source_paths: [src/, lib, src]\n"
        "    build_args: {B: '2', A: '1'}\n"
        "    lambda: fn-one\n"
        "    codebuild: {compute_type: BUILD_GENERAL1_LARGE, timeout_minutes: 30}\n"
    ).images["a"]
    two = parse(
        "images:\n  root:\n" + D + "  a:\n" + D + "    base: root\n"
        "    source_paths: [lib, src]\n"
        "    build_args: {A: '1', B: '2'}\n"
        "    lambda: [fn-two, fn-three]\n"
    ).images["a"]
    assert one.identity() == two.identity()
    assert one.identity() == {
        "dockerfile": "Dockerfile",
        "source_paths": ["lib", "src"],
        "build_args": {"A": "1", "B": "2"},
        "base": "root",
    }
    plain = parse(f"images:\n  a:\n{D}").images["a"].identity()
    for body in (
        f"{D}    build_args: {{A: '1'}}\n",
        f"{D}    source_paths: [lib]\n",
        "    dockerfile: Other.Dockerfile\n",
    ):
        assert parse(f"images:\n  a:\n{body}").images["a"].identity() != plain, body


def test_codebuild_options() -> None:
    spec = parse(
        f"images:\n  a:\n{D}    codebuild: {{compute_type: BUILD_GENERAL1_LARGE,"
        " timeout_minutes: 60, image: aws/codebuild/standard:7.0}\n"
    ).images["a"]
    assert spec.codebuild is not None
    assert (spec.codebuild.compute_type, spec.codebuild.timeout_minutes) == (
        "BUILD_GENERAL1_LARGE",
        60,
    )


@pytest.mark.parametrize("name", ["a", "a1", "base-api", "base-receipt-agent", "1x"])
def test_good_names(name: str) -> None:
    assert list(parse(f"images:\n  {name}:\n{D}").images) == [name]


# --- one line per problem, naming file, image and field ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"images:\n  a:\n{D}    colour: blue\n",
            ["images.yaml: image 'a': unknown key 'colour'"],
            id="unknown-key",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    codebuild: {{colour: x}}\n",
            ["images.yaml: image 'a', field 'codebuild': unknown key 'colour'"],
            id="unknown-codebuild-key",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    source_path: [src]\n",
            ["images.yaml: image 'a': unknown key 'source_path'"],
            id="unknown-key-near-miss",
        ),
        pytest.param(
            "images:\n  a:\n    source_paths: [src]\n",
            ["images.yaml: image 'a', field 'dockerfile': required"],
            id="dockerfile-required",
        ),
        pytest.param(
            "images:\n  a:\n    dockerfile: [Dockerfile]\n",
            ["images.yaml: image 'a', field 'dockerfile': Input should be a valid string"],
            id="dockerfile-type",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    source_paths: src\n",
            ["images.yaml: image 'a', field 'source_paths': Input should be a valid tuple"],
            id="source-paths-type",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    build_args: {{A: null}}\n",
            ["images.yaml: image 'a', field 'build_args.A': Input should be a valid string"],
            id="build-arg-null",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    codebuild: {{timeout_minutes: 1}}\n",
            [
                "images.yaml: image 'a', field 'codebuild.timeout_minutes': Input should be"
                " greater than or equal to 5"
            ],
            id="codebuild-timeout",
        ),
        pytest.param(
            "images:\n  a:\n",
            ["images.yaml: image 'a': Input should be a valid dictionary"],
            id="empty-entry",
        ),
        pytest.param(
            f"images:\n  Bad_Name:\n{D}",
            ["images.yaml: image 'Bad_Name': bad name"],
            id="bad-name-case",
        ),
        pytest.param(
            f"images:\n  a--b:\n{D}", ["images.yaml: image 'a--b': bad name"], id="bad-name-dash"
        ),
        pytest.param(
            f"images:\n  -a:\n{D}", ["images.yaml: image '-a': bad name"], id="bad-name-lead"
        ),
        pytest.param(
            f"images:\n  a:\n{D}    base: nope\n",
            ["images.yaml: image 'a', field 'base': unknown image 'nope'"],
            id="unknown-base",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    base: a\n",
            ["images.yaml: image 'a', field 'base': cycle of bases a -> a"],
            id="self-base",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    base: b\n  b:\n{D}    base: c\n  c:\n{D}    base: a\n",
            ["images.yaml: image 'a', field 'base': cycle of bases a -> b -> c -> a"],
            id="cycle-of-three",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    base: b\n  b:\n{D}    base: a\n"
            f"  c:\n{D}    base: c\n  d:\n{D}    base: a\n",
            [
                "images.yaml: image 'a', field 'base': cycle of bases a -> b -> a",
                "images.yaml: image 'c', field 'base': cycle of bases c -> c",
            ],
            id="two-cycles-once-each",
        ),
        pytest.param(
            "images:\n  a:\n    dockerfile: /abs/Dockerfile\n",
            [
                "images.yaml: image 'a', field 'dockerfile': '/abs/Dockerfile' must be a"
                " relative path inside the repository"
            ],
            id="absolute-path",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    source_paths: [src/../../etc, 'a\\b', '']\n",
            [
                "images.yaml: image 'a', field 'source_paths': 'src/../../etc' must be a"
                " relative path inside the repository",
                "images.yaml: image 'a', field 'source_paths': 'a\\b' must be a relative path"
                " inside the repository",
                "images.yaml: image 'a', field 'source_paths': '' must be a relative path inside"
                " the repository",
            ],
            id="paths-outside",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    build_args: {{BASE_IMAGE: x, 1BAD: y, good_1: z}}\n",
            [
                "images.yaml: image 'a', field 'build_args': 'BASE_IMAGE' is set from 'base',"
                " remove it",
                "images.yaml: image 'a', field 'build_args': bad argument name '1BAD'",
            ],
            id="build-arg-names",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    lambda: 'bad name!'\n",
            ["images.yaml: image 'a', field 'lambda': bad function name 'bad name!'"],
            id="bad-function-name",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    lambda: fn\n  b:\n{D}    lambda: [other, fn]\n",
            [
                "images.yaml: image 'b', field 'lambda': function 'fn' is already deployed by"
                " image 'a'"
            ],
            id="function-in-two-images",
        ),
        pytest.param(
            'naming: {repository: "{env}-images"}\n'
            f"images:\n  a:\n{D}  b:\n{D}    repository: own-{{image}}\n  c:\n{D}",
            ["images.yaml: images 'a', 'c' would share repository '{env}-images'"],
            id="shared-repository",
        ),
        pytest.param(
            f'naming: {{repository: "Team/{{image}}"}}\nimages:\n  api:\n{D}',
            [
                "images.yaml: image 'api', field 'naming.repository': repository name"
                " 'Team/api' is not one registries accept"
            ],
            id="repository-uppercase",
        ),
        pytest.param(
            f"images:\n  api:\n{D}    repository: 'team//{{image}}-'\n",
            ["images.yaml: image 'api', field 'repository': repository name 'team//api-'"],
            id="repository-separators",
        ),
        pytest.param(
            f"images:\n  api:\n{D}    codebuild_project: 'build {{image}}'\n",
            [
                "images.yaml: image 'api', field 'codebuild_project': CodeBuild project name"
                " 'build api' is not one AWS accepts"
            ],
            id="project-space",
        ),
        pytest.param(
            'naming: {codebuild_project: "' + "x" * 250 + '-{image}-{env}"}\n'
            f"images:\n  api:\n{D}",
            ["images.yaml: image 'api', field 'naming.codebuild_project': CodeBuild project"],
            id="project-too-long",
        ),
        pytest.param(
            f"images:\n  a:\n{D}  b:\n{D}    repository: a\n",
            ["images.yaml: images 'a', 'b' would share repository 'a'"],
            id="repository-named-like-another-image",
        ),
        pytest.param(
            f"images:\n  a:\n{D}extra: 1\n",
            ["images.yaml: field '': unknown key 'extra'"],
            id="unknown-top-level-key",
        ),
    ],
)
def test_each_problem_is_one_line(text: str, expected: list[str]) -> None:
    lines = problems(text)
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_paths_must_exist_when_a_checker_is_given() -> None:
    text = f"images:\n  a:\n{D}    source_paths: [src, src/gone, lib/]\n"
    assert problems(text, existing={"Dockerfile", "src", "lib"}) == [
        "images.yaml: image 'a', field 'source_paths': 'src/gone' does not exist"
    ]
    assert problems(text, existing={"src", "lib", "src/gone"}) == [
        "images.yaml: image 'a', field 'dockerfile': 'Dockerfile' does not exist"
    ]
    parse(text, existing={"Dockerfile", "src", "src/gone", "lib"})  # trailing '/' is fine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "images.yaml: no images defined", id="empty"),
        pytest.param("# just a comment\n", "images.yaml: no images defined", id="comment"),
        pytest.param("images:\n", "images.yaml: no images defined", id="images-null"),
        pytest.param("images: {}\n", "images.yaml: no images defined", id="images-empty"),
        pytest.param(
            "- a\n- b\n",
            "images.yaml: expected a mapping with a top-level 'images:' key",
            id="top-level-list",
        ),
        pytest.param(
            "images: [a, b]\n",
            "images.yaml: field 'images': expected a map of image name -> entry",
            id="images-list",
        ),
        pytest.param(
            "images:\n  a:\n\tdockerfile: x\n",
            "images.yaml: line 3, column 1: invalid YAML",
            id="tab",
        ),
        pytest.param(
            "images:\n  a: {dockerfile: D\n",
            "images.yaml: line 3, column 1: invalid YAML",
            id="unclosed-flow",
        ),
        pytest.param(
            f"images:\n  a:\n{D}  b:\n{D}  a:\n{D}",
            "images.yaml: line 6, column 3: invalid YAML: duplicate key 'a'",
            id="duplicate-image",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    base: x\n{D}",
            "images.yaml: line 5, column 5: invalid YAML: duplicate key 'dockerfile'",
            id="duplicate-field",
        ),
        pytest.param(
            f"images:\n  a:\n{D}    build_args: {{A: '1', A: '2'}}\n",
            "images.yaml: line 4, column 26: invalid YAML: duplicate key 'A'",
            id="duplicate-build-arg",
        ),
        pytest.param(
            f"images:\n  a:\n{D}images:\n  b:\n{D}",
            "images.yaml: line 4, column 1: invalid YAML: duplicate key 'images'",
            id="duplicate-top-level",
        ),
    ],
)
def test_file_level_problems_are_one_line(text: str, expected: str) -> None:
    [line] = problems(text)
    assert line.startswith(expected), line


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "images:\n"
        "  a:\n    dockerfile: gone\n    base: zz\n    colour: 1\n"
        f"  B:\n{D}"
        f"  c:\n{D}    lambda: fn\n    build_args: {{BASE_IMAGE: x}}\n"
        f"  d:\n{D}    lambda: fn\n    base: e\n"
        f"  e:\n{D}    base: d\n"
    )
    lines = problems(text, existing={"Dockerfile"})
    expected = [
        "image 'a': unknown key 'colour'",
        "image 'a', field 'base': unknown image 'zz'",
        "image 'a', field 'dockerfile': 'gone' does not exist",
        "image 'B': bad name",
        "image 'c', field 'build_args': 'BASE_IMAGE' is set from 'base'",
        "image 'd', field 'lambda': function 'fn' is already deployed by image 'c'",
        "field 'base': cycle of bases d -> e -> d",
    ]
    assert len(lines) == len(expected), lines
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, fragment
    assert all(line.startswith("images.yaml: ") for line in lines)


# --- load_manifest ------------------------------------------------------------------------------


def test_load_manifest_checks_paths_against_the_repo(tmp_path: Path) -> None:
    write(tmp_path, {"repo/Dockerfile": "FROM scratch\n", "repo/src/a.py": "a\n"})
    manifest = tmp_path / "repo" / "deploy" / "images.yaml"
    write(tmp_path, {"repo/deploy/images.yaml": f"images:\n  a:\n{D}    source_paths: [src]\n"})
    m = load_manifest(manifest, tmp_path / "repo")
    assert m.source == str(manifest)
    assert list(m.images) == ["a"]
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)  # default: paths relative to the manifest's folder
    assert info.value.lines == [
        f"{manifest}: image 'a', field 'dockerfile': 'Dockerfile' does not exist",
        f"{manifest}: image 'a', field 'source_paths': 'src' does not exist",
    ]


def test_load_manifest_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "images.yaml")
    assert info.value.lines == [
        f"{tmp_path / 'images.yaml'}: manifest not found (create images.yaml or pass --manifest)"
    ]
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ManifestError, match="folder.yaml: cannot read manifest"):
        load_manifest(tmp_path / "folder.yaml")


# --- bugs found by these tests, fixed -----------------------------------------------------


def test_non_utf8_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").write_bytes(b"images:\n  a:\n    dockerfile: \xff\n")
    with pytest.raises(ManifestError, match="images.yaml"):
        load_manifest(tmp_path / "images.yaml")


def test_yaml_merge_keys_work() -> None:
    m = parse(
        "images:\n"
        "  a: &lambda\n"
        f"{D}"
        "    build_args: {HANDLER: a.handler}\n"
        "  b:\n"
        "    <<: *lambda\n"
        "    base: a\n"
    )
    assert m.images["b"].dockerfile == "Dockerfile"
    assert m.images["b"].base == "a"
