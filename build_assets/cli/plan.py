"""`build-assets plan`: which images would be rebuilt, and why, at about `git status` speed.

Imports stay lazy: a plan answered from the caches in `.git` imports no YAML parser, no
pydantic and no rich (tests/cli/test_startup.py, tests/core/test_plan_caches.py).
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
from pathlib import Path

from build_assets.cli.main import default_repo


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `plan`."""
    plan = subparsers.add_parser("plan", help="show which images would be rebuilt, and why")
    plan.add_argument("--repo", help="monorepo folder (default: git top level of the cwd)")
    plan.add_argument("--manifest", help="manifest file (default: <repo>/images.yaml)")
    plan.add_argument("--since", metavar="REF", help="compare the working tree with git REF")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from build_assets.core.gitrepo import WorktreeScan, repo_root
    from build_assets.settings import Settings

    toplevel = None if args.repo else default_repo()
    settings = Settings.resolve(repo=args.repo or toplevel, manifest=args.manifest)
    # start git first: the heavier imports below (pydantic, ...) then cost no wall time
    root = Path(toplevel) if toplevel else repo_root(settings.repo)
    args.quick_model = _quick_model(_manifest_doc(root, settings.manifest), settings.manifest)
    scan = WorktreeScan(root, _quick_paths(args.quick_model))
    if args.since:
        args.ref_files = _ref_files(args.since, root, settings.manifest)
        return _cmd_plan_since(args, settings, scan)

    from build_assets.core.plan import compare

    if scan.tracked_differ():  # the cache will miss: list the index and import meanwhile
        scan.prefetch()
        import build_assets.core.versioning  # noqa: F401 - while git lists untracked files

        scan.index_snapshot  # noqa: B018 - parsed meanwhile too
    truth: dict = {}  # image -> RegistryState, asked once (the fast path fills it)
    fast = _plan_from_cache(scan, settings, truth, args.quick_model)
    if fast is not None:
        return _print_plan(args, *fast)
    scan.start_ignored()  # for the warning about git-ignored files a COPY loses (meanwhile)

    from build_assets.core.plan import built_states
    from build_assets.core.validated_cache import load_validated
    from build_assets.core.versioning import worktree_versions

    manifest = load_validated(Path(settings.manifest), scan.root, scan.git_dir, _prime_yaml)
    current = worktree_versions(settings.repo, settings.manifest, scan=scan, manifest=manifest)
    args.warnings = _secret_warnings(current)
    _gitignored_warnings(current, scan, args.warnings)
    note = None
    if settings.registry is None:
        return _print_plan(args, compare(current, {}, "not built yet"), *_NO_REGISTRY)
    wanted = [(img.name, img.tag) for img in current]
    if any(truth.get(name, (None,))[0] != tag for name, tag in wanted):
        truth = _ask_registry(settings, wanted, manifest)
    states = {name: state for name, (_, state) in truth.items()}
    entries = built_states(current, states)
    against = f"the registry {settings.registry}"
    if not any(s.digest or s.last for s in states.values()):
        note = "Nothing is built yet: every image would be built."
    return _print_plan(args, entries, against, note)


_NO_REGISTRY = (
    "no registry",
    "No registry is configured (BUILD_ASSETS_REGISTRY): every image would be built.",
)


def _ask_registry(settings, wanted: list[tuple[str, str]], model) -> dict:
    """Image -> (tag asked, RegistryState): the registry, in parallel threads; repositories
    named by the manifest `model`'s templates (default names without one)."""
    from build_assets.core.model import Manifest
    from build_assets.engine.provenance import ProvenanceCache, registry_states
    from build_assets.engine.registry import RegistryUnreachable
    from build_assets.errors import UserError

    cache = ProvenanceCache(settings.home / "provenance")
    naming = model if model is not None else Manifest(images={})
    try:
        states = registry_states(
            settings.registry,
            wanted,
            cache,
            repository_of=lambda image: naming.repository_name(image, settings.env),
        )
    except RegistryUnreachable:  # the wording of materialize and status, with the fix
        from build_assets.engine.preflight import registry_down

        raise UserError(registry_down(settings.registry)) from None
    return {name: (tag, states[name]) for name, tag in wanted}


