"""Real git repositories for tests (no mocks): write files, run git, commit, and build a
seed-shaped mini monorepo.

Every git command run through `git()` uses a fixed identity and ignores the machine's system
and global git configuration, so tests behave the same on every machine::

    repo = seed_repo(tmp_path / "receipts")        # committed, on branch main
    prepend(repo, HANDLER, "# a handler change")   # the seed's "add a comment" edit
    chmod(repo, AGENT, executable=True)
    symlink(repo, "receipt_agent/alias.py", "validate.py")
    sha = commit_all(repo, "second", date="2001-01-01T00:00:00Z")

The seed monorepo (`SEED_FILES`) mirrors the system this project replaces: three packages,
three chained base images and two Lambda images:

==============================  ===================  =========================================
image                           base                 context (besides its Dockerfile)
==============================  ===================  =========================================
base-receipt-dynamo             (none)               receipt_dynamo/
base-receipt-label              base-receipt-dynamo  receipt_label/
base-receipt-agent              base-receipt-label   receipt_agent/pyproject.toml only
metadata-harmonizer-harmonize   base-receipt-agent   its handler folder + receipt_agent/
create-labels-create            base-receipt-label   its handler folder
==============================  ===================  =========================================
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Fixed identity; the machine's own git configuration is ignored (no signing hooks, no
# autocrlf, no default branch surprises).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

# --- the seed monorepo ------------------------------------------------------------------------

HANDLER = "infra/metadata_harmonizer_step_functions/lambdas/harmonize_metadata.py"
CREATE_HANDLER = "infra/create_labels/lambdas/create_labels.py"
AGENT = "receipt_agent/validate.py"
LABEL = "receipt_label/labeler.py"
DYNAMO = "receipt_dynamo/client.py"

BASES = ["base-receipt-dynamo", "base-receipt-label", "base-receipt-agent"]
HARMONIZE = "metadata-harmonizer-harmonize"
CREATE = "create-labels-create"
ALL_IMAGES = [*BASES, HARMONIZE, CREATE]  # a valid dependency order
LAMBDA_HARMONIZE = "metadata-harmonizer-dev-harmonize-metadata"
LAMBDA_CREATE = "create-labels-dev-create"

SEED_MANIFEST = """\
# The images of the seed monorepo.
images:
  base-receipt-dynamo:
    dockerfile: infra/base_images/dynamo/Dockerfile
    source_paths: [receipt_dynamo]
  base-receipt-label:
    dockerfile: infra/base_images/label/Dockerfile
    base: base-receipt-dynamo
    source_paths: [receipt_label]
  base-receipt-agent:
    dockerfile: infra/base_images/agent/Dockerfile
    base: base-receipt-label
    source_paths: [receipt_agent/pyproject.toml]
  metadata-harmonizer-harmonize:
    dockerfile: infra/metadata_harmonizer_step_functions/lambdas/Dockerfile
    base: base-receipt-agent
    source_paths: [infra/metadata_harmonizer_step_functions/lambdas, receipt_agent]
    build_args: {HANDLER: harmonize_metadata.handler}
    lambda: metadata-harmonizer-dev-harmonize-metadata
  create-labels-create:
    dockerfile: infra/create_labels/lambdas/Dockerfile
    base: base-receipt-label
    source_paths: [infra/create_labels/lambdas]
    build_args: {HANDLER: create_labels.handler}
    lambda: create-labels-dev-create
