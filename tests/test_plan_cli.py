"""`build-assets plan` as a user runs it (a subprocess), and every bad input it must name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from build_assets.records import SUCCEEDED, BuildRecord, BuildRecords
from build_assets.versioning import worktree_versions
from tests.gitutil import (
    ALL_IMAGES,
    BASES,
    CREATE,
    HANDLER,
    HARMONIZE,
    make_repo,
    prepend,
    seed_repo,
)

KEYS = {"name", "version", "tag", "base", "lambdas", "changed", "reasons"}


def plan(
    *args: str, cwd: Path, home: Path, registry: str = "reg.test"
) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUILD_ASSETS_HOME": str(home), "BUILD_ASSETS_REGISTRY": registry}
    env.pop("BUILD_ASSETS_REPO", None)
    env.pop("BUILD_ASSETS_MANIFEST", None)
    return subprocess.run(
        [sys.executable, "-m", "build_assets", "plan", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seed_repo(tmp_path / "receipts")


def test_json_is_one_object_in_dependency_order(repo: Path, tmp_path: Path) -> None:
    prepend(repo, HANDLER, "# edit")
    proc = plan("--json", "--since", "HEAD", cwd=repo, home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # exactly one JSON document
    names = [i["name"] for i in data["images"]]
    assert sorted(names) == sorted(ALL_IMAGES)
    for img in data["images"]:
        assert set(img) == KEYS
        assert img["tag"] == "git-" + img["version"][:12]
        if img["base"]:
            assert names.index(img["base"]) < names.index(img["name"])
    by_name = {i["name"]: i for i in data["images"]}
    assert by_name[HARMONIZE]["changed"] and by_name[HARMONIZE]["reasons"] == [
        f"{HANDLER} modified"
    ]
    assert by_name[HARMONIZE]["lambdas"] == ["metadata-harmonizer-dev-harmonize-metadata"]
    assert [n for n, i in by_name.items() if i["changed"]] == [HARMONIZE]


def test_repo_option_and_subfolder_cwd(repo: Path, tmp_path: Path) -> None:
    from_sub = plan("--json", cwd=repo / "receipt_agent", home=tmp_path / "h")
    from_elsewhere = plan("--json", "--repo", str(repo), cwd=tmp_path, home=tmp_path / "h")
    assert from_sub.returncode == from_elsewhere.returncode == 0
    assert json.loads(from_sub.stdout) == json.loads(from_elsewhere.stdout)


def test_table_output(repo: Path, tmp_path: Path) -> None:
    prepend(repo, "receipt_dynamo/client.py", "# edit")
    proc = plan("--since", "HEAD", cwd=repo, home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "base-receipt-dynamo" in proc.stdout and "rebuild" in proc.stdout
    assert "5 to build, 0 unchanged" in proc.stdout


def test_without_since_compares_with_recorded_builds(repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = plan(cwd=repo, home=home)
    assert proc.returncode == 0 and "Nothing is built yet" in proc.stdout
    records = BuildRecords(home / "builds.sqlite")
    for img in worktree_versions(repo):
        records.add(BuildRecord.for_image(img, "reg.test", SUCCEEDED, digest="sha256:" + "0" * 64))
    prepend(repo, HANDLER, "# edit")
    data = json.loads(plan("--json", cwd=repo, home=home).stdout)
    by_name = {i["name"]: i for i in data["images"]}
    assert [n for n, i in by_name.items() if i["changed"]] == [HARMONIZE]
    assert by_name[HARMONIZE]["reasons"] == [f"{HANDLER} modified"]
    # records of another registry do not count
    other = json.loads(plan("--json", cwd=repo, home=home, registry="other.test").stdout)
    assert all(i["changed"] for i in other["images"])


# --- bad input: one line per problem, exit 2, never a traceback --------------------------

GOOD_ENTRY = "    dockerfile: infra/create_labels/lambdas/Dockerfile\n"


def _bad(repo: Path, tmp_path: Path, manifest: str, *args: str) -> list[str]:
    (repo / "images.yaml").write_text(manifest)
    proc = plan(*args, cwd=repo, home=tmp_path / "h")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("build-assets: error: ") for line in lines)
    return lines


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (f"images:\n  a:\n{GOOD_ENTRY}    colour: blue\n", ["image 'a': unknown key 'colour'"]),
        (f"images:\n  Bad_Name:\n{GOOD_ENTRY}", ["image 'Bad_Name': bad name"]),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    base: nope\n",
            ["image 'a', field 'base': unknown image 'nope'"],
        ),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    base: b\n  b:\n{GOOD_ENTRY}    base: a\n",
            ["field 'base': cycle of bases"],
        ),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    source_paths: [no/such/dir]\n",
            ["image 'a', field 'source_paths': 'no/such/dir' does not exist"],
        ),
        (
            "images:\n  a:\n    dockerfile: missing/Dockerfile\n",
            ["field 'dockerfile': 'missing/Dockerfile' does not exist"],
        ),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    lambda: fn\n  b:\n{GOOD_ENTRY}    lambda: [fn]\n",
            ["image 'b', field 'lambda': function 'fn' is already deployed by image 'a'"],
        ),
        ("", ["no images defined"]),
        ("images: {}\n", ["no images defined"]),
        ("images:\n  a:\n\tdockerfile: x\n", ["line 3", "invalid YAML"]),
        (f"images:\n  a:\n{GOOD_ENTRY}  a:\n{GOOD_ENTRY}", ["duplicate key 'a'"]),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    source_paths: [../outside]\n",
            ["must be a relative path"],
        ),
        (
            f"images:\n  a:\n{GOOD_ENTRY}    build_args: {{BASE_IMAGE: x}}\n",
            ["'BASE_IMAGE' is set from 'base'"],
        ),
    ],
)
def test_bad_manifest_names_file_image_and_field(
    repo: Path, tmp_path: Path, manifest: str, expected: list[str]
) -> None:
    text = "\n".join(_bad(repo, tmp_path, manifest))
    assert "images.yaml" in text
    for fragment in expected:
        assert fragment in text


def test_every_problem_is_reported_at_once(repo: Path, tmp_path: Path) -> None:
    lines = _bad(
        repo,
        tmp_path,
        "images:\n  a:\n    dockerfile: nope\n    base: zz\n    colour: 1\n  B:\n" + GOOD_ENTRY,
    )
    text = "\n".join(lines)
    for fragment in (
        "unknown key 'colour'",
        "unknown image 'zz'",
        "'nope' does not exist",
        "image 'B': bad name",
    ):
        assert fragment in text
    assert len(lines) == 4


def test_not_a_git_repo(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = plan("--repo", str(plain), cwd=tmp_path, home=tmp_path / "h")
    assert proc.returncode == 2 and "not a git repository" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_ref(repo: Path, tmp_path: Path) -> None:
    proc = plan("--since", "no-such-ref", cwd=repo, home=tmp_path / "h")
    assert proc.returncode == 2 and "unknown git ref 'no-such-ref'" in proc.stderr


def test_manifest_missing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"README.md": "no manifest here\n"})
    proc = plan(cwd=repo, home=tmp_path / "h")
    assert proc.returncode == 2 and "images.yaml: manifest not found" in proc.stderr


def test_manifest_absent_at_ref(repo: Path, tmp_path: Path) -> None:
    bare = make_repo(tmp_path / "r", {"README.md": "x\n"})
    (bare / "images.yaml").write_text((repo / "images.yaml").read_text())
    for rel in ("infra", "receipt_dynamo", "receipt_label", "receipt_agent"):
        import shutil

        shutil.copytree(repo / rel, bare / rel)
    proc = plan("--since", "HEAD", cwd=bare, home=tmp_path / "h")
    assert proc.returncode == 2 and "does not exist at HEAD" in proc.stderr


def test_bases_unchanged_by_a_lambda_only_edit_via_cli(repo: Path, tmp_path: Path) -> None:
    prepend(repo, "infra/create_labels/lambdas/create_labels.py", "# edit")
    data = json.loads(plan("--json", "--since", "HEAD", cwd=repo, home=tmp_path / "h").stdout)
    changed = [i["name"] for i in data["images"] if i["changed"]]
    assert changed == [CREATE] and not set(changed) & set(BASES)