def _cmd_plan_since(args: argparse.Namespace, settings, scan) -> int:
    """`plan --since REF`: versions at REF from the commit cache (computed once per tree and
    manifest), a clean tree's from the clean-tree cache. Only images whose version differs
    from REF's get reasons, from the files that differ (compared as git records, no per-file
    objects), and a check for likely secrets (their whole contexts: what a build ships)."""
    fast = _since_from_cache(args, settings, scan)
    if fast is not None:
        return _print_plan(args, *fast)
    scan.start_ignored()
    from build_assets.core.gitrepo import parse_record
    from build_assets.core.plan import BuiltState, compare
    from build_assets.core.versioning import commit_versions, worktree_versions

    _prime_yaml()
    current = worktree_versions(settings.repo, settings.manifest, scan=scan)
    previous = commit_versions(
        settings.repo, args.since, settings.manifest, missing_ok=args.manifest is not None
    )
    states: dict = {}
    shown: list = []
    checked: list = []  # what the secret check looks at
    for img in current:
        old = previous.images.get(img.name)
        if old is None or old.version == img.version:
            shown.append(img)
            if old is not None:  # unchanged: compared by version alone
                states[img.name] = BuiltState(old.version, {}, (), old.base_version)
            else:
                checked.append(img)  # new: every file is new
            continue
        before, after = set(old.records()), img.records()
        now = set(after)
        gone = tuple(parse_record(r) for r in before if r not in now)
        came = tuple(parse_record(r) for r in after if r not in before)
        states[img.name] = BuiltState(
            old.version, old.identity, gone, old.base_version, old.exclusion
        )
        shown.append(_Narrowed(img, came))
        checked.append(shown[-1])
    args.warnings = _secret_warnings(checked)
    _gitignored_warnings(current, scan, args.warnings)
    entries = compare(shown, states, "new image")  # type: ignore[arg-type]
    against = f"{args.since} ({previous.commit[:12] if previous.commit else ''})"
    return _print_plan(args, entries, against, previous.note)


class _Narrowed:
    """An image version whose `files` are only those added or changed since the other side."""

    def __init__(self, image, files: tuple) -> None:
        self._image = image
        self.files = files

    def __getattr__(self, name: str):
        return getattr(self._image, name)


def _ref_files(ref: str, root: Path, manifest: Path):
    """REF's ids and its manifest and lock, asked of git in the background (None: the
    manifest is outside the tree)."""
    from build_assets.core import versioncache
    from build_assets.core.gitrepo import RefFiles
    from build_assets.core.lock import LOCK_FILE

    place = versioncache.manifest_place(root, manifest)
    if not place.startswith("tree:"):
        return None
    rel = place.removeprefix("tree:")
    return RefFiles(root, ref, [rel, posixpath.join(posixpath.dirname(rel), LOCK_FILE)])


def _since_from_cache(args: argparse.Namespace, settings, scan) -> tuple | None:
    """The `--since` plan of a clean, cached tree against a cached commit, when no image
    changed since REF other than new ones (no reason needs a file list); None otherwise.
    Imports neither the manifest's validation nor the hashing code."""
    from build_assets.core import versioncache
    from build_assets.core.gitrepo import CommitRef, read_file_at, resolve_commit_tree
    from build_assets.core.lock import LOCK_FILE, cache_text, cache_text_for

    try:
        text = cache_text_for(settings.manifest)  # manifest + bases.lock
    except OSError:
        return None
    place = versioncache.manifest_place(scan.root, settings.manifest)
    if not place.startswith("tree:"):
        return None
    asked = args.ref_files.result() if getattr(args, "ref_files", None) else None
    if asked is None:  # the usual way (errors name the ref), for a clean, cached tree only
        if versioncache.load_plan(scan, text) is None:
            return None
        ref = resolve_commit_tree(scan.root, args.since)
        at_ref = read_file_at(scan.root, ref.commit, place.removeprefix("tree:"))
        lock_rel = posixpath.join(posixpath.dirname(place.removeprefix("tree:")), LOCK_FILE)
        lock_at_ref = None if at_ref is None else read_file_at(scan.root, ref.commit, lock_rel)
    else:
        commit, tree, (at_ref, lock_at_ref) = asked
        ref = CommitRef(commit, tree, scan.git_dir)
    if at_ref is None:
        return None
    lock_bytes = None if lock_at_ref is None else lock_at_ref.encode()
    ref_text = cache_text(at_ref.encode(), lock_bytes)
    key = versioncache.commit_key(ref.tree, place, ref_text)
    old = versioncache.load_commit_plan(ref.git_dir, key)
    listing = None
    if old is None and ref_text == text:  # first time at REF: list it while git scans
        from build_assets.core.gitrepo import CommitListing

        listing = CommitListing(scan.root, ref.commit, _quick_paths(args.quick_model))
    rows = versioncache.load_plan(scan, text)  # waits for the working tree's scan
    if rows is None:
        return None
    if listing is not None:  # REF's versions, then the diff
        old = _commit_rows(args, settings, ref, listing, place)
    if old is None:
        return None
    before = {row["name"]: row["version"] for row in old}
    against = f"{args.since} ({ref.commit[:12]})"
    if any(before.get(row["name"], row["version"]) != row["version"] for row in rows):
        if ref_text != text:  # the manifest or its lock changed: the full path says how
            return None
        return _since_from_diff(args, scan, text, at_ref, ref, rows, old, against)
    entries = [_cached_entry(row, row["name"] in before, "new image") for row in rows]
    return entries, against, None


