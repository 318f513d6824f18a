"""Real git repositories for tests: write files, commit, and a seed-shaped monorepo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "receipts"

HANDLER = "infra/metadata_harmonizer_step_functions/lambdas/harmonize_metadata.py"
AGENT = "receipt_agent/validate.py"
DYNAMO = "receipt_dynamo/client.py"
BASES = ["base-receipt-dynamo", "base-receipt-label", "base-receipt-agent"]
HARMONIZE = "metadata-harmonizer-harmonize"
CREATE = "create-labels-create"
ALL_IMAGES = [*BASES, HARMONIZE, CREATE]


def git(repo: Path, *args: str, date: str | None = None) -> str:
    """Run git in `repo` with a fixed identity; return stdout."""
    env = {**os.environ, **GIT_ENV}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def write(repo: Path, files: dict[str, str]) -> None:
    """Write text files (creating folders)."""
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit_all(repo: Path, message: str = "commit", date: str | None = None) -> str:
    """Stage everything and commit; return the new commit sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, files: dict[str, str], commit: bool = True) -> Path:
    """A new git repository at `path` holding `files` (committed unless told not to)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    write(path, files)
    if commit:
        commit_all(path, "initial")
    return path


def seed_repo(path: Path) -> Path:
    """A committed copy of examples/receipts: the seed's monorepo in small."""
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "seed monorepo")
    return path


def prepend(repo: Path, rel: str, line: str) -> None:
    """Add a line at the top of a file (the seed's 'add a comment' edits)."""
    target = repo / rel
    target.write_text(f"{line}\n{target.read_text()}")
