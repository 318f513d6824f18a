"""`build-assets gc [--dry-run] [--keep N]`: delete old image versions from the registry.

Per image repository of the manifest: the newest N `git-` versions stay (N: `--keep`, else the
manifest's `lifecycle.keep`), and so do the current version, every image a Lambda function of
the manifest runs (by digest or tag) in `$LATEST`, in any published version or behind any
alias (all listed before anything is deleted), and the `last-build` provenance. A repository with
a build in flight (a live lease on it or on an image built on it) is left alone. With each
deleted version go its provenance artifact and its build cache. This is the clean-up for the
local registry, and for what an ECR lifecycle policy cannot see (functions, running builds).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from build_assets.engine import registry as reg
from build_assets.engine.provenance import POINTER_TAG, PROVENANCE_PREFIX


@dataclass
class RepoReport:
    """What gc did (or would do) in one repository."""

    image: str
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)  # tag -> why
    skipped: str | None = None


def _created(repository: str, digest: str) -> str:
    """The image config's `created` time (ISO text sorts), '' when unknown."""
    manifest = reg.get_manifest(repository, digest) or {}
    config = (manifest.get("config") or {}).get("digest")
    if not config:
        return ""
    blob = reg.get_blob(repository, config)
    return str(json.loads(blob or b"{}").get("created") or "")


def _split_uri(uri: str) -> tuple[str, str | None, str | None]:
    """'host:port/name@sha256:..' or 'host:port/name:tag' -> (repository, digest, tag)."""
    if "@" in uri:
        name, digest = uri.split("@", 1)
        return name, digest, None
    head, _, last = uri.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return f"{head}/{last}" if head else last, None, tag
    return uri, None, None


def _in_flight(project, versions, leases) -> set[str]:
    """Images whose repository a running build uses: the one it builds and its bases."""
    from build_assets.engine.lease import live_keys

    busy: set[str] = set()
    for img in versions:
        if live_keys(leases, f"{project.repository(img.name)}@"):
            name: str | None = img.name
            while name is not None:
                busy.add(name)
                name = versions[name].base
    return busy


def functions_images(project, functions: list[str]) -> dict[str, str]:
    """Image URI -> which function runs it ($LATEST, a published version, an alias), over
    every function of the manifest; listed in full before gc deletes anything."""
    from concurrent.futures import ThreadPoolExecutor

    from build_assets.engine.release import deployed_images

    if not functions:
        return {}
    client = project._lambda_client()
    with ThreadPoolExecutor(max_workers=min(16, len(functions))) as pool:
        found = list(pool.map(lambda fn: deployed_images(client, fn), functions))
    out: dict[str, str] = {}
    for images in found:
        for uri, where in images.items():
            out.setdefault(uri, where)
    return out


def collect(project, *, keep: int | None = None, dry_run: bool = True) -> list[RepoReport]:
    """Decide, and unless `dry_run` delete, per image repository of the manifest."""
    versions = project.versions()
    keep = keep or versions.manifest.lifecycle.keep
    running = functions_images(project, [fn for img in versions for fn in img.lambdas])
    busy = _in_flight(project, versions, project.leases())
    reports = []
    for img in versions:
        repository = project.repository(img.name)
        report = RepoReport(img.name)
        reports.append(report)
        if img.name in busy:
            report.skipped = "a build is in flight"
            continue
        tags = reg.list_tags(repository)
        digests = {t: reg.manifest_digest(repository, t) for t in tags}
        protected_digests: dict[str, str] = {}
        for uri, where in running.items():  # any function running an image of this repository
            name, digest, tag = _split_uri(uri or "")
            if name == repository:
                ref = digest or digests.get(tag or "")
                if ref:
                    protected_digests.setdefault(ref, where)
        if digests.get(img.tag):
            protected_digests.setdefault(digests[img.tag], "current version")
        pointer = digests.get(POINTER_TAG)
        versions_tags = [t for t in tags if t.startswith("git-")]
        newest = sorted(versions_tags, key=lambda t: _created(repository, digests[t]), reverse=True)
        report.kept = newest[:keep]
        kept_digests = {digests[t] for t in report.kept} | set(protected_digests)
        for tag in newest[keep:]:
            if digests[tag] in protected_digests:
                report.protected[tag] = protected_digests[digests[tag]]
                continue
            if digests[tag] in {digests[t] for t in report.kept}:
                continue  # the same image under a kept tag
            report.deleted.append(tag)
            if dry_run:
                continue
            companions = [PROVENANCE_PREFIX + tag.removeprefix("git-"), f"buildcache-{tag}"]
            for companion in companions:
                digest = digests.get(companion)
                if digest and digest != pointer and digest not in kept_digests:
                    reg.delete_manifest(repository, digest)
            reg.delete_manifest(repository, digests[tag])
    return reports


def _run_cli(args: argparse.Namespace) -> int:
    from build_assets.project import Project

    project = Project.from_env(repo=args.repo, manifest=args.manifest)
    if args.keep is not None and args.keep < 1:
        print("build-assets: error: --keep: expected a positive integer", file=sys.stderr)
        return 2
    if reg.is_ecr(reg.parse_repository(project.repository("x")).host):
        print(
            "build-assets: error: gc deletes through the registry API, which ECR does not offer:"
            " on ECR the lifecycle policy of `bootstrap` expires old versions",
            file=sys.stderr,
        )
        return 2
    reports = collect(project, keep=args.keep, dry_run=args.dry_run)
    if args.json:
        json.dump({"repositories": [asdict(r) for r in reports]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for r in reports:
        if r.skipped:
            print(f"{r.image}: skipped ({r.skipped})")
            continue
        line = f"{r.image}: kept {len(r.kept)}, {verb} {len(r.deleted)}"
        if r.deleted:
            line += ": " + ", ".join(r.deleted)
        print(line)
        for tag, why in r.protected.items():
            print(f"  {tag} kept: {why}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `build-assets gc`."""
    p = subparsers.add_parser("gc", help="delete old image versions from the registry")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--keep", type=int, help="versions kept per repository (default: manifest)")
    p.add_argument("--repo", default=None, help="monorepo folder")
    p.add_argument("--manifest", default=None, help="manifest (images.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_cli)
