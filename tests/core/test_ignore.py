"""`.dockerignore` matching with Docker's semantics, its explanations and its speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from build_assets.core.ignore import DockerIgnore

PATHS = sorted(
    [
        "README.md",
        "pkg_a/__init__.py",
        "pkg_a/sub/x.py",
        "pkg_a/__pycache__/x.pyc",
        "pkg_b/y.py",
        "services/s/handler.py",
        "top.pyc",
        "deep/top.pyc",
    ]
)


def kept(text: str) -> list[str]:
    excluded = DockerIgnore(text).excluded_indices(PATHS)
    return [p for i, p in enumerate(PATHS) if i not in excluded]


def test_star_then_reincludes_as_docker_does() -> None:
    text = "*\n!pkg_a/\n!pkg_b\n**/__pycache__\n"
    assert kept(text) == ["pkg_a/__init__.py", "pkg_a/sub/x.py", "pkg_b/y.py"]
    one = DockerIgnore(text)
    assert [one.excludes(p) for p in PATHS] == [p not in kept(text) for p in PATHS]


def test_patterns_are_anchored_at_the_root_and_match_parents() -> None:
    assert "top.pyc" not in kept("*.pyc\n") and "deep/top.pyc" in kept("*.pyc\n")
    assert "deep/top.pyc" not in kept("**/*.pyc\n")
    assert "pkg_a/sub/x.py" in kept("pkg_a\n!pkg_a/sub/x.py\n")
    assert "pkg_a/__init__.py" not in kept("pkg_a\n!pkg_a/sub/x.py\n")
    assert kept("/services/\n./README.md\n# comment\n\n") == [
        p for p in PATHS if p not in ("README.md", "services/s/handler.py")
    ]
    assert kept("pkg_?/s[u]b\n") == [p for p in PATHS if p != "pkg_a/sub/x.py"]


def test_explain_names_the_file_line_and_pattern() -> None:
    ignore = DockerIgnore("# build only packages\n*\n!pkg_a/\n", ".dockerignore")
    assert ignore.explain("services/s/handler.py") == "excluded by .dockerignore:2 `*`"
    assert ignore.explain("pkg_a/sub/x.py") == "included by .dockerignore:3 `!pkg_a/`"
    assert DockerIgnore("x\n").explain("y") is None


def test_star_first_is_as_fast_as_a_usual_file() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "ignore_speed.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--files", "50000", "--runs", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[2:]}
    # measured quiet: 0.155 s against 0.089 s on 100k paths (was 0.79 s against 0.10 s);
    # the bound leaves room for a loaded 2-core machine
    assert rows["star-first"] <= 5 * rows["usual"] + 0.1, out
