"""`plan` of an edited working tree with a manifest validated before (issue 10): the manifest
comes from the cache in `.git` without pydantic, and the answer is the one a computation
from scratch (no cache of any kind) gives, whatever was edited."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from build_assets.core import model, schema, validated_cache, versioncache
from build_assets.core.manifest import load_manifest
from build_assets.core.model import CodeBuildOptions, ImageSpec, Manifest
from build_assets.core.validated_cache import load_validated
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
    lambda: [app-a, {name: app-c, alias: live, deploy: none}]
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


def _loads(path: Path, repo: Path, git_dir: Path) -> tuple[Manifest, bool]:
    """load_validated's model, and whether it was validated (the store missed)."""
    missed: list[bool] = []
    model = load_validated(path, repo, git_dir, lambda: missed.append(True))
    return model, bool(missed)


def test_stored_model_is_the_validated_model(tmp_path: Path) -> None:
    repo = _full_repo(tmp_path)
    path, git_dir = repo / "images.yaml", repo / ".git"
    fresh, validated = _loads(path, repo, git_dir)
    stored, again = _loads(path, repo, git_dir)
    assert validated and not again
    assert type(stored) is type(fresh) is Manifest
    # dataclass equality: every field, nested options and tuple/list types alike
    assert stored == fresh == load_manifest(path, repo)
    codebuild = CodeBuildOptions(compute_type="BUILD_GENERAL1_LARGE", timeout_minutes=30)
    assert stored.images["base"].codebuild == codebuild
    assert stored.images["app"].lambda_entries == (
        "app-a",
        model.FunctionEntry("app-c", alias="live", deploy="none"),
    )
    assert stored.images["base"].build_args == {"FLAG": "true", "N": "3"}
    assert stored.images["base"].dockerfile == "base/Dockerfile"  # normalised
    assert Manifest.from_document(fresh.to_document()) == fresh


def _schema_fields(schema: type) -> dict[str, str]:
    return {name: f.alias or name for name, f in schema.model_fields.items()}


def _model_fields(cls: type) -> dict[str, str]:
    return {f.name: f.key for f in cls.FIELDS}


@pytest.mark.parametrize(
    ("schema_class", "model_class"),
    [
        (schema.ManifestSchema, Manifest),
        (schema.ImageSchema, ImageSpec),
        (schema.CodeBuildSchema, CodeBuildOptions),
        (schema.NamingSchema, model.Naming),
        (schema.LifecycleSchema, model.Lifecycle),
        (schema.PublishSchema, model.Publish),
        (schema.FunctionEntrySchema, model.FunctionEntry),
    ],
)
def test_schema_and_model_have_the_same_fields(schema_class: type, model_class: type) -> None:
    """A field added to one and not the other would be validated and lost, or never checked."""
    assert _schema_fields(schema_class) == _model_fields(model_class)
    required = {"images": {}, "dockerfile": "D", "name": "f"}
    given = {k: v for k, v in required.items() if k in _model_fields(model_class)}
    defaults = schema_class.model_validate(given).model_dump(mode="json", by_alias=True)
    assert model.dump(model_class(**given)) == {**defaults, **given}  # the same defaults


def test_validated_manifest_is_keyed_by_bytes_name_and_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _full_repo(tmp_path)
    path, git_dir = repo / "images.yaml", repo / ".git"
    load_validated(path, repo, git_dir)
    assert _loads(path, repo, git_dir)[1] is False
    # the same bytes under another name: validated again (the name is in every message)
    monkeypatch.chdir(repo)
    assert _loads(Path("images.yaml"), repo, git_dir)[1] is True
    # other code: validated again
    monkeypatch.setattr(validated_cache, "_code", lambda: b"other code")
    assert _loads(path, repo, git_dir)[1] is True
    monkeypatch.undo()
    # a hand-edited entry: never trusted
    load_validated(path, repo, git_dir)
    entry = git_dir / versioncache.MANIFEST_MODEL
    data = json.loads(entry.read_text())
    data["body"]["value"]["images"]["app"]["base"] = None
    entry.write_text(json.dumps(data))
    assert _loads(path, repo, git_dir)[1] is True
    # a well-formed entry of a shape this code does not write: validated again
    body = {"key": data["body"]["key"], "value": {"images": {"x": {}}}}
    entry.write_text(json.dumps({"sum": versioncache._checksum(body), "body": body}))
    assert _loads(path, repo, git_dir)[1] is True
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