def _commit_rows(args: argparse.Namespace, settings, ref, listing, place: str) -> list[dict] | None:
    """Versions at REF computed (and cached) as rows {name, version, base, lambdas}; the
    working tree's come from its cache, so nothing of it is hashed or listed again."""
    from build_assets.core.versioning import commit_versions

    _prime_yaml(f"{place.removeprefix('tree:')}@{args.since}")  # REF has the same bytes
    previous = commit_versions(  # by name, so errors name REF as the full path does
        settings.repo,
        args.since,
        settings.manifest,
        missing_ok=args.manifest is not None,
        listing=listing,
    )
    if previous.note is not None or previous.commit != ref.commit:
        return None
    return [
        {"name": img.name, "version": img.version, "base": img.base, "lambdas": list(img.lambdas)}
        for img in previous
    ]


def _since_from_diff(args, scan, text: bytes, at_ref: str, ref, rows, old, against) -> tuple | None:
    """Some image changed: its reasons from `git diff-tree` of REF's tree and the index's
    (the manifest and its lock are the same on both sides; see core.sincediff), else None."""
    from build_assets.core import sincediff, versioncache

    tree = versioncache.index_tree(scan, text)
    manifest = args.quick_model  # the same bytes at REF (`text` holds them)
    if tree is None or manifest is None:
        return None
    try:
        changes = sincediff.tree_changes(scan.root, ref.tree, tree)
    except ValueError:
        return None
    done = sincediff.plan_from_diff(
        scan.root,
        manifest,
        rows,
        old,
        changes,
        lambda p: (scan.root / p).read_bytes(),
        (scan.git_dir, tree),
    )
    if done is None:
        return None
    entries, args.warnings = done
    for lines in args.warnings.values():
        print(f"build-assets: warning: {lines[0]}", file=sys.stderr)
    return entries, against, None


def _secret_warnings(versions) -> dict[str, list[str]]:
    """Warn on stderr about context files that look like credentials; {image: [lines]}."""
    from build_assets.core import secrets

    out: dict[str, list[str]] = {}
    for img in versions:
        found = secrets.image_secrets(img)
        if found:
            out[img.name] = [secrets.warning(img.name, found)]
            print(f"build-assets: warning: {out[img.name][0]}", file=sys.stderr)
    return out


def _gitignored_warnings(versions, scan, out: dict[str, list[str]]) -> None:
    """Warn once per image whose COPY of a folder loses git-ignored files Docker would ship
    (the working tree only: a commit has no ignored files); added to `out`."""
    from build_assets.core import gitignored

    copies = {}
    for img in versions:
        found = [
            c
            for c in img.dockerfile.context_sources(img.spec.build_args)
            if not any(ch in c[3] for ch in "*?[") and c[3].strip("/") not in ("", ".")
        ]
        if found:
            copies[img.name] = (img, found)
    folders = [c[3].strip("/").removeprefix("./") for _, found in copies.values() for c in found]
    if not folders:
        return
    ignored = gitignored.ignored_files(versions.root, scan.ignored(), folders)
    if not ignored:
        return
    for name, (img, found) in copies.items():
        line = gitignored.lost_by_copies(name, img.spec.dockerfile, found, ignored, img.rules)
        if line:
            out.setdefault(name, []).append(line)
            print(f"build-assets: warning: {line}", file=sys.stderr)


def _print_plan(args: argparse.Namespace, entries: list, against: str, note: str | None) -> int:
    if args.json:
        warned = getattr(args, "warnings", {})
        images = [
            {**e.to_dict(), **({"warnings": warned[e.name]} if e.name in warned else {})}
            for e in entries
        ]
        sys.stdout.write(json.dumps({"images": images}) + "\n")  # one write, C encoder
        return 0
    from build_assets.cli.render import print_plan

    print_plan(entries, against=against, note=note)
    return 0