"""

_ON_BASE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"

SEED_FILES: dict[str, str] = {
    "images.yaml": SEED_MANIFEST,
    ".dockerignore": "**/__pycache__\n**/*.pyc\n",
    ".gitignore": ".venv/\n*.log\n",
    "README.md": "# receipts\n",
    # packages
    "receipt_dynamo/pyproject.toml": '[project]\nname = "receipt-dynamo"\nversion = "0.1.0"\n',
    "receipt_dynamo/__init__.py": '"""DynamoDB access."""\n',
    DYNAMO: "class DynamoClient:\n    def __init__(self, table):\n        self.table = table\n",
    "receipt_label/pyproject.toml": '[project]\nname = "receipt-label"\nversion = "0.1.0"\n',
    "receipt_label/__init__.py": '"""Labelling."""\n',
    LABEL: "def label(word):\n    return 'TOTAL' if word == 'total' else 'OTHER'\n",
    "receipt_agent/pyproject.toml": '[project]\nname = "receipt-agent"\nversion = "0.1.0"\n',
    "receipt_agent/__init__.py": '"""Agents."""\n',
    AGENT: "def validate(metadata):\n    return bool(metadata.get('merchant_name'))\n",
    # base images
    "infra/base_images/dynamo/Dockerfile": "FROM scratch\n"
    + "COPY receipt_dynamo /var/task/receipt_dynamo\n",
    "infra/base_images/label/Dockerfile": _ON_BASE + "COPY receipt_label /var/task/receipt_label\n",
    "infra/base_images/agent/Dockerfile": _ON_BASE
    + "COPY receipt_agent/pyproject.toml /var/task/requirements/receipt_agent.toml\n",
    # Lambda images
    "infra/metadata_harmonizer_step_functions/lambdas/Dockerfile": _ON_BASE
    + "ARG HANDLER\nCOPY receipt_agent /var/task/receipt_agent\n"
    + f"COPY {HANDLER} /var/task/\n"
    + 'CMD ["harmonize_metadata.handler"]\n',
    HANDLER: "from receipt_agent.validate import validate\n\n\ndef handler(event, context):\n"
    "    return {'valid': validate(event)}\n",
    "infra/create_labels/lambdas/Dockerfile": _ON_BASE
    + f"ARG HANDLER\nCOPY {CREATE_HANDLER} /var/task/\n"
    + 'CMD ["create_labels.handler"]\n',
    CREATE_HANDLER: "from receipt_label.labeler import label\n\n\ndef handler(event, context):\n"
    "    return {'labels': [label(w) for w in event]}\n",
}


# --- running git ------------------------------------------------------------------------------


def git(repo: Path, *args: str, date: str | None = None) -> str:
    """Run `git ARGS` in `repo` with the fixed identity; return stdout without the final
    newline. `date` sets both author and committer dates. Raises CalledProcessError (with
    git's stderr) when git fails."""
    env = {**os.environ, **GIT_ENV}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, ["git", *args], proc.stdout, proc.stderr
        )
    return proc.stdout.rstrip("\n")


def commit_all(repo: Path, message: str = "commit", date: str | None = None) -> str:
    """Stage everything (`git add -A`) and commit, even when nothing changed; return the sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


def head(repo: Path) -> str:
    """The full sha of HEAD."""
    return git(repo, "rev-parse", "HEAD")


# --- files --------------------------------------------------------------------------------------


def write(repo: Path, files: Mapping[str, str | bytes]) -> None:
    """Write files given as {repo-relative path: text or bytes}, creating folders."""
    for rel, content in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def prepend(repo: Path, rel: str, line: str) -> None:
    """Add a line at the top of a file (the seed's "add a comment at the top" edits)."""
    target = repo / rel
    target.write_text(f"{line}\n{target.read_text()}")


def replace_in(repo: Path, rel: str, old: str, new: str) -> None:
    """Replace the one occurrence of `old` in a file (AssertionError unless exactly one)."""
    target = repo / rel
    text = target.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
    target.write_text(text.replace(old, new))


def chmod(repo: Path, rel: str, executable: bool = True) -> None:
    """Make a file executable (0755) or not (0644)."""
    os.chmod(repo / rel, 0o755 if executable else 0o644)


def symlink(repo: Path, rel: str, target: str) -> None:
    """Create (or re-point) the symlink `rel` -> `target` (target as written, e.g. relative)."""
    link = repo / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)


def touch_all(repo: Path, when: float = 1_000_000_000.0) -> int:
    """Set the mtime of every working-tree file (outside .git) to `when`: git's index turns
    stat-stale while no content changes. Returns the number of files touched."""
    n = 0
    for path in repo.rglob("*"):
        if ".git" in path.relative_to(repo).parts or path.is_symlink() or not path.is_file():
            continue
        os.utime(path, (when, when))
        n += 1
    return n


def copy_repo(src: Path, dest: Path, preserve_times: bool = True) -> Path:
    """Copy a repository folder, .git included (like `cp -a`, or `cp -r` when
    `preserve_times` is False). Either way every index entry is stat-stale: new inodes."""
    shutil.copytree(
        src, dest, symlinks=True, copy_function=shutil.copy2 if preserve_times else shutil.copy
    )
    return dest


# --- repositories -------------------------------------------------------------------------------


def make_repo(path: Path, files: Mapping[str, str | bytes], commit: bool = True) -> Path:
    """A new git repository at `path` (branch main) holding `files`, committed unless told not
    to."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    write(path, files)
    if commit:
        commit_all(path, "initial")
    return path


def seed_repo(path: Path, commit: bool = True) -> Path:
    """The seed-shaped mini monorepo (`SEED_FILES`) as a new repository at `path`."""
    return make_repo(path, SEED_FILES, commit=commit)


def clone(src: Path, dest: Path) -> Path:
    """`git clone` of `src` into `dest` (parents created)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(dest.parent, "clone", "-q", str(src), str(dest))
    return dest
