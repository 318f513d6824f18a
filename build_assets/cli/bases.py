"""`build-assets bases update`: pin the external base images by digest in `bases.lock`."""

from __future__ import annotations

import argparse
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from build_assets.cli.main import settings_for
from build_assets.core import lock as lk
from build_assets.errors import UserError

RESOLVE_THREADS = 8
_SAFE = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:@-]*$")
_GLOB = re.compile(r"[*?\[]")


def resolve(reference: str) -> str:
    """The digest a reference's tag has in its registry now (anonymous access); one line."""
    from build_assets.engine.registry import RegistryError, manifest_digest

    repository, tag = lk.split_reference(reference)
    try:
        digest = manifest_digest(repository, tag)
    except RegistryError as exc:
        if "(401)" in str(exc) or "(403)" in str(exc):
            host = repository.split("/", 1)[0]
            raise UserError(
                f"{reference}: registry {host} refused anonymous access (build-assets asks"
                " registries anonymously, with their token service's anonymous pull token):"
                " pin its digest in bases.lock by hand"
            ) from None
        raise UserError(f"{reference}: {exc}") from None
    if digest is None:
        raise UserError(f"{reference}: tag '{tag}' not found in {repository}")
    return digest


def resolve_all(references: list[str]) -> tuple[dict[str, str], list[str]]:
    """(reference -> digest, one problem line per reference that could not be resolved)."""
    found: dict[str, str] = {}
    problems: list[str] = []

    def one(ref: str) -> tuple[str, str | None, str | None]:
        try:
            return ref, resolve(ref), None
        except UserError as exc:
            return ref, None, str(exc)

    workers = min(RESOLVE_THREADS, max(1, len(references)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for ref, digest, problem in pool.map(one, references):
            if digest is not None:
                found[ref] = digest
            else:
                problems.append(problem or ref)
    return found, problems


def base_usage(root: Path, manifest) -> dict[str, list[str]]:
    """External base reference -> the images (of the working tree) built on it."""
    from build_assets.core.dockerfile import parse

    usage: dict[str, list[str]] = {}
    for name in manifest.order():
        spec = manifest.images[name]
        try:
            text = (root / spec.dockerfile).read_text(errors="replace")
        except OSError:
            continue  # the manifest's validation names a missing Dockerfile
        found = lk.external_bases(
            parse(text), spec.build_args, spec.base, spec.base_arg, manifest.images
        )
        for ref in dict.fromkeys(ext.reference for ext in found):
            usage.setdefault(ref, []).append(name)
    return dict(sorted(usage.items()))


def _short(digest: str) -> str:
    return digest[:19] + "…"


def _cmd_bases_update(args: argparse.Namespace) -> int:
    from build_assets.core.manifest import load_manifest

    settings = settings_for(args)
    manifest = load_manifest(settings.manifest, settings.repo)
    usage = base_usage(Path(settings.repo), manifest)
    path = lk.lock_path(settings.manifest)
    old, _ = lk.read_lock(settings.manifest)
    old = old or {}
    found, problems = resolve_all(list(usage))
    if problems:
        for line in problems:
            print(f"build-assets: error: {line}", file=sys.stderr)
        print(f"build-assets: error: {path} not written", file=sys.stderr)
        return 2
    changed = 0
    for ref, images in usage.items():
        cascade = set(images)
        for image in images:
            cascade.update(manifest.dependents(image))
        who = ", ".join(images) + (
            f" + {len(cascade) - len(images)} dependents" if len(cascade) > len(images) else ""
        )
        if ref not in old:
            print(f"{ref}: pinned at {_short(found[ref])} (new; {who})")
            changed += 1
        elif old[ref] != found[ref]:
            print(f"{ref}: {_short(old[ref])} -> {_short(found[ref])} (rebuilds {who})")
            changed += 1
        else:
            print(f"{ref}: unchanged at {_short(found[ref])}")
    for ref in sorted(set(old) - set(usage)):
        print(f"{ref}: removed (no image uses it)")
        changed += 1
    text = lk.render_lock(found)
    current = path.read_text() if path.is_file() else None
    if args.dry_run:
        print(f"dry run: {path} not written ({changed} change(s))")
    elif text != current:
        path.write_text(text)
        print(f"wrote {path}: {changed} change(s); commit it")
    else:
        print(f"{path} is up to date")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `build-assets bases update`."""
    b = subparsers.add_parser("bases", help="external base images pinned in bases.lock")
    bsub = b.add_subparsers(dest="bases_command", required=True)
    u = bsub.add_parser("update", help="resolve the tags of external bases, rewrite the lock")
    u.add_argument("--repo", default=None, help="monorepo folder")
    u.add_argument("--manifest", default=None, help="manifest (images.yaml)")
    u.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    u.set_defaults(func=_cmd_bases_update)
