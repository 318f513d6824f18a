"""`plan` of an edited working tree with a manifest validated before (issue 10): the manifest
comes from the cache in `.git` without pydantic, and the answer is the one a computation
from scratch (no cache of any kind) gives, whatever was edited."""

from __future__ import annotations

import json
import os
import shutil
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from build_assets.core import manifestview, versioncache
from build_assets.core.manifest import ImageSpec, Manifest, load_manifest
from build_assets.core.manifestview import FrozenManifest, load_validated
from build_assets.errors import ManifestError
from tests.gitutil import git, make_repo, write
from tests.importtime import run_cli

MANIFEST = """images:
  base:
    dockerfile: base/Dockerfile
    source_paths: [shared]
  app:
    dockerfile: app/Dockerfile
    base: base
    source_paths: [app, shared]
    lambda: app-fn
  other:
    dockerfile: other/Dockerfile
    source_paths: [other]
    dockerignore: ci/other.ignore
"""

FILES = {
    "images.yaml": MANIFEST,
    ".dockerignore": "**/*.log\n",
    "ci/other.ignore": "other/*.tmp\n",
    "base/Dockerfile": "FROM scratch\nCOPY shared /s\n",
    "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY app /app\n",
    "app/main.py": "x = 1\n",
    "app/util.py": "u = 1\n",
    "shared/lib.py": "y = 1\n",
    "shared/data.txt": "d\n",
    "other/Dockerfile": "FROM scratch\nCOPY other/x.py /x\n",
    "other/x.py": "z = 1\n",
}


def _rename(repo: Path, old: str, new: str) -> None:
    (repo / old).rename(repo / new)


def _remove(repo: Path, rel: str) -> None:
    path = repo / rel
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _symlinked(repo: Path) -> None:
    shutil.rmtree(repo / "shared")
    (repo / "shared").symlink_to("app")


EDITS: dict[str, Callable[[Path], object]] = {
    "modified": lambda r: write(r, {"shared/lib.py": "y = 2\n"}),
    "deleted": lambda r: _remove(r, "app/util.py"),
    "renamed": lambda r: _rename(r, "app/util.py", "app/helpers.py"),
    "renamed, staged": lambda r: git(r, "mv", "app/util.py", "app/helpers.py"),
    "untracked": lambda r: write(r, {"other/new.py": "n\n"}),
    "untracked, ignored": lambda r: write(r, {"app/debug.log": "l\n", "other/a.tmp": "t\n"}),
    "mode": lambda r: os.chmod(r / "shared/lib.py", 0o755),
    ".dockerignore": lambda r: write(r, {".dockerignore": "**/*.log\napp/util.py\n"}),
    ".dockerignore gone": lambda r: _remove(r, ".dockerignore"),
    "Dockerfile's own ignore": lambda r: write(r, {"app/Dockerfile.dockerignore": "app/main.py\n"}),
    "named ignore file": lambda r: write(r, {"ci/other.ignore": "other/x.py\n"}),
    "named ignore file gone": lambda r: _remove(r, "ci/other.ignore"),
    "Dockerfile": lambda r: write(r, {"app/Dockerfile": FILES["app/Dockerfile"] + "ENV A=1\n"}),
    "Dockerfile copies a missing file": lambda r: write(
        r, {"other/Dockerfile": "FROM scratch\nCOPY other/none.py /x\n"}
    ),
    "Dockerfile gone": lambda r: _remove(r, "other/Dockerfile"),
    "manifest": lambda r: write(r, {"images.yaml": MANIFEST.replace("[other]", "[other, shared]")}),
    "manifest invalid": lambda r: write(
        r, {"images.yaml": MANIFEST.replace("base: base", "base: x")}
    ),
    "source path gone": lambda r: _remove(r, "shared"),
    "source path symlinked": _symlinked,
}


def _plan(repo: Path, importtime: bool = False) -> tuple[int, object, str, set[str]]:
    """(exit code, JSON output or None, stderr without the import report, modules)."""
    proc, modules = run_cli(
        "plan", "--json", cwd=repo, home=repo.parent / "home", importtime=importtime
    )
    out = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc.returncode, out, proc.stderr, modules


