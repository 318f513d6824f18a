"""What git leaves out of a context that Docker would ship: git-ignored files and paths
outside `source_paths`, named with the rule that decides them.

A build context holds only what git tracks or sees (untracked and not ignored): that rule
stays, so a build is a function of git content. These helpers say *why* a COPY source is
missing from a context (`git-ignored by .gitignore:3 \\`vendor/\\``, `not under source_paths`)
and which git-ignored files a COPY of a folder loses, so nobody finds out at run time.
Only the working tree has ignored files; at a commit a path is there or not.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from build_assets.core.ignore import DockerIgnore

_GIT = ("git", "-c", "core.quotepath=off", "--literal-pathspecs")
SHOWN = 3  # paths named in a warning
NOWHERE = "no such file in the repository"
_OTHERS_IGNORED = ("ls-files", "--others", "--ignored", "--exclude-standard", "-z", "--")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_GIT, *args], cwd=root, capture_output=True, check=False)


def git_ignore_rule(root: Path, path: str) -> str | None:
    """'git-ignored by .gitignore:3 `vendor/`' when a git ignore rule decides `path`."""
    proc = subprocess.run(  # no pathspec magic here: git check-ignore refuses it
        ["git", "check-ignore", "-v", "--no-index", "-z", "--stdin"],
        cwd=root,
        input=path.encode() + b"\0",
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    source, line, pattern = proc.stdout.decode(errors="replace").split("\0")[:3]
    if source.endswith("info/exclude"):
        source = ".git/info/exclude"
    else:  # git names it relative to the top level (absolute for core.excludesFile)
        where = Path(source) if os.path.isabs(source) else root / source
        try:
            source = where.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            source = str(where)  # a global excludes file: named in full
    return f"git-ignored by {source}:{line} `{pattern}`"


def missing_reason(root: Path, commit: str | None, path: str) -> str:
    """Why `path`, named by a COPY, is in no context: git-ignored (naming the rule), outside
    every `source_paths`, or not in the repository at all."""
    if commit is not None:
        proc = _git(root, "cat-file", "-e", f"{commit}:{path}")
        return "not under source_paths" if proc.returncode == 0 else NOWHERE
    if not os.path.lexists(root / path):
        return NOWHERE
    rule = git_ignore_rule(root, path)
    if rule is not None:
        return rule
    # a folder whose every file is ignored: name the rule of its first file
    listed = _git(root, *_OTHERS_IGNORED, path)
    first = next((p for p in listed.stdout.decode(errors="replace").split("\0") if p), None)
    tracked = _git(root, "ls-files", "-z", "--", path).stdout
    if first is not None and not tracked:
        rule = git_ignore_rule(root, first)
        if rule is not None:
            return f"every file there is {rule}"
    return "not under source_paths"


def ignored_files(root: Path, listed: list[str], folders: Iterable[str]) -> list[str]:
    """The git-ignored files below `folders`, from git's listing `listed` (files, and wholly
    ignored folders as `folder/`, which are walked on disk only where a folder asks)."""
    wanted = sorted({f.strip("/") for f in folders})
    out = []
    for path in listed:
        name = path.rstrip("/")
        if not any(
            name == w or name.startswith(w + "/") or w.startswith(name + "/") for w in wanted
        ):
            continue
        if not path.endswith("/"):
            out.append(path)
            continue
        for top, dirs, files in os.walk(root / name):
            dirs.sort()
            rel = Path(top).relative_to(root).as_posix()
            out.extend(f"{rel}/{f}" for f in sorted(files))
    return sorted(out)


def lost_by_copies(
    image: str,
    dockerfile: str,
    copies: Iterable[tuple[int, str, str, str]],
    ignored: list[str],
    rules: DockerIgnore | None,
) -> str | None:
    """One warning line for an image whose COPY/ADD of a folder loses git-ignored files that
    Docker would ship (not excluded by the ignore file in force), or None."""
    parts = []
    for line, keyword, written, source in copies:
        prefix = source.strip("/").removeprefix("./")
        if not prefix or prefix == ".":
            continue
        lost = [
            p
            for p in ignored
            if (p == prefix or p.startswith(prefix + "/")) and not (rules and rules.excludes(p))
        ]
        if lost:
            shown = ", ".join(lost[:SHOWN]) + (", …" if len(lost) > SHOWN else "")
            parts.append(
                f"{dockerfile}:{line}: {keyword} '{written}' leaves out {len(lost)} git-ignored"
                f" file{'s' if len(lost) != 1 else ''} Docker would ship ({shown})"
            )
    if not parts:
        return None
    return (
        f"image '{image}': " + "; ".join(parts) + ": build-assets ships only what git tracks or"
        " sees; track them (git add -f), or make them in a RUN step"
    )
