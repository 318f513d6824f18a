"""Running git: one command now (`run`) or started in the background (`GitJob`),
limited to the top-level folders a caller needs (`pathspec`)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from build_assets.errors import GitError

GIT = ("git", "-c", "core.quotepath=off", "--literal-pathspecs")


def run(args: Sequence[str], cwd: Path, *, input: bytes | None = None) -> bytes:
    """Output of `git args` in `cwd` (GitError with git's last line when it fails)."""
    proc = subprocess.run([*GIT, *args], cwd=cwd, input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {msg[-1] if msg else '?'}")
    return proc.stdout


def pathspec(paths: Iterable[str] | None) -> list[str]:
    """Limit git to the top-level folders of `paths`: git matches every file against every
    pathspec, so hundreds of precise ones cost more than they save; callers filter exactly."""
    if paths is None:
        return []
    tops = {p.strip("/").split("/", 1)[0] for p in paths}
    if "" in tops or "." in tops:
        return []
    return ["--", *sorted(tops)]


class GitJob:
    """One git command started in the background, its output drained by a thread."""

    def __init__(self, root: Path, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*GIT, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out: tuple[bytes, bytes] = (b"", b"")
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        self._out = self.proc.communicate()

    def result(self, root: Path) -> bytes:
        self._thread.join()
        out, err = self._out
        if self.proc.returncode != 0:
            msg = err.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {self.args[0]} failed in {root}: {msg[-1] if msg else '?'}")
        return out