def _forget_caches(repo: Path) -> None:
    for path in (repo / ".git").glob("build-assets-*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_tree_plan_matches_a_computation_from_scratch(edit: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    assert _plan(repo)[0] == 0  # the clean tree: every cache filled
    assert (repo / ".git" / versioncache.MANIFEST_MODEL).is_file()
    EDITS[edit](repo)
    code, out, err, modules = _plan(repo, importtime=True)
    _forget_caches(repo)
    assert (code, out, err) == _plan(repo)[:3]
    # the validated manifest is used unless its bytes changed or a path it names is gone
    gone = ("named ignore file gone", "Dockerfile gone", "source path gone")
    validated = edit.startswith("manifest") or edit in gone
    assert ("pydantic" in modules) == validated, err


def test_edits_change_what_they_should(tmp_path: Path) -> None:
    """The edits above are seen (a broken scan would make every answer equal and wrong)."""
    repo = make_repo(tmp_path / "repo", FILES)
    before = {i["name"]: i["version"] for i in _plan(repo)[1]["images"]}  # type: ignore[index]
    write(repo, {"shared/lib.py": "y = 2\n", "other/new.py": "n\n"})
    after = {i["name"]: i["version"] for i in _plan(repo)[1]["images"]}  # type: ignore[index]
    assert {n for n in before if before[n] != after[n]} == {"base", "app", "other"}
    write(repo, {"shared/lib.py": "y = 1\n"})
    _remove(repo, "other/new.py")
    assert {i["name"]: i["version"] for i in _plan(repo)[1]["images"]} == before  # type: ignore[index]


FULL = """naming: {codebuild_project: "{image}-{env}-cb", repository: "team/{image}"}
lifecycle: {keep: 3, untagged_days: 2}
platform: linux/arm64
dockerignore: .custom-ignore
images:
  base:
    dockerfile: ./base/Dockerfile
    source_paths: [shared/]
    build_args: {FLAG: true, N: 3}
    codebuild: {compute_type: BUILD_GENERAL1_LARGE, timeout_minutes: 30}
    allow_secrets: ["*.pem"]
    owners: [team:core]
    description: the base
  app:
    dockerfile: app/Dockerfile
    base: base
    base_arg: PARENT
    source_paths: [app, shared]
    lambda: [app-a, app-b]
    platform: linux/amd64
    dockerignore: false
    codebuild_project: app-builder
    repository: apps/{image}
"""


def _full_repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {
            "images.yaml": FULL,
            ".custom-ignore": "*.log\n",
            "base/Dockerfile": "FROM scratch\n",
            "app/Dockerfile": "ARG PARENT\nFROM ${PARENT}\n",
            "app/main.py": "x\n",
            "shared/lib.py": "y\n",
        },
    )


def _fields(model: object, fields: typing.Iterable[str]) -> dict:
    return {name: getattr(model, name) for name in fields}


def test_frozen_manifest_has_every_field_and_method_result(tmp_path: Path) -> None:
    repo = _full_repo(tmp_path)
    path, git_dir = repo / "images.yaml", repo / ".git"
    model = load_validated(path, repo, git_dir)
    frozen = load_validated(path, repo, git_dir)
    assert isinstance(model, Manifest) and isinstance(frozen, FrozenManifest)
    assert model == load_manifest(path, repo)
    nested_fields = ("naming", "lifecycle", "publish")
    top = [f for f in Manifest.model_fields if f not in ("images", *nested_fields)]
    assert _fields(frozen, top) == _fields(model, top)
    for nested in nested_fields:
        sub = getattr(model, nested)
        assert _fields(getattr(frozen, nested), type(sub).model_fields) == dict(sub)
    assert list(frozen.images) == list(model.images)
    for name, spec in model.images.items():
        copy = frozen.images[name]
        plain = [f for f in ImageSpec.model_fields if f != "codebuild"]
        assert _fields(copy, plain) == _fields(spec, plain)
        assert [type(getattr(copy, f)) for f in plain] == [type(getattr(spec, f)) for f in plain]
        if spec.codebuild is None:
            assert copy.codebuild is None
        else:
            assert vars(copy.codebuild) == dict(spec.codebuild)
        assert copy.identity() == spec.identity()
        assert copy.context_roots() == spec.context_roots()
        for method in ("platform_of", "dockerignore_of", "external_base", "dependents"):
            assert getattr(frozen, method)(name) == getattr(model, method)(name)
        assert frozen.project_name(name, "dev") == model.project_name(name, "dev")
        assert frozen.repository_name(name, "dev") == model.repository_name(name, "dev")
    for method in ("order", "all_paths", "ignore_paths", "shared_repositories"):
        assert getattr(frozen, method)() == getattr(model, method)()


