"""`build-assets status`: the seed's "quick verification script" as one command (tags, built
images, what each Lambda function runs, recent builds, runs in flight)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from build_assets.cli.materialize import common_arguments, preflight_for, project_for
from build_assets.project import Project


def collect_status(args: argparse.Namespace, builds: int = 10) -> dict[str, Any]:
    """Images (tag, built?, digest), Lambda functions (image, up to date?), recent builds."""
    project = project_for(args)
    versions = project.versions()
    preflight_for(project, versions, "for_status")
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
    records = project.build_records().recent(builds, project.registry)
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

    from build_assets.dagster.reaper import fail_dead_runs
    from build_assets.dagster.submit import in_flight_runs

    instance = DagsterInstance.get()
    fail_dead_runs(instance)  # a killed `materialize` is not in flight
    return in_flight_runs(instance)


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
    from build_assets.dagster.materialize import ensure_dagster_home
    from build_assets.dagster.reaper import fail_dead_runs

    project = project_for(args)
    ensure_dagster_home(project.settings)
    instance = DagsterInstance.get()
    fail_dead_runs(instance)  # a killed `materialize` is not in flight
    try:
        return watch_runs(instance, as_json=args.json)
    except KeyboardInterrupt:
        return 130  # stops watching; the runs go on


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `status`."""
    s = subparsers.add_parser("status", help="tags, built images, Lambda images, recent builds")
    common_arguments(s)
    s.add_argument("--builds", type=int, default=10, help="how many recent builds to show")
    s.add_argument(
        "--watch",
        action="store_true",
        help="follow the runs in flight (UI, sensor, other terminals) until they finish",
    )
    s.set_defaults(func=cmd_status)
