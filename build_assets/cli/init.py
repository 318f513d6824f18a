"""`build-assets init`: a proposed manifest from the Dockerfiles a repository already has."""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_assets.cli.bases import resolve_all
from build_assets.cli.main import settings_for
from build_assets.core import lock as lk
from build_assets.errors import UserError

RESOLVE_THREADS = 8
_SAFE = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:@-]*$")
_GLOB = re.compile(r"[*?\[]")


@dataclass
class Proposal:
    """One proposed manifest entry and the comments that explain its guesses."""

    name: str
    dockerfile: str
    source_paths: list[str] = field(default_factory=list)
    base: str | None = None
    dockerignore_off: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # field -> comment
    head: list[str] = field(default_factory=list)  # comment lines above the entry


def _repo_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return sorted(p for p in out.split("\0") if p)


def is_dockerfile(path: str) -> bool:
    base = posixpath.basename(path)
    if base.endswith(".dockerignore"):
        return False
    return base == "Dockerfile" or base.startswith("Dockerfile.") or base.endswith(".Dockerfile")


def image_name(path: str, root_name: str) -> str:
    """A valid image name from a Dockerfile's path ('services/x/Dockerfile' -> 'services-x')."""
    folder, base = posixpath.split(path)
    suffix = base.replace("Dockerfile", "").strip(".")
    raw = "-".join(p for p in (folder or root_name, suffix) if p)
    name = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")[:64].rstrip("-")
    return name or "image"


def _source_path(source: str) -> str | None:
    """The repo path a COPY/ADD source reads ('./pkg/' -> 'pkg', 'src/*.py' -> 'src')."""
    src = source.strip()
    if _GLOB.search(src):
        src = posixpath.dirname(src[: _GLOB.search(src).start()])  # type: ignore[union-attr]
    src = posixpath.normpath(src) if src else ""
    if src in ("", ".", "/") or src.startswith(("..", "/")):
        return None
    return src


def _minimal(paths: list[str]) -> list[str]:
    """Paths without those inside another one of the list, in first-seen order."""
    out: list[str] = []
    for p in paths:
        if p in out or any(p.startswith(q + "/") for q in paths if q != p):
            continue
        out.append(p)
    return out


def propose(root: Path, bases: dict[str, str]) -> list[Proposal]:
    """A proposal per Dockerfile of the repository (tracked or untracked, not ignored)."""
    from build_assets.core.dockerfile import expand, parse

    paths = [p for p in _repo_files(root) if is_dockerfile(p)]
    names: dict[str, str] = {}
    for path in paths:
        name = image_name(path, root.name)
        unique, n = name, 2
        while unique in names.values():
            unique, n = f"{name}-{n}", n + 1
        names[path] = unique
    known = set(names.values())
    by_folder = {posixpath.basename(posixpath.dirname(p)): n for p, n in names.items()}
    out = []
    for path in paths:
        name = names[path]
        df = parse((root / path).read_text(errors="replace"))
        prop = Proposal(name, path)
        wide = [line for line, *_ in df.context_sources()]
        sources = [_source_path(exp) for _, _, _, exp in df.context_sources()]
        kept = _minimal([s for s in sources if s and s != path])
        prop.source_paths = kept
        lines = ", ".join(str(n) for n in sorted(set(wide)))
        if kept:
            prop.notes["source_paths"] = f"from the COPY/ADD sources ({path}:{lines})"
        if any(s is None for s in sources):
            prop.head.append(
                f"# {path}: a COPY/ADD source reads the whole repository; list what it needs"
            )
        first = df.froms[0] if df.froms else None
        if name in bases:
            prop.base = bases[name]
            prop.notes["base"] = "given with --base"
        elif first is not None and first.arg is not None:
            default = first.default or df.global_args.get(first.arg) or ""
            value = expand(default, {k: v for k, v in df.global_args.items() if v}) or ""
            repo = value.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
            target = repo if repo in known else by_folder.get(repo)
            if target and target != name:
                prop.base = target
                prop.notes["base"] = f"guess: `FROM {first.image}` names this repo's image"
            elif value and lk.is_external(value) and first.default is not None:
                prop.head.append(
                    f"# guess: built on {value} (the FROM default); when your build passes"
                    f" {first.arg} an image of this repo, add `base:`"
                )
        elif first is not None:
            repo = first.image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
            if (repo in known or repo in by_folder) and first.image != "scratch":
                prop.head.append(
                    f"# `FROM {first.image}` names an image of this repo but takes no build arg:"
                    f" write `ARG BASE_IMAGE` + `FROM ${{BASE_IMAGE}}`, then add `base:`"
                )
        out.append(prop)
    return out


