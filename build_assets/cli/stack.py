"""`build-assets stack up|down|status`'s arguments: start/stop the local build stack (Docker
engine, registry, moto). The stack module is imported only when the command runs."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from build_assets.stack.local import run

    return run(args)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `stack up|down|status` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "stack",
        help="start/stop the local build stack (Docker engine, registry, moto, local CodeBuild)",
        description="The local build stack: a Docker engine, an OCI registry and a moto (fake AWS)"
        " server.",
    )
    p.add_argument("--home", help="state folder (default: $BUILD_ASSETS_HOME/stack)")
    sub = p.add_subparsers(dest="stack_command", required=True, metavar="{up,down,status}")
    up = sub.add_parser(
        "up", help='start missing services; use as: eval "$(build-assets stack up)"'
    )
    up.add_argument(
        "--private-docker",
        action="store_true",
        help="always run our own dockerd instead of reusing a reachable engine",
    )
    up.add_argument(
        "--postgres",
        action="store_true",
        help="also start a PostgreSQL server for Dagster (exports BUILD_ASSETS_POSTGRES_URL)",
    )
    up.add_argument(
        "--codebuild-provisioning",
        type=float,
        default=None,
        metavar="SECONDS",
        help="every local CodeBuild build spends SECONDS in QUEUED + PROVISIONING first, as"
        " on-demand CodeBuild does (default 0; a running service keeps its setting)",
    )
    sub.add_parser("down", help="stop the services `up` started")
    st = sub.add_parser("status", help="show each service, pid, address and whether it is alive")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    for sp in (up, st, sub.choices["down"]):
        sp.add_argument("--home", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