def test_tuple_fields_are_every_tuple_typed_field() -> None:
    tuples = {
        name
        for name, field in ImageSpec.model_fields.items()
        if typing.get_origin(field.annotation) is tuple
    }
    assert tuples == set(manifestview.TUPLE_FIELDS)


def test_validated_manifest_is_keyed_by_bytes_name_and_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _full_repo(tmp_path)
    path, git_dir = repo / "images.yaml", repo / ".git"
    load_validated(path, repo, git_dir)
    assert isinstance(load_validated(path, repo, git_dir), FrozenManifest)
    # the same bytes under another name: validated again (the name is in every message)
    monkeypatch.chdir(repo)
    assert isinstance(load_validated(Path("images.yaml"), repo, git_dir), Manifest)
    # other code: validated again
    monkeypatch.setattr(manifestview, "_code", lambda: b"other code")
    assert isinstance(load_validated(path, repo, git_dir), Manifest)
    monkeypatch.undo()
    # a hand-edited entry: never trusted
    load_validated(path, repo, git_dir)
    entry = git_dir / versioncache.MANIFEST_MODEL
    data = json.loads(entry.read_text())
    data["body"]["value"]["images"]["app"]["base"] = None
    entry.write_text(json.dumps(data))
    assert isinstance(load_validated(path, repo, git_dir), Manifest)
    # a well-formed entry of a shape this code does not write: validated again
    body = {"key": data["body"]["key"], "value": {"images": {"x": {}}}}
    entry.write_text(json.dumps({"sum": versioncache._checksum(body), "body": body}))
    assert isinstance(load_validated(path, repo, git_dir), Manifest)
    # other bytes: validated again, and their problems reported as load_manifest does
    write(repo, {"images.yaml": FULL.replace("base: base", "base: nope")})
    with pytest.raises(ManifestError) as got:
        load_validated(path, repo, git_dir)
    with pytest.raises(ManifestError) as want:
        load_manifest(path, repo)
    assert got.value.lines == want.value.lines


@pytest.mark.parametrize("gone", ["app/Dockerfile", "shared", ".custom-ignore"])
def test_validated_manifest_checks_its_paths_again(gone: str, tmp_path: Path) -> None:
    repo = _full_repo(tmp_path)
    path, git_dir = repo / "images.yaml", repo / ".git"
    load_validated(path, repo, git_dir)
    _remove(repo, gone)
    with pytest.raises(ManifestError) as got:
        load_validated(path, repo, git_dir)
    with pytest.raises(ManifestError) as want:
        load_manifest(path, repo)
    assert got.value.lines == want.value.lines


def test_index_records_screen_keeps_exactly_the_files_at_stage_0() -> None:
    from build_assets.core.gitrepo import _INDEX_LINE_RE, _index_records

    sha1, sha256 = "a" * 40, "b" * 64
    plain = [f"100644 {sha1} 0\ta", f"100755 {sha1} 0\tb 1\tc", f"120000 {sha1} 0\td\te"]
    odd = [
        f"160000 {sha1} 0\tsub",  # a submodule
        f"040000 {sha1} 0\tsparse/",  # a sparse-index folder
        f"100644 {sha1} 2\tconflict",
        f"100644 {sha256} 0\tother id length",
    ]
    for records in (plain, [r.replace(sha1, sha256) for r in plain], *([*plain, o] for o in odd)):
        text = "".join(r + "\0" for r in records)
        assert _index_records(text) == [r for r in records if _INDEX_LINE_RE.fullmatch(r)]
    assert _index_records("") == []


def test_secret_screen_tails_are_long_enough() -> None:
    """`candidates` screens on a path's last three characters: no ending may be shorter."""
    from build_assets.core import secrets

    endings = {*secrets._ANY_NAME, *secrets._SUFFIXES}
    assert min(map(len, endings)) >= 3
    assert {e[-3:] for e in endings} == secrets._TAILS
