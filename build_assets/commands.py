"""`build-assets materialize` and `build-assets status`: the Dagster work without writing a
selection, and the seed's "quick verification script" as one command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from build_assets.errors import UserError


def _resource(args: argparse.Namespace):
    from build_assets.cli import _default_repo
    from build_assets.resources import ImageBuildResource

    return ImageBuildResource(repo=args.repo or _default_repo(), manifest=args.manifest)


def _select(versions, translator, names: list[str]):
    """Keys for image or function names given on the command line (clear error if unknown)."""
    keys = []
    for name in names:
        found = [translator.get_image_key(img) for img in versions if img.name == name] + [
            translator.get_lambda_key(fn, img)
            for img in versions
            for fn in img.lambdas
            if fn == name
        ]
        if not found:
            raise UserError(f"--select: '{name}' is neither an image nor a Lambda function")
        keys.extend(found)
    return keys


def cmd_materialize(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from build_assets.location import load_versions
    from build_assets.runner import all_keys, ensure_dagster_home, run_materialization, stale_keys
    from build_assets.translator import ImageAssetTranslator

    resource = _resource(args)
    translator = ImageAssetTranslator()
    versions = load_versions(resource)
    ensure_dagster_home()
    instance = DagsterInstance.get()
    if args.select:
        keys = _select(versions, translator, args.select)
    elif args.all:
        keys = all_keys(versions, translator)
    else:
        keys = stale_keys(instance, versions, translator)
    names = [k.to_user_string() for k in keys]
    if not keys:
        _out(args, {"stale": [], "message": "nothing is stale"}, "Nothing is stale.")
        return 0
    if args.async_:
        from build_assets.launch import submit_materialization

        start = time.monotonic()
        run_id, url = submit_materialization(instance, keys)
        took = time.monotonic() - start
        text = f"Submitted run {run_id} for {len(keys)} assets in {took:.2f}s" + (
            f": {url}" if url else ""
        )
        _out(args, {"run_id": run_id, "url": url, "assets": names, "seconds": took}, text)
        return 0
    resource.registry_prefix()  # fail early, with one line, when no registry is configured
    if not args.json:
        print(f"Materializing {len(keys)} assets: {', '.join(names)}", file=sys.stderr)
    summary = run_materialization(
        keys, instance=instance, versions=versions, resource=resource, translator=translator
    )
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        from build_assets.render import print_summary

        print_summary(summary)
    return 0 if summary.success else 1


def _out(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def collect_status(args: argparse.Namespace, builds: int = 10) -> dict[str, Any]:
    """Images (tag, built?, digest), Lambda functions (image, up to date?), recent builds."""
    from build_assets.location import load_versions
    from build_assets.records import BuildRecords
    from build_assets.scheduler import BuildScheduler

    resource = _resource(args)
    versions = load_versions(resource)
    registry = resource.registry_prefix()
    builder = resource.make_builder()
    scheduler = BuildScheduler(builder, registry)
    images, lambdas = [], []
    pinned: dict[str, str | None] = {}
    for img in versions:
        req = scheduler.request_for(img, None)
        digest = builder.existing_digest(req)
        pinned[img.name] = f"{req.repository}@{digest}" if digest else None
        images.append(
            {
                "name": img.name,
                "tag": img.tag,
                "image_uri": req.image_uri,
                "built": digest is not None,
                "digest": digest,
            }
        )
    fn_images = [(fn, img) for img in versions for fn in img.lambdas]
    if fn_images:
        from build_assets.aws import make_client

        client = make_client("lambda")
        for fn, img in fn_images:
            current = _function_image(client, fn)
            expected = pinned[img.name]
            lambdas.append(
                {
                    "function": fn,
                    "image": img.name,
                    "current_image_uri": current,
                    "expected_image_uri": expected,
                    "up_to_date": current is not None and current == expected,
                }
            )
    records = BuildRecords().recent(builds, registry)
    out = {
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
        "runs": _runs_in_flight(),
    }
    return out


def _function_image(client, function: str) -> str | None:
    try:
        return client.get_function(FunctionName=function)["Code"].get("ImageUri")
    except client.exceptions.ResourceNotFoundException:
        return None
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
        from build_assets.aws import describe_error

        raise UserError(describe_error(exc, "get_function", function)) from None


def _runs_in_flight() -> list[dict]:
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return []
    try:
        from dagster import DagsterInstance

        from build_assets.launch import in_flight_runs
    except ModuleNotFoundError:
        return []
    return in_flight_runs(DagsterInstance.get())


def cmd_status(args: argparse.Namespace) -> int:
    status = collect_status(args, builds=args.builds)
    if args.json:
        print(json.dumps(status))
        return 0
    from build_assets.render import print_status

    print_status(status)
    return 0


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
    m.set_defaults(func=cmd_materialize)

    s = subparsers.add_parser("status", help="tags, built images, Lambda images, recent builds")
    _common(s)
    s.add_argument("--builds", type=int, default=10, help="how many recent builds to show")
    s.set_defaults(func=cmd_status)
