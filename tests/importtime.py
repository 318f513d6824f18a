"""Run the CLI in a fresh interpreter with `-X importtime` and read back what it imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPORT = "import time:"


def run_cli(
    *args: str, cwd: Path, home: Path, importtime: bool = False
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python [-X importtime] -m build_assets ARGS` with no BUILD_ASSETS_* setting but
    BUILD_ASSETS_HOME=`home`. Returns the process, whose stderr is stripped of the import
    report, and the modules it imported (dotted names; empty without `importtime`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env["BUILD_ASSETS_HOME"] = str(home)
    flags = ["-X", "importtime"] if importtime else []
    proc = subprocess.run(
        [sys.executable, *flags, "-m", "build_assets", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    lines = proc.stderr.splitlines()
    modules = {
        line.rsplit("|", 1)[1].strip() for line in lines if line.startswith(REPORT) and "|" in line
    }
    proc.stderr = "\n".join(line for line in lines if not line.startswith(REPORT))
    return proc, modules


def run_importtime(
    *args: str, cwd: Path, home: Path
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`run_cli` with `-X importtime`, asserting success and that the report is there."""
    proc, modules = run_cli(*args, cwd=cwd, home=home, importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "build_assets" in modules  # the report is there: an empty set proves nothing
    return proc, modules


def top_level(modules: set[str]) -> set[str]:
    """The packages of dotted module names ('dagster._core.x' -> 'dagster')."""
    return {name.split(".")[0] for name in modules}
