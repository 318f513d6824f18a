"""Run the CLI in a fresh interpreter with `-X importtime` and read back what it imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPORT = "import time:"


def run_importtime(
    *args: str, cwd: Path, home: Path
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -X importtime -m build_assets ARGS` with no BUILD_ASSETS_* setting but
    BUILD_ASSETS_HOME=`home`; asserts success. Returns the process, whose stderr is stripped
    of the import report, and the modules it imported (dotted names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILD_ASSETS_")}
    env["BUILD_ASSETS_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "build_assets", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    modules = {
        line.rsplit("|", 1)[1].strip() for line in lines if line.startswith(REPORT) and "|" in line
    }
    proc.stderr = "\n".join(line for line in lines if not line.startswith(REPORT))
    assert "build_assets" in modules  # the report is there: an empty set proves nothing
    return proc, modules


def top_level(modules: set[str]) -> set[str]:
    """The packages of dotted module names ('dagster._core.x' -> 'dagster')."""
    return {name.split(".")[0] for name in modules}
