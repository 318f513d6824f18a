"""`build-assets materialize` and `build-assets status`: the Dagster work without writing a
selection, and the seed's "quick verification script" as one command."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from build_assets.project import Project


def quiet_dagster_warnings() -> None:
    """Hide Dagster's beta/preview warnings about the APIs build-assets chose on purpose
    (code references, observable source assets): a person at the terminal cannot act on them."""
    import warnings

    from dagster import BetaWarning, PreviewWarning

    for category in (BetaWarning, PreviewWarning):
        warnings.filterwarnings("ignore", category=category)


def project_for(args: argparse.Namespace) -> Project:
    """The project of the command line: --repo/--manifest over the environment."""
    from build_assets.cli.main import default_repo

    return Project.from_env(repo=args.repo or default_repo(), manifest=args.manifest)


def cmd_materialize(args: argparse.Namespace) -> int:
    project = project_for(args)
    versions = project.versions()
    if not args.async_:  # one line per dead component, before anything deep fails on it
        _preflight(project, versions, "for_materialize")
    if args.select:
        targets = project.select(versions, args.select)
    elif args.all:
        targets = project.targets(versions)
    else:
        project.registry  # noqa: B018 - one line when no registry is configured
        recorded = (
            _recorded_remote(project, versions) if args.async_ else _recorded(project, versions)
        )
        targets = project.stale(versions, recorded=recorded)
    names = ["/".join(t.path) for t in targets]
    if not targets:
        _out(args, {"stale": [], "message": "nothing is stale"}, "Nothing is stale.")
        return 0
    project.registry  # noqa: B018 - fail early, with one line, when no registry is configured
    if args.async_:
        return _materialize_async(args, project, names)
    from build_assets.dagster.reaper import owner_tags
    from build_assets.dagster.resources import ImageBuildResource
    from build_assets.dagster.runner import run_materialization
    from build_assets.dagster.translator import ImageAssetTranslator

    translator = ImageAssetTranslator()
    instance = _instance(project)
    keys = [translator.get_asset_key(t) for t in targets]
    resource = ImageBuildResource(
        repo=str(project.settings.repo), manifest=str(project.settings.manifest)
    )
    title = f"Materializing {len(keys)} assets"
    # Dagster's own event lines only with -v; the progress table (or lines) says it all
    log_level = "INFO" if args.verbose else "CRITICAL"
    if not args.verbose:
        quiet_dagster_warnings()
    view = _progress_view(args, title)
    try:
        with view:
            summary = run_materialization(
                keys,
                instance=instance,
                versions=versions,
                resource=resource,
                translator=translator,
                tags=owner_tags(),
                log_level=log_level,
                on_progress=view.update if view.shows else None,
            )
    except KeyboardInterrupt:
        _say_cancelled(view)
        return 130
    if summary.problems and any(
        "KeyboardInterrupt" in p or "interrupt" in p.lower() for p in summary.problems
    ):
        _say_cancelled(view)
        return 130
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        from build_assets.cli.render import print_summary

        print_summary(summary)
    return 0 if summary.success else 1


def _instance(project: Project):
    """The Dagster instance of DAGSTER_HOME (default <home>/dagster), made once per home;
    runs whose process was killed are failed first (they would stay STARTED forever)."""
    from build_assets.dagster.runner import ensure_dagster_home

    return _instance_at(str(ensure_dagster_home(project.settings)))


@functools.cache
def _instance_at(home: str):
    import fcntl

    from dagster import DagsterInstance

    from build_assets.dagster.reaper import fail_dead_runs

    # Dagster's SQLite storage creates its tables and stamps their schema version on first
    # open: two commands opening a new home at once collide there (UNIQUE constraint failed:
    # alembic_version), so the opening is serialised per home with a file lock.
    with open(Path(home) / ".build-assets-open.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = DagsterInstance.get()  # DAGSTER_HOME, exported by ensure_dagster_home
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    fail_dead_runs(instance)
    return instance


def _recorded(project: Project, versions) -> dict:
    """Target -> the code version Dagster recorded for it (`dagster.recorded`): what the
    registry alone cannot tell, that a revert left the records at newer versions."""
    from build_assets.dagster.recorded import recorded_versions
    from build_assets.dagster.translator import ImageAssetTranslator

    by_key = ImageAssetTranslator().keys(versions)
    return recorded_versions(_instance(project), by_key)


def _recorded_remote(project: Project, versions) -> dict:
    """`_recorded`, asked from the webserver (the --async path imports no Dagster)."""
    from build_assets.core.targets import targets_of
    from build_assets.dagster.launch import recorded_code_versions

    targets = targets_of(versions)
    codes = recorded_code_versions([t.path for t in targets], webserver=project.settings.webserver)
    return {t: codes[tuple(t.path)] for t in targets}


class _NoView:
    """No progress display (--json)."""

    shows = False

    def __enter__(self) -> _NoView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def cancelled(self) -> list:
        return []


def _progress_view(args: argparse.Namespace, title: str):
    """The live table (terminal), plain lines (anything else), or nothing (--json)."""
    if args.json:
        return _NoView()
    from build_assets.cli.live import ProgressView

    return ProgressView(title)


def _say_cancelled(view) -> None:
    """After Ctrl-C: which builds were cancelled, which targets never finished."""
    rows = view.cancelled()
    if not rows:
        print("build-assets: interrupted; no build was in flight", file=sys.stderr)
        return
    names = ", ".join(f"{r.name} ({r.label})" for r in rows)
    print(f"build-assets: interrupted; cancelled: {names}", file=sys.stderr)


def _materialize_async(args: argparse.Namespace, project: Project, names: list[str]) -> int:
    """Submit the run through the webserver and return: no Dagster import on this path.
    Keys are the targets' default paths (["image", NAME], ["lambda", FUNCTION])."""
    from build_assets.dagster.launch import submit_materialization

    start = time.monotonic()
    s = project.settings
    run_id, url = submit_materialization(
        [n.split("/", 1) for n in names], location_name=s.location_name, webserver=s.webserver
    )
    took = time.monotonic() - start
    text = f"Submitted run {run_id} for {len(names)} assets in {took:.2f}s: {url}"
    _out(args, {"run_id": run_id, "url": url, "assets": names, "seconds": took}, text)
    return 0


