"""`build-assets materialize`: the Dagster work without writing a selection; the helpers the
other Dagster-backed commands (`status`, `rollback`, `demo`) share."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

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
    from build_assets.cli.main import settings_for

    return Project(settings_for(args))


def cmd_materialize(args: argparse.Namespace) -> int:
    project = project_for(args)
    versions = project.versions()
    if not args.async_:  # one line per dead component, before anything deep fails on it
        preflight_for(project, versions, "for_materialize")
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
        print_out(args, {"stale": [], "message": "nothing is stale"}, "Nothing is stale.")
        return 0
    project.registry  # noqa: B018 - fail early, with one line, when no registry is configured
    if args.async_:
        return _materialize_async(args, project, names)
    from build_assets.dagster.materialize import run_materialization
    from build_assets.dagster.reaper import owner_tags
    from build_assets.dagster.resources import ImageBuildResource
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
    from build_assets.dagster.materialize import ensure_dagster_home

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
    from build_assets.dagster.submit import recorded_code_versions

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
    from build_assets.dagster.submit import submit_materialization

    start = time.monotonic()
    keys = [n.split("/", 1) for n in names]
    run_id, url = submit_materialization(keys, settings=project.settings)
    took = time.monotonic() - start
    text = f"Submitted run {run_id} for {len(names)} assets in {took:.2f}s: {url}"
    print_out(args, {"run_id": run_id, "url": url, "assets": names, "seconds": took}, text)
    return 0


def print_out(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def preflight_for(project: Project, versions, check: str) -> None:
    """The project's environment checks, with the AWS endpoint when the manifest deploys."""
    project.preflight(check, functions=any(img.lambdas for img in versions))


def common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", help="monorepo folder (default: BUILD_ASSETS_REPO or the cwd's repo)")
    p.add_argument("--manifest", help="manifest file (default: <repo>/images.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `materialize`."""
    m = subparsers.add_parser(
        "materialize", help="build what is stale (or --all / --select) through Dagster"
    )
    common_arguments(m)
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
