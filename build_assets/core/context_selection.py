"""Which records of a snapshot make up one image's build context: its Dockerfile and the
not-ignored files under its `source_paths`, as index ranges (no per-file objects), plus the
folders Docker ships empty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from build_assets.core.context import MODE_DIR

if TYPE_CHECKING:
    from build_assets.core.gitrepo import Snapshot
    from build_assets.core.ignore import DockerIgnore
    from build_assets.core.model import ImageSpec


@dataclass(frozen=True)
class ContextSelection:
    """Which records of a snapshot make up one image's context (no per-file objects)."""

    ranges: tuple[tuple[int, int], ...]  # sorted, disjoint index ranges
    excluded: frozenset[int]  # indices inside `ranges` that are .dockerignored
    # the Dockerfile's index when the ignore file excludes it: hashed (it is read for the
    # build) but not shipped in the context, as Docker does
    unshipped: int | None = None
    # folders Docker ships empty: every file below them is ignored, the folder itself is not
    empty_dirs: tuple[str, ...] = ()

    def shipped(self):
        """The indices of the files Docker would ship (`indices` minus `unshipped`)."""
        return (i for i in self.indices() if i != self.unshipped)

    def indices(self):
        for lo, hi in self.ranges:
            for i in range(lo, hi):
                if i not in self.excluded:
                    yield i

    def listing(self, records: list[str]) -> str:
        """The canonical listing hashed into the version: one record per file, NUL-ended."""
        parts = []
        for lo, hi in self.ranges:
            if self.excluded and any(lo <= i < hi for i in self.excluded):
                parts.extend(records[i] for i in range(lo, hi) if i not in self.excluded)
            else:
                parts.extend(records[lo:hi])
        parts.extend(f"{MODE_DIR} - 0\t{d}" for d in self.empty_dirs)
        return "\0".join(parts) + "\0" if parts else ""

    def count(self) -> int:
        n = sum(hi - lo for lo, hi in self.ranges)
        return n - sum(1 for i in self.excluded if any(lo <= i < hi for lo, hi in self.ranges))


def _empty_dirs(
    snapshot: Snapshot, ranges: list[tuple[int, int]], hidden: frozenset[int], ignore: DockerIgnore
) -> tuple[str, ...]:
    """The folders of ignored files that Docker still ships, empty: a folder is in Docker's
    context unless the ignore file excludes it or every file of it (then it comes only as
    the parent of a re-included file)."""
    paths = snapshot.paths
    seen: set[str] = set()
    out = []
    for i in sorted(hidden):
        folder = paths[i].rpartition("/")[0]
        while folder and folder not in seen:
            seen.add(folder)
            if not ignore.excludes(folder):
                lo, hi = snapshot.range_of(folder)
                shipped = any(
                    j not in hidden for a, b in ranges for j in range(max(a, lo), min(b, hi))
                )
                if not shipped:
                    out.append(folder)
            folder = folder.rpartition("/")[0]
    return tuple(sorted(out))


def select_context(
    spec: ImageSpec,
    snapshot: Snapshot,
    excluded: frozenset[int],
    ignore: DockerIgnore | None = None,
) -> ContextSelection:
    """Exactly the files of one image's build context: the Dockerfile (always hashed, even
    when the ignore file matches it; then marked `unshipped`) and every not-ignored file under
    its `source_paths`, plus the folders Docker ships empty (given the `ignore` rules)."""
    raw = sorted(
        r
        for r in (snapshot.range_of(p) for p in [spec.dockerfile, *spec.source_paths])
        if r[1] > r[0]
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in raw:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    dockerfile = snapshot.index_of(spec.dockerfile)
    inside = frozenset(
        i for i in excluded if i != dockerfile and any(lo <= i < hi for lo, hi in merged)
    )
    unshipped = dockerfile if dockerfile is not None and dockerfile in excluded else None
    hidden = inside if unshipped is None else inside | {unshipped}
    empty = _empty_dirs(snapshot, merged, hidden, ignore) if hidden and ignore else ()
    return ContextSelection(tuple(merged), inside, unshipped, empty)
