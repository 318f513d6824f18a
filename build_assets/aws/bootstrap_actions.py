"""What `bootstrap` did (or, in a dry run, would do) to each AWS resource, and how it says so.

Every resource is read first and written only when it differs (`differs`), so each ends
`created`, `updated` (with what changed) or `unchanged`; what bootstrap creates carries `TAGS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
PLANNED = {CREATED: "would create", UPDATED: "would update", UNCHANGED: "unchanged"}
TAGS = {"managed-by": "build-assets"}


@dataclass(frozen=True)
class Action:
    """What bootstrap did (or, in a dry run, would do) to one resource."""

    kind: str  # "s3-bucket" | "ecr-repository" | "iam-role" | "iam-policy" | "codebuild-project"
    name: str
    status: str  # created | updated | unchanged
    changes: tuple[str, ...] = ()
    dry_run: bool = False

    def __str__(self) -> str:
        verb = PLANNED[self.status] if self.dry_run else self.status
        detail = f" ({', '.join(self.changes)})" if self.changes else ""
        return f"{verb:<12} {self.kind:<18} {self.name}{detail}"


def summary(actions: Iterable[Action], dry_run: bool) -> str:
    """One line counting the actions per status: `2 created, 0 updated, 5 unchanged`."""
    statuses = [a.status for a in actions]
    counts = {s: statuses.count(s) for s in (CREATED, UPDATED, UNCHANGED)}
    line = ", ".join(f"{n} {PLANNED[s] if dry_run else s}" for s, n in counts.items())
    return ("dry run: " if dry_run else "") + line


def status_of(changes: Sequence[str]) -> str:
    """`updated` when anything changed, else `unchanged`."""
    return UPDATED if changes else UNCHANGED


def differs(desired: Any, actual: Any) -> bool:
    """True when `actual` does not contain `desired` (dicts compared on desired's keys only)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(differs(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(differs(d, a) for d, a in zip(desired, actual, strict=True))
    return desired != actual


def tag_list(key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    """`TAGS` as the list of pairs AWS APIs take (CodeBuild spells them `key`/`value`)."""
    return [{key: k, value: v} for k, v in TAGS.items()]
