"""`build-assets rollback FN [--to TAG|DIGEST] [--release]`: point a function back at an
earlier image, hold it there (materialize, the sensor and schedules leave it alone until its
image's version changes), and record it in Dagster as an observation of the function's asset.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def observe(project: Any, image: str, function: str, metadata: dict[str, object]) -> None:
    """An AssetObservation of the function's asset in this project's Dagster instance."""
    from dagster import AssetObservation, DagsterInstance

    from build_assets.core.targets import LAMBDA, Target
    from build_assets.dagster.materialize import ensure_dagster_home
    from build_assets.dagster.translator import ImageAssetTranslator

    ensure_dagster_home(project.settings)
    key = ImageAssetTranslator().get_asset_key(Target(LAMBDA, function, image, ""))
    instance = DagsterInstance.get()
    try:
        instance.report_runless_asset_event(AssetObservation(asset_key=key, metadata=metadata))
    finally:
        instance.dispose()


def _run_cli(args: argparse.Namespace) -> int:
    from build_assets.cli.materialize import project_for, quiet_dagster_warnings
    from build_assets.engine import rollback as rb

    project = project_for(args)
    if args.release:
        if args.to:
            from build_assets.errors import UserError

            raise UserError("rollback: --release and --to do not go together")
        held = rb.release_hold(project, args.function)
        text = f"{args.function}: hold released" if held else f"{args.function}: was not held"
        if held is not None:
            quiet_dagster_warnings()
            observe(project, held.image, args.function, {"rollback_hold": "released"})
        out = {"function": args.function, "released": held is not None}
        print(json.dumps(out) if args.json else text)
        return 0
    done = rb.rollback(project, args.function, args.to)
    quiet_dagster_warnings()
    meta: dict[str, object] = {
        "rollback_from": done.old or "",
        "rollback_to": done.new,
        "image_uri": done.new,
        "held_at_version": done.held_at or "",
    }
    if done.alias:
        meta.update(alias=done.alias, function_version=done.version or "")
    observe(project, done.image, done.function, meta)
    if args.json:
        print(json.dumps({"function": done.function, "from": done.old, "to": done.new, **meta}))
    else:
        print(done.line())
    return 0


def add_cli(subparsers: Any) -> None:
    """Register `build-assets rollback`."""
    p = subparsers.add_parser(
        "rollback", help="point a Lambda function back at its earlier image and hold it there"
    )
    p.add_argument("function", metavar="FN", help="a Lambda function of the manifest")
    p.add_argument(
        "--to", metavar="TAG|DIGEST", help="the image to go back to (default: the one before)"
    )
    p.add_argument("--release", action="store_true", help="end the hold of an earlier rollback")
    p.add_argument("--repo", help="monorepo folder (default: BUILD_ASSETS_REPO or the cwd's repo)")
    p.add_argument("--manifest", help="manifest file (default: <repo>/images.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run_cli)
