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
    from build_assets.cli.main import _default_repo
    from build_assets.dagster.resources import ImageBuildResource

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
    if args.async_:
        return _materialize_async(args)
    from dagster import DagsterInstance

    from build_assets.dagster.location import load_versions
    from build_assets.dagster.runner import (
        all_keys,
        ensure_dagster_home,
        run_materialization,
        stale_keys,
    )
    from build_assets.dagster.translator import ImageAssetTranslator

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
    resource.registry_prefix()  # fail early, with one line, when no registry is configured
    if not args.json:
        print(f"Materializing {len(keys)} assets: {', '.join(names)}", file=sys.stderr)
    summary = run_materialization(
        keys, instance=instance, versions=versions, resource=resource, translator=translator
    )
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        from build_assets.cli.render import print_summary

        print_summary(summary)
    return 0 if summary.success else 1


def _materialize_async(args: argparse.Namespace) -> int:
    """Submit the run through the webserver and return: no Dagster import on this path.

    Keys follow the default translator (["image", NAME], ["lambda", FUNCTION])."""
    from build_assets.core.versioning import worktree_versions
    from build_assets.dagster.launch import (
        built_versions,
        submit_materialization,
        webserver_address,
    )
    from build_assets.settings import Settings

    start = time.monotonic()
    from build_assets.cli.main import _default_repo

    settings = Settings.from_env(repo=args.repo or _default_repo(), manifest=args.manifest)
    versions = worktree_versions(settings.repo, settings.manifest)
    wanted: dict[tuple[str, ...], str] = {}
    by_name: dict[str, list[tuple[str, ...]]] = {}
    for img in versions:
        wanted[("image", img.name)] = img.version
        by_name.setdefault(img.name, []).append(("image", img.name))
        for fn in img.lambdas:
            wanted[("lambda", fn)] = img.version
            by_name.setdefault(fn, []).append(("lambda", fn))
    if args.select:
        unknown = [n for n in args.select if n not in by_name]
        if unknown:
            raise UserError(f"--select: '{unknown[0]}' is neither an image nor a Lambda function")
        paths = [p for n in args.select for p in by_name[n]]
    elif args.all:
        paths = list(wanted)
    else:
        built = built_versions(*webserver_address())
        paths = [p for p, version in wanted.items() if built.get(p) != version]
    names = ["/".join(p) for p in paths]
    if not paths:
        _out(args, {"stale": [], "message": "nothing is stale"}, "Nothing is stale.")
        return 0
    run_id, url = submit_materialization([list(p) for p in paths])
    took = time.monotonic() - start
    text = f"Submitted run {run_id} for {len(paths)} assets in {took:.2f}s: {url}"
    _out(args, {"run_id": run_id, "url": url, "assets": names, "seconds": took}, text)
    return 0


def _out(args: argparse.Namespace, obj: dict, text: str) -> None:
    print(json.dumps(obj) if args.json else text)


def collect_status(args: argparse.Namespace, builds: int = 10) -> dict[str, Any]:
    """Images (tag, built?, digest), Lambda functions (image, up to date?), recent builds."""
    from build_assets.dagster.location import load_versions
    from build_assets.engine.records import BuildRecords
    from build_assets.engine.scheduler import BuildScheduler

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
        from build_assets.aws.clients import make_client

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
        from build_assets.aws.clients import describe_error

        raise UserError(describe_error(exc, "get_function", function)) from None


def _runs_in_flight() -> list[dict]:
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return []
    try:
        from dagster import DagsterInstance

        from build_assets.dagster.launch import in_flight_runs
    except ModuleNotFoundError:
        return []
    return in_flight_runs(DagsterInstance.get())


def cmd_status(args: argparse.Namespace) -> int:
    status = collect_status(args, builds=args.builds)
    if args.json:
        print(json.dumps(status))
        return 0
    from build_assets.cli.render import print_status

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
