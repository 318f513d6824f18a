"""`plan`: which images would be rebuilt, and why, in words a person acts on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from build_assets.core.context import ContextFile

if TYPE_CHECKING:  # plan stays importable without pydantic (the fast `plan` path)
    from build_assets.core.versioning import ImageVersion, VersionSet


@dataclass(frozen=True)
class BuiltState:
    """What an image was last built from (from a VersionSet at a ref, or a build record)."""

    version: str
    identity: dict
    files: tuple[ContextFile, ...]
    base_version: str | None
    # why a path was out of that context (an ignore rule), when known
    exclusion: Callable[[str], str | None] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, image: ImageVersion) -> BuiltState:
        return cls(image.version, image.identity, image.files, image.base_version, image.exclusion)


@dataclass
class PlanEntry:
    """One image of a plan."""

    name: str
    version: str
    tag: str
    base: str | None
    lambdas: list[str]
    changed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """`dataclasses.asdict` of the entry, without its deep copies (200 images: ms)."""
        return {
            "name": self.name,
            "version": self.version,
            "tag": self.tag,
            "base": self.base,
            "lambdas": list(self.lambdas),
            "changed": self.changed,
            "reasons": list(self.reasons),
        }


def file_reasons(
    old: tuple[ContextFile, ...],
    new: tuple[ContextFile, ...],
    dockerfile: str,
    was_excluded: Callable[[str], str | None] | None = None,
    now_excluded: Callable[[str], str | None] | None = None,
    now_included: Callable[[str], str | None] | None = None,
):
    """Per-file reasons between two context file sets ('x modified', 'new file y', ...).

    With the ignore explanations of both sides, a file that only moved in or out of the
    context through an ignore rule says so ('x now included by .dockerignore:2 `!x`')."""
    before = {f.path: f for f in old}
    after = {f.path: f for f in new}
    reasons = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        # names that are not UTF-8 come surrogate-escaped from git: show their bytes as \xNN
        path = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if path == dockerfile and a is not None and b is not None:
            reasons.append("Dockerfile changed")
        elif a is None:
            if was_excluded is not None and was_excluded(path):
                how = (now_included(path) if now_included else None) or "included"
                reasons.append(f"{path} now {how}")
            else:
                reasons.append(f"new file {path}")
        elif b is None:
            why = now_excluded(path) if now_excluded is not None else None
            reasons.append(f"{path} now {why}" if why else f"{path} deleted")
        else:
            if a.blob != b.blob:
                reasons.append(f"{path} modified")
            if a.mode != b.mode:
                reasons.append(f"mode of {path} changed")
    return reasons


def entry_reasons(old: dict, new: dict) -> list[str]:
    """Reasons from the image's own manifest entry."""
    reasons = []
    if old.get("dockerfile") != new.get("dockerfile"):
        reasons.append(f"dockerfile path changed to {new.get('dockerfile')}")
    if old.get("source_paths") != new.get("source_paths"):
        reasons.append("source_paths changed")
    if old.get("build_args") != new.get("build_args"):
        reasons.append("build_args changed")
    if old.get("platform") != new.get("platform"):
        reasons.append(f"platform changed to {new.get('platform') or 'the default'}")
    if old.get("dockerignore") != new.get("dockerignore"):
        reasons.append(f"ignore file changed to {new.get('dockerignore') or '.dockerignore'}")
    if old.get("base_arg") != new.get("base_arg"):
        reasons.append("base_arg changed")
    was, now = old.get("external_bases") or {}, new.get("external_bases") or {}
    for ref in sorted(was.keys() | now.keys()):
        if was.get(ref) != now.get(ref):  # bases.lock (core.lock)
            reasons.append(f"{ref} pinned at {(now.get(ref) or 'nothing')[:19]} in bases.lock")
    if old.get("base") != new.get("base"):
        reasons.append(
            f"base changed from {old.get('base') or 'none'} to {new.get('base') or 'none'}"
        )
    return reasons


def compare(
    current: VersionSet, previous: dict[str, BuiltState], missing_reason: str
) -> list[PlanEntry]:
    """Plan entries for every image of `current`, compared with `previous` states by name."""
    entries = []
    changed_names: set[str] = set()
    for img in current:
        old = previous.get(img.name)
        if old is None:
            reasons = [missing_reason]
        elif old.version == img.version:
            reasons = []
        else:
            identity = img.identity
            reasons = entry_reasons(old.identity, identity)
            reasons += file_reasons(
                old.files,
                img.files,
                img.spec.dockerfile,
                was_excluded=old.exclusion,
                now_excluded=img.exclusion,
                now_included=img.inclusion,
            )
            if (
                img.base
                and old.identity.get("base") == img.base
                and old.base_version != img.base_version
            ):
                reasons.append(f"base {img.base} changed")
            if not reasons:
                reasons.append("build inputs changed")
        changed = old is None or old.version != img.version
        if changed:
            changed_names.add(img.name)
        entries.append(
            PlanEntry(
                name=img.name,
                version=img.version,
                tag=img.tag,
                base=img.base,
                lambdas=list(img.lambdas),
                changed=changed,
                reasons=reasons,
            )
        )
    return entries


def built_states(current: VersionSet, registry: dict) -> list[PlanEntry]:
    """Plan entries against what the registry says (image -> `provenance.RegistryState`):
    an image whose current tag is there is unchanged; else its reasons are computed against
    the provenance of its last build (`last-build`); else it was never built."""
    states: dict[str, BuiltState] = {}
    deleted: set[str] = set()
    for img in current:
        state = registry.get(img.name)
        if state is None:
            continue
        if state.digest is not None:
            states[img.name] = BuiltState.of(img)
        elif state.last is not None and state.last.version == img.version:
            deleted.add(img.name)  # built once, but its tag is gone (gc, lifecycle)
        elif state.last is not None:
            last = state.last
            states[img.name] = BuiltState(
                last.version, last.identity, last.files, last.base_version
            )
    entries = compare(current, states, "not built yet")
    for entry in entries:
        if entry.name in deleted:
            entry.reasons = [f"tag {entry.tag} was deleted from the registry"]
    return entries


def plan_since(current: VersionSet, previous: VersionSet) -> list[PlanEntry]:
    """Compare the working tree's versions with those at an earlier ref."""
    states = {img.name: BuiltState.of(img) for img in previous}
    return compare(current, states, "new image")