def _out(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def collect_status(args: argparse.Namespace, builds: int = 10) -> dict[str, Any]:
    """Images (tag, built?, digest), Lambda functions (image, up to date?), recent builds."""
    project = project_for(args)
    versions = project.versions()
    _preflight(project, versions, "for_status")
    digests = project.built_digests(versions)
    images = [
        {
            "name": img.name,
            "tag": img.tag,
            "image_uri": f"{project.repository(img.name)}:{img.tag}",
            "built": digests[img.name] is not None,
            "digest": digests[img.name],
        }
        for img in versions
    ]
    functions = [t for t in project.targets(versions) if not t.is_image]
    running = project.running_images(t.name for t in functions)
    lambdas = []
    for fn in functions:
        digest = digests[fn.image]
        expected = project.pinned_uri(fn.image, digest) if digest else None
        current = running[fn.name]
        lambdas.append(
            {
                "function": fn.name,
                "image": fn.image,
                "current_image_uri": current,
                "expected_image_uri": expected,
                "up_to_date": current is not None and current == expected,
            }
        )
    from build_assets.engine import function_deploy, publish

    publish.status_fields(project, versions, images)  # the SSM parameter holds the image?
    function_deploy.status_fields(project, versions, lambdas)  # deploy mode, alias, hold
    records = project.ledger().recent(builds, project.registry)
    return {
        "images": images,
        "lambdas": lambdas,
        "builds": [
            {
                "image": r.image,
                "tag": r.tag,
                "build_id": r.build_id,
                "status": r.status,
                "cached": r.cached,
                "started_at": r.started_at,
                "duration_s": r.duration_s,
                "builder": r.builder,
                "log_url": r.log_url,
            }
            for r in records
        ],
        "runs": _runs_in_flight(project),
    }


def _runs_in_flight(project: Project) -> list[dict]:
    """Runs queued or running in the Dagster instance, when one is configured (DAGSTER_HOME)."""
    if not project.settings.dagster_home:
        return []
    from dagster import DagsterInstance

    from build_assets.dagster.launch import in_flight_runs
    from build_assets.dagster.reaper import fail_dead_runs

    instance = DagsterInstance.get()
    fail_dead_runs(instance)  # a killed `materialize` is not in flight
    return in_flight_runs(instance)


def _preflight(project: Project, versions, check: str) -> None:
    """The project's environment checks, with the AWS endpoint when the manifest deploys."""
    project.preflight(check, functions=any(img.lambdas for img in versions))


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        return _watch(args)
    status = collect_status(args, builds=args.builds)
    if args.json:
        print(json.dumps(status))
        return 0
    from build_assets.cli.render import print_status

    print_status(status)
    return 0


def _watch(args: argparse.Namespace) -> int:
    """`status --watch`: the progress of every run in flight in the Dagster instance."""
    from dagster import DagsterInstance

    from build_assets.cli.live import watch_runs
    from build_assets.dagster.reaper import fail_dead_runs
    from build_assets.dagster.runner import ensure_dagster_home

    project = project_for(args)
    ensure_dagster_home(project.settings)
    instance = DagsterInstance.get()
    fail_dead_runs(instance)  # a killed `materialize` is not in flight
    try:
        return watch_runs(instance, as_json=args.json)
    except KeyboardInterrupt:
        return 130  # stops watching; the runs go on


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", help="monorepo folder (default: BUILD_ASSETS_REPO or the cwd's repo)")
    p.add_argument("--manifest", help="manifest file (default: <repo>/images.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `materialize` and `status`."""
    m = subparsers.add_parser(
        "materialize", help="build what is stale (or --all / --select) through Dagster"
    )
    _common(m)
    group = m.add_mutually_exclusive_group()
    group.add_argument("--stale", action="store_true", help="only stale assets (the default)")
    group.add_argument("--all", action="store_true", help="every image and function")
    group.add_argument("--select", nargs="+", metavar="NAME", help="images or Lambda functions")
    m.add_argument(
        "--async",
        dest="async_",
        action="store_true",
        help="submit the run to the Dagster queue and return at once (needs the daemon)",
    )
    m.add_argument(
        "-v", "--verbose", action="store_true", help="also print Dagster's own event lines"
    )
    m.set_defaults(func=cmd_materialize)

    s = subparsers.add_parser("status", help="tags, built images, Lambda images, recent builds")
    _common(s)
    s.add_argument("--builds", type=int, default=10, help="how many recent builds to show")
    s.add_argument(
        "--watch",
        action="store_true",
        help="follow the runs in flight (UI, sensor, other terminals) until they finish",
    )
    s.set_defaults(func=cmd_status)
