"""External base images and `bases.lock`, the committed file that pins them by digest.

An external base is an image a build starts from that the manifest does not build: a `FROM`
of a Dockerfile (after ARG-default and build-arg expansion) that is not the manifest `base`,
not a stage, not `scratch`, not another image of the manifest and not already pinned
(`@sha256:…`), or a manifest `base:` naming a registry reference (`registry/repo:tag`).

`bases.lock` lives next to the manifest (YAML, written by `build-assets bases update`)::

    bases:
      public.ecr.aws/lambda/python:3.12: sha256:…

The digest of every external base an image uses is part of its version, so versions stay a
pure function of the repository's content and re-pinning a base is one reviewable commit that
makes exactly its dependent cascade stale. When a `FROM` takes its image from a build arg
(`FROM ${X}` / `${X:-default}`), the build receives the pinned `repo@sha256:…` in that arg; a
literal `FROM repo:tag` is rewritten to `FROM repo@sha256:…` in the Dockerfile the build ships
(`pin_literal_froms`), so either way the build starts from exactly the base its version names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from build_assets.core.model import is_external
from build_assets.errors import UserError

if TYPE_CHECKING:  # the plan's cache path reads the lock without parsing any Dockerfile
    from build_assets.core.dockerfile import Dockerfile

LOCK_FILE = "bases.lock"
HEADER = (
    "# External base images pinned by digest; part of every dependent image's version.\n"
    "# Written by `build-assets bases update` (commit it: a re-pin is one reviewable change).\n"
)
DOCKER_HUB = "registry-1.docker.io"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@\[\]-]*$")


def valid_reference(ref: str) -> bool:
    """True for something that looks like `[host/]repo[:tag][@digest]` (one line, no spaces)."""
    return len(ref) <= 512 and bool(_REFERENCE.match(ref))


@dataclass(frozen=True)
class ExternalBase:
    """One external base of an image: its reference (no digest), where it is named, and the
    build arg that carries it (`FROM ${X}`), which can receive the pinned reference."""

    reference: str
    arg: str | None
    line: int | None  # Dockerfile line; None for a manifest `base:`
    digest: str | None = None  # pinned where it is named (`FROM ref@sha256:…`): not locked


def _repo_name(ref: str) -> str:
    """The last path component of a reference without tag or digest ('python')."""
    last = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_bases(
    dockerfile: Dockerfile,
    build_args: dict[str, str],
    base: str | None,
    base_arg: str | None,
    images: Iterable[str],
) -> list[ExternalBase]:
    """Every external base of one image, in Dockerfile order (an external manifest base
    first), those already pinned by a digest where they are named included.

    `base`/`base_arg`: the image's manifest base and the arg that receives it (default: the
    arg of the first FROM); every FROM naming that arg is the manifest base, in any stage
    (`dockerfile.image_froms`). `images`: the names of the manifest's images (a FROM naming
    one of them is not external)."""
    from build_assets.core.dockerfile import image_froms

    names = set(images)
    receives = (base_arg or dockerfile.base_arg) if base is not None else None
    out: list[ExternalBase] = []
    if base is not None and is_external(base):
        ref, _, digest = base.partition("@")
        out.append(ExternalBase(ref, receives, None, digest or None))
    for frm in image_froms(dockerfile, build_args, receives):
        if _repo_name(frm.reference) not in names:
            out.append(ExternalBase(frm.reference, frm.arg, frm.line, frm.digest))
    return out


def external_bases(
    dockerfile: Dockerfile,
    build_args: dict[str, str],
    base: str | None,
    base_arg: str | None,
    images: Iterable[str],
) -> list[ExternalBase]:
    """The external bases of one image that the lock pins (`image_bases` without those a
    digest pins where they are named), in Dockerfile order (the manifest base first)."""
    found = image_bases(dockerfile, build_args, base, base_arg, images)
    return [e for e in found if e.digest is None]


def split_reference(ref: str) -> tuple[str, str]:
    """(registry host + repository, tag) of a reference, Docker Hub's names made explicit."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = "latest"
    if ":" in last:
        tag = last.split(":", 1)[1]
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    head, _, rest = name.partition("/")
    if rest and ("." in head or ":" in head or head == "localhost"):
        return name, tag
    return f"{DOCKER_HUB}/{name if rest else 'library/' + name}", tag


