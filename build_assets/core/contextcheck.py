"""What a Dockerfile needs from its build context, checked before any build starts.

Every `COPY`/`ADD` source read from the context (not `--from=` a stage or image, not a URL,
not a heredoc, not a wildcard: BuildKit copies nothing for one that matches nothing) must be
in the image's context as Docker would ship it (a file, or a folder with a file or a folder
Docker ships empty; an ignored Dockerfile is not in it), every `source_paths` entry must
contribute to it, and a `base:` needs a build arg for the first `FROM` to take it from. Each
problem is one line naming the image, `Dockerfile:LINE`, the source and why it is missing
(the `.dockerignore` line that excluded it, the `.gitignore` line that ignores it, "not under
source_paths"), so a wrong context fails `plan` instead of a build minutes later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from build_assets.core.context import DOCKERFILE_SLOT
from build_assets.core.dockerfile import Dockerfile
from build_assets.core.gitignored import NOWHERE as _NOWHERE
from build_assets.core.gitignored import missing_reason
from build_assets.core.ignore import DockerIgnore

if TYPE_CHECKING:
    from build_assets.core.context_selection import ContextSelection
    from build_assets.core.gitrepo import Snapshot
    from build_assets.core.model import Manifest

_GLOB = re.compile(r"[*?\[]")


def ignore_file_for(manifest: Manifest, name: str, snapshot: Snapshot) -> str | None:
    """The ignore file in force for an image: the manifest's `dockerignore` (per image, else
    manifest-wide; `false`: none), else Docker's rule: `<Dockerfile>.dockerignore` next to
    the Dockerfile replaces the root `.dockerignore`."""
    return manifest.ignore_file_in_force(name, lambda path: snapshot.index_of(path) is not None)


@dataclass(frozen=True)
class ImageCheck:
    """The outcome of checking one image: its base arg and its problems (one line each)."""

    base_arg: str | None
    problems: list[str]


def _clean(source: str) -> str:
    parts = [p for p in source.split("/") if p not in ("", ".")]
    return "/".join(parts)


def _names_empty_dir(empty_dirs: tuple[str, ...], path: str) -> bool:
    """True when a COPY source or `source_paths` entry is, or holds, a folder Docker ships
    empty."""
    return any(d == path or d.startswith(path + "/") for d in empty_dirs)


def _why(
    indices: range, selection: ContextSelection, snapshot: Snapshot, ignore: DockerIgnore
) -> str | None:
    """None when one of `indices` (a file's or a folder's index range) is in the context,
    else why none of them is (an ignored Dockerfile is read for the build but is not in the
    context, as in Docker)."""
    if not indices:
        return _NOWHERE
    hidden = selection.excluded
    if selection.unshipped is not None:
        hidden = hidden | {selection.unshipped}
    first_excluded = None
    for lo, hi in selection.ranges:  # intersect index ranges: no loop over the repo's files
        for i in range(max(lo, indices.start), min(hi, indices.stop)):
            if i not in hidden:
                return None
            if first_excluded is None:
                first_excluded = i
    if first_excluded is None:
        return "not under source_paths"
    return ignore.explain(snapshot.paths[first_excluded]) or "excluded by the ignore file"


def check_image(
    manifest: Manifest,
    name: str,
    dockerfile: Dockerfile,
    snapshot: Snapshot,
    selection: ContextSelection,
    ignore: DockerIgnore,
) -> ImageCheck:
    """Check one image's Dockerfile against its context and its `base`."""
    spec = manifest.images[name]
    where = f"{manifest.source}: image '{name}'"
    problems: list[str] = []
    for line, keyword, written, source in dockerfile.context_sources(spec.build_args):
        path = _clean(source)
        if not path:
            continue  # the context root: Docker copies it even when empty
        if _GLOB.search(path):
            continue  # BuildKit copies nothing for a wildcard that matches nothing
        if _names_empty_dir(selection.empty_dirs, path):
            continue  # a folder Docker ships empty: COPY copies it
        why = _why(range(*snapshot.range_of(path)), selection, snapshot, ignore)
        if why == _NOWHERE:  # not among the files the snapshot lists: say why
            why = missing_reason(snapshot.root, snapshot.commit, path)
        if why:
            problems.append(
                f"{where}: {spec.dockerfile}:{line}: {keyword} source '{written}' matches no"
                f" file of the build context ({why})"
            )
    reserved = DOCKERFILE_SLOT.partition("/")[0]
    lo, hi = snapshot.range_of(reserved)
    if hi > lo and any(a < hi and lo < b for a, b in selection.ranges):
        problems.append(
            f"{where}, field 'source_paths': the context holds files under '{reserved}/',"
            " a folder build-assets reserves for the Dockerfile it ships: rename it or leave"
            " it out of source_paths"
        )
    for entry in spec.source_paths:
        lo, hi = snapshot.range_of(entry)
        if _names_empty_dir(selection.empty_dirs, entry.strip("/")):
            continue  # it contributes a folder Docker ships empty
        if hi > lo and all(i in selection.excluded for i in range(lo, hi)):
            why = ignore.explain(snapshot.paths[lo]) or "excluded by the ignore file"
            problems.append(
                f"{where}, field 'source_paths': '{entry}' contributes no file to the build"
                f" context ({why})"
            )
        elif hi == lo:
            problems.append(
                f"{where}, field 'source_paths': '{entry}' contributes no file to the build"
                " context (no file git tracks or sees there)"
            )
    base_arg = spec.base_arg or dockerfile.base_arg
    if spec.base is not None:
        first = dockerfile.froms[0] if dockerfile.froms else None
        at = f"{spec.dockerfile}:{first.line}" if first else spec.dockerfile
        if first is None:
            problems.append(f"{where}, field 'base': {spec.dockerfile} has no FROM line")
        elif spec.base_arg is not None and spec.base_arg not in dockerfile.global_args:
            problems.append(
                f"{where}, field 'base_arg': {at}: no `ARG {spec.base_arg}` before this FROM"
                f" (`FROM {first.image}`): the base would be ignored"
            )
        elif spec.base_arg is None and dockerfile.base_arg is None:
            problems.append(
                f"{where}, field 'base': {at}: `FROM {first.image}` takes no build arg, so the"
                " base would be ignored (write `ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}`, or set"
                " base_arg)"
            )
        elif spec.base_arg is None and dockerfile.base_arg not in dockerfile.global_args:
            problems.append(
                f"{where}, field 'base': {at}: `FROM {first.image}` names"
                f" {dockerfile.base_arg} but no `ARG {dockerfile.base_arg}` precedes it"
            )
    if spec.base is not None and spec.base_arg is None and base_arg in spec.build_args:
        # (an explicit `base_arg` in build_args is reported by the manifest's validation)
        first = dockerfile.froms[0]
        problems.append(
            f"{where}, field 'build_args': '{base_arg}' receives the base"
            f" ({spec.dockerfile}:{first.line}: `FROM {first.image}`); it is set from 'base'"
            f" ({spec.base}): remove it"
        )
    return ImageCheck(base_arg, problems)
