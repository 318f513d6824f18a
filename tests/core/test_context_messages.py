"""A COPY source missing from a context is named with its real cause, and a COPY that loses
git-ignored files Docker would ship is said once per image (real git repos, the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.gitutil import commit_all, make_repo, write
from tests.importtime import run_cli

MANIFEST = """\
images:
  app:
    dockerfile: services/a/Dockerfile
    source_paths: [services/a]
"""


def app_repo(path: Path, copy_line: str, extra: dict[str, str] | None = None) -> Path:
    files = {
        "images.yaml": MANIFEST,
        "services/a/Dockerfile": f"FROM scratch\n{copy_line}\n",
        "services/a/handler.py": "def handler(e, c): ...\n",
        ".gitignore": "# build output\n*.log\nvendor/\n__pycache__/\n",
        "shared/util.py": "U = 1\n",
        **(extra or {}),
    }
    return make_repo(path, files)


def plan(repo: Path, tmp_path: Path, *args: str):
    proc, _ = run_cli("plan", *args, cwd=repo, home=tmp_path / "home")
    return proc


def test_a_git_ignored_copy_source_names_the_gitignore_line(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a/vendor /opt/vendor")
    write(repo, {"services/a/vendor/lib.py": "L = 1\n"})  # on disk, ignored by .gitignore:3
    proc = plan(repo, tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "services/a/Dockerfile:2: COPY source 'services/a/vendor'" in line
    assert "git-ignored by .gitignore:3 `vendor/`" in line


def test_an_info_exclude_rule_is_named_too(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a/local.cfg /etc/app.cfg")
    (repo / ".git/info").mkdir(parents=True, exist_ok=True)
    (repo / ".git/info/exclude").write_text("# mine\nlocal.cfg\n")
    write(repo, {"services/a/local.cfg": "x\n"})
    proc = plan(repo, tmp_path)
    assert proc.returncode == 2
    assert "git-ignored by .git/info/exclude:2 `local.cfg`" in proc.stderr


def test_a_copy_source_outside_source_paths_says_so(tmp_path: Path) -> None:
    # tracked but outside source_paths, and untracked outside them: neither is "no such file"
    repo = app_repo(tmp_path / "r", "COPY shared/util.py /opt/\nCOPY notes.txt /opt/")
    write(repo, {"notes.txt": "untracked, not ignored\n"})
    proc = plan(repo, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert any(
        "COPY source 'shared/util.py'" in x and "(not under source_paths)" in x for x in lines
    )
    assert any("COPY source 'notes.txt'" in x and "(not under source_paths)" in x for x in lines)


def test_a_copy_source_that_does_not_exist_says_so(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a/missing.py /opt/")
    proc = plan(repo, tmp_path)
    assert proc.returncode == 2
    assert "(no such file in the repository)" in proc.stderr


def test_a_dockerignored_copy_source_names_the_dockerignore_line(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a/handler.py /var/task/",
                    {".dockerignore": "# nothing else\nservices/a/handler.py\n"})  # fmt: skip
    proc = plan(repo, tmp_path)
    assert proc.returncode == 2
    assert "excluded by .dockerignore:2 `services/a/handler.py`" in proc.stderr


def test_git_ignored_files_a_copy_loses_are_said_once_per_image(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a /var/task",
                    {".dockerignore": "**/__pycache__\n"})  # fmt: skip
    write(
        repo,
        {
            "services/a/vendor/a.py": "A\n",
            "services/a/vendor/b.py": "B\n",
            "services/a/run.log": "log\n",
            "services/a/vendor/c/d.py": "D\n",
            "services/a/__pycache__/handler.pyc": "pyc: Docker would not ship it either\n",
        },
    )
    proc = plan(repo, tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if "git-ignored" in x]
    assert len(warnings) == 1, proc.stderr
    assert (
        "services/a/Dockerfile:2: COPY 'services/a' leaves out 4 git-ignored files" in warnings[0]
    )
    assert "(services/a/run.log, services/a/vendor/a.py, services/a/vendor/b.py, …)" in warnings[0]
    assert "__pycache__" not in warnings[0]
    (image,) = json.loads(proc.stdout)["images"]
    assert any("leaves out 4 git-ignored files" in w for w in image["warnings"])


def test_no_warning_when_nothing_ignored_is_lost(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a /var/task")
    write(repo, {"shared/vendor/x.py": "ignored, but no COPY takes it\n"})
    commit_all(repo, "more")
    write(repo, {"services/a/handler.py": "def handler(e, c): return 2\n"})  # a cache miss
    proc = plan(repo, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "git-ignored" not in proc.stderr


def test_a_nested_gitignore_is_named_with_its_folder(tmp_path: Path) -> None:
    repo = app_repo(tmp_path / "r", "COPY services/a/build/out.js /var/task/")
    write(repo, {"services/a/.gitignore": "# local\nbuild/\n", "services/a/build/out.js": "x\n"})
    proc, _ = run_cli("plan", "--repo", str(repo), cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert "git-ignored by services/a/.gitignore:2 `build/`" in proc.stderr