def _plan_from_cache(scan, settings, truth: dict, model) -> tuple[list, str, str | None] | None:
    """The plan of a clean tree from the version cache, when no reason needs file lists:
    every image is either built at its current version (its tag is in the registry) or never
    built (no `last-build` provenance); None otherwise, with the registry's answers left in
    `truth` for the full path. Skips manifest validation and hashing entirely; the cache key
    holds the manifest bytes."""
    from build_assets.core import versioncache

    try:
        from build_assets.core.lock import cache_text_for

        cached = versioncache.load_plan(scan, cache_text_for(settings.manifest))
    except OSError:
        return None
    if cached is None:
        return None
    from build_assets.core.model import tag_for

    tags = {img["name"]: tag_for(img["version"]) for img in cached}
    if settings.registry is None:
        built: set[str] = set()
        against, note = _NO_REGISTRY
    else:
        truth.update(_ask_registry(settings, list(tags.items()), model))
        if any(state.digest is None and state.last for _, state in truth.values()):
            return None  # some image changed since its last build: reasons need file lists
        built = {name for name, (_, state) in truth.items() if state.digest}
        against = f"the registry {settings.registry}"
        note = None if built else "Nothing is built yet: every image would be built."
    entries = [_cached_entry(img, img["name"] in built, "not built yet") for img in cached]
    return entries, against, note


def _cached_entry(row: dict, current: bool, reason: str):
    """The plan entry of a version-cache row {name, version, base, lambdas}: unchanged when
    `current`, else changed for `reason`."""
    from build_assets.core.model import tag_for
    from build_assets.core.plan import PlanEntry

    return PlanEntry(
        name=row["name"],
        version=row["version"],
        tag=tag_for(row["version"]),
        base=row["base"],
        lambdas=row["lambdas"],
        changed=not current,
        reasons=[] if current else [reason],
    )


def _manifest_doc(root: Path, manifest: Path) -> object | None:
    """The manifest's YAML document read without validation (None: unreadable or invalid;
    full validation reports that later). Loaded through the bounded loader, so a hostile
    manifest costs no more here than in validation; the document of the same bytes comes
    from the cache in the git folder (no YAML parser imported) when it was parsed before."""
    from build_assets.core import versioncache
    from build_assets.core.model import MAX_MANIFEST_BYTES

    git_dir = root / ".git"  # a linked worktree's .git is a file: no cache, parsed each time
    try:
        with manifest.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    cached = versioncache.load_manifest_doc(git_dir, data) if git_dir.is_dir() else None
    if cached is not None:
        _from_cache.append((data, str(manifest), cached))
        return cached
    try:
        from build_assets.core import safeyaml

        doc = safeyaml.load(data.decode("utf-8"), str(manifest))
    except Exception:  # noqa: BLE001 - full validation reports problems later
        return None
    if git_dir.is_dir():
        versioncache.save_manifest_doc(git_dir, data, doc)
    return doc


_from_cache: list[tuple[bytes, str, object]] = []  # (bytes, source, document) from the cache


def _prime_yaml(source: str | None = None) -> None:
    """Before validation: the document of the manifest's bytes, taken from the cache, is
    handed to `safeyaml` so the same bytes are not parsed again (`source`: the name they
    are validated under, when not the manifest's path: the same bytes at a commit)."""
    if _from_cache:
        from build_assets.core import safeyaml

        data, path, doc = _from_cache[-1]
        safeyaml.remember(data.decode("utf-8"), source or path, doc)


def _quick_model(doc: object, manifest: Path):
    """The runtime model of the manifest's document, unvalidated (None: no document, or one
    the model cannot be built from; full validation reports that later)."""
    if doc is None:
        return None
    from build_assets.core.model import Manifest

    try:
        return Manifest.from_document(doc, str(manifest))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _quick_paths(model) -> list[str] | None:
    """Top-level paths a manifest draws from, ignore files it names included (None: scan
    all); odd or too many paths: scan all (full validation says what is wrong; git gets no
    odd pathspec)."""
    if model is None:
        return None
    from build_assets.core.model import DOCKERIGNORE

    paths = [DOCKERIGNORE, *model.all_paths(), *model.ignore_paths()]
    if not all(_plain_path(p) for p in paths):
        return None
    if sum(len(p.strip("/").split("/", 1)[0]) for p in paths) > 65536:
        return None  # no huge argument list for git
    return paths


def _plain_path(path: str) -> bool:
    """A relative path without '..', NUL or line breaks (anything else waits for validation)."""
    return (
        bool(path)
        and not path.startswith("/")
        and ".." not in path.split("/")
        and (not any(c in path for c in "\0\n\r\\"))
    )