def pinned_reference(ref: str, digest: str) -> str:
    """`repo@sha256:…`: the reference a build uses for a pinned base."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return f"{name}@{digest}"


def pin_literal_froms(
    text: bytes, pins: dict[str, str], build_args: dict[str, str], where: str
) -> bytes:
    """The Dockerfile `text` with the image of every literal `FROM` (not `FROM ${ARG}`) whose
    reference `pins` maps replaced by its pinned `repo@sha256:…`, so the build starts from
    exactly the locked base. (Docker has no flag that redirects a literal FROM; BuildKit's
    --build-context needs buildx.) `build_args` expand `FROM repo:${VERSION}`."""
    from build_assets.core.dockerfile import expand, parse

    lines = text.decode("utf-8", "surrogateescape").split("\n")
    dockerfile = parse("\n".join(lines))
    values = {k: v for k, v in dockerfile.global_args.items() if v is not None}
    values.update(build_args)
    stages: set[str] = set()  # a FROM naming an earlier stage is that stage, not an image
    for frm in dockerfile.froms:
        ref = None if frm.image.startswith("$") else expand(frm.image, values)
        pinned = pins.get(ref or "") if (ref or "").lower() not in stages else None
        stages |= {frm.stage.lower()} if frm.stage else set()
        if pinned is None:
            continue
        word = re.compile(r"(?<!\S)" + re.escape(frm.image) + r"(?!\S)")
        line = lines[frm.line - 1]
        keyword = re.match(r"\s*FROM\s", line, re.IGNORECASE)
        found = word.search(line, keyword.end()) if keyword else None
        if found is None:
            raise UserError(
                f"{where}:{frm.line}: cannot pin FROM {frm.image} to its bases.lock digest"
                " (write the image on the FROM line, or take it from an ARG: FROM ${ARG})"
            )
        lines[frm.line - 1] = line[: found.start()] + pinned + line[found.end() :]
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def lock_path(manifest: str | Path) -> Path:
    """Where the lock of a manifest lives: `bases.lock` in the manifest's folder."""
    return Path(manifest).parent / LOCK_FILE


def parse_lock(text: str, source: str) -> dict[str, str]:
    """Reference -> digest from lock text; one clear line for anything malformed.

    Accepts `{bases: {REF: DIGEST}}` (what `bases update` writes) or a bare mapping, and
    `{digest: DIGEST}` values."""
    from build_assets.core import safeyaml

    data = safeyaml.load(text, source) or {}
    if isinstance(data, dict) and isinstance(data.get("bases"), dict):
        data = data["bases"]
    elif isinstance(data, dict) and "bases" in data and not data["bases"]:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected 'bases:' mapping base reference -> sha256 digest")
    out: dict[str, str] = {}
    for ref, value in data.items():
        digest = value.get("digest") if isinstance(value, dict) else value
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise UserError(f"{source}: base '{ref}': {digest!r} is not a sha256:<64 hex> digest")
        out[str(ref)] = digest
    return out


def read_lock(manifest: str | Path) -> tuple[dict[str, str] | None, bytes | None]:
    """(entries, raw bytes) of the lock next to a manifest on disk; (None, None) without one."""
    path = lock_path(manifest)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_lock(raw.decode("utf-8", "replace"), str(path)), raw


def render_lock(entries: dict[str, str]) -> str:
    """The lock file's text: header comment, then the entries sorted by reference."""
    if not entries:
        return HEADER + "bases: {}\n"
    lines = [HEADER, "bases:\n"]
    for ref in sorted(entries):
        lines.append(f"  {_yaml_key(ref)}: {entries[ref]}\n")
    return "".join(lines)


def _yaml_key(ref: str) -> str:
    return ref if re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", ref) else f'"{ref}"'


def cache_text(manifest: bytes, lock: bytes | None) -> bytes:
    """What version caches key on besides the tree: the manifest's bytes and, when there is
    one, the lock's (a lock edit changes versions without touching any context file)."""
    return manifest if lock is None else manifest + b"\0" + LOCK_FILE.encode() + b"\0" + lock


def cache_text_for(manifest: str | Path) -> bytes:
    """`cache_text` of a manifest and its lock as they are on disk (OSError if no manifest)."""
    data = Path(manifest).read_bytes()
    try:
        lock = lock_path(manifest).read_bytes()
    except FileNotFoundError:
        lock = None
    return cache_text(data, lock)


def lock_problems(usage: dict[str, list[str]], entries: dict[str, str], source: str) -> list[str]:
    """One line per external base missing from the lock and per entry no image uses.

    `usage`: reference -> the images that use it."""
    fix = "run `build-assets bases update`"
    problems = [
        f"{source}: external base '{ref}' (used by {', '.join(images)}) is not pinned: {fix}"
        for ref, images in usage.items()
        if ref not in entries
    ]
    problems += [
        f"{source}: '{ref}' is pinned but no image uses it any more: {fix}"
        for ref in sorted(entries)
        if ref not in usage
    ]
    return problems
