"""Checks of the paths a manifest names against a working tree."""

from __future__ import annotations

import os
from pathlib import Path

from build_assets.core.show import show


class RepoPaths:
    """Checks manifest paths against a working tree: they must exist, and no folder on the
    way may be a symlink (git sees no files through one: the context would silently lack
    them, or the path would lead out of the repository)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real_root = os.path.realpath(root)
        self._links: dict[str, str | None] = {}  # folder -> problem, per folder prefix

    def __call__(self, path: str) -> bool | str:
        parts = path.split("/")
        for i in range(1, len(parts)):
            problem = self._folder_problem("/".join(parts[:i]))
            if problem:
                return problem
        return os.path.lexists(self.root / path)

    def _folder_problem(self, folder: str) -> str | None:
        if folder not in self._links:
            full = self.root / folder
            problem = None
            if os.path.islink(full):
                target = os.path.realpath(full)
                inside = os.path.commonpath([self._real_root, target]) == self._real_root
                if not inside:
                    problem = (
                        f"leads out of the repository through the symlink '{folder}'"
                        f" (-> {show(os.readlink(full))[1:-1]})"
                    )
                else:
                    real = os.path.relpath(target, self._real_root)
                    problem = (
                        f"goes through the symlink '{folder}': git sees no files there; use"
                        f" the real path under '{real}'"
                    )
            self._links[folder] = problem
        return self._links[folder]