def _q(value: str) -> str:
    return value if _SAFE.match(value) and not value.endswith(":") else json.dumps(value)


def render(props: list[Proposal]) -> str:
    """The proposed manifest's YAML text, a comment on each guess."""
    lines = [
        "# Proposed by `build-assets init` from the repository's Dockerfiles: review each comment.",
        "# platform: linux/arm64   # set it (here or per image) when the builds run on arm64",
        "images:",
    ]
    for p in props:
        lines.extend(f"  {c}" for c in p.head)
        lines.append(f"  {p.name}:")
        lines.append(f"    dockerfile: {_q(p.dockerfile)}")
        if p.source_paths:
            items = ", ".join(_q(s) for s in p.source_paths)
            lines.append(f"    source_paths: [{items}]  # {p.notes['source_paths']}")
        if p.base:
            lines.append(f"    base: {_q(p.base)}  # {p.notes['base']}")
        if p.dockerignore_off:
            lines.append(f"    dockerignore: false  # {p.notes['dockerignore']}")
    return "\n".join(lines) + "\n"


def _check(root: Path, text: str, source: str):
    """(versions, problem lines) of a draft manifest against the working tree."""
    from build_assets.core.gitrepo import WorktreeScan
    from build_assets.core.manifest import RepoPaths, parse_manifest
    from build_assets.core.versioning import compute_versions
    from build_assets.errors import ManifestError

    try:
        manifest = parse_manifest(text, source, RepoPaths(root))
        wanted = [*manifest.all_paths(), ".dockerignore"]
        return compute_versions(manifest, WorktreeScan(root, wanted).snapshot()), []
    except ManifestError as exc:
        return None, list(exc.lines or [str(exc)])


def _cmd_init(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    root = Path(settings.repo)
    path = Path(settings.manifest)
    if path.exists():
        raise UserError(f"{path}: already exists; init never overwrites a manifest")
    given: dict[str, str] = {}
    for item in args.base or []:
        image, eq, base = item.partition("=")
        if not eq or not image or not base:
            raise UserError(f"--base {item!r}: expected IMAGE=BASE")
        given[image] = base
    props = propose(root, given)
    if not props:
        raise UserError(f"{root}: no Dockerfile found (tracked or untracked, not ignored)")
    unknown = sorted(set(given) - {p.name for p in props})
    if unknown:
        raise UserError(f"--base: no proposed image named {', '.join(unknown)}")
    source = str(path)
    versions, problems = _check(root, render(props), source)
    excluded = {p.name for p in props if any(f"image '{p.name}'" in q for q in problems)}
    for p in props:
        if p.name in excluded and any(
            f"image '{p.name}'" in q and "excluded by" in q for q in problems
        ):
            p.dockerignore_off = True
            p.notes["dockerignore"] = (
                "guess: the ignore file in force excludes what the Dockerfile copies; give"
                f" it its own {p.dockerfile}.dockerignore for finer rules"
            )
    text = render(props)
    versions, problems = _check(root, text, source)
    path.write_text(text)
    print(f"wrote {path}: {len(props)} images; review the comments, then run build-assets plan")
    for line in problems:
        print(f"build-assets: warning: {line}", file=sys.stderr)
    if versions is None or args.no_lock:
        return 0
    refs = sorted({e.reference for img in versions for e in img.externals})
    if not refs:
        return 0
    found, failed = resolve_all(refs)
    lock = lk.lock_path(path)
    if failed:
        for line in failed:
            print(f"build-assets: warning: {line}", file=sys.stderr)
        print(f"{lock} not written: run build-assets bases update once the registries answer")
        return 0
    lock.write_text(lk.render_lock(found))
    print(f"wrote {lock}: {len(found)} external base(s) pinned")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `build-assets init`."""
    p = subparsers.add_parser("init", help="propose images.yaml from the repo's Dockerfiles")
    p.add_argument("--repo", default=None, help="monorepo folder")
    p.add_argument("--manifest", default=None, help="where to write (default images.yaml)")
    p.add_argument(
        "--base",
        action="append",
        metavar="IMAGE=BASE",
        help="the base of a proposed image, when its Dockerfile cannot say (repeatable)",
    )
    p.add_argument("--no-lock", action="store_true", help="do not resolve external bases")
    p.set_defaults(func=_cmd_init)
