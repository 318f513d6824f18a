"""`build-assets stack up|down|status`: start/stop the local build stack (Docker engine,
registry, moto, local CodeBuild). The stack modules are imported only when the command runs;
`up` prints the `export` lines of `eval "$(build-assets stack up)"`.
`python -m build_assets.cli.stack up|down|status` is the same command."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from build_assets.settings import Settings
    from build_assets.stack.services import StackInfo


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _print_status(info: StackInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.to_json(), indent=2))
        return
    if not info.services:
        print(f"no stack recorded under {info.home}")
        return
    rows = [("SERVICE", "PID", "ADDRESS", "ALIVE", "OWNED")]
    for s in info.services.values():
        rows.append(
            (
                s.name,
                str(s.pid or "-"),
                s.address,
                "yes" if s.alive else "no",
                "yes" if s.owned else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _home(args: argparse.Namespace, settings: Settings) -> Path:
    """`--home`, else the stack folder of the state home (BUILD_ASSETS_HOME/stack)."""
    if getattr(args, "home", None):
        return Path(args.home)
    return settings.home / "stack"


def _up(args: argparse.Namespace, home: Path, settings: Settings) -> int:
    from build_assets.stack.local import stack_up

    info = stack_up(
        home,
        reuse_docker=not args.private_docker,
        codebuild_provisioning=args.codebuild_provisioning,
        docker_host=settings.docker_host,
        docker_tls_verify=bool(settings.docker_tls_verify),
    )
    env = info.env()
    if args.postgres:
        from build_assets.stack.postgres import postgres_up

        env.update(postgres_up(info.home).env())
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _down(home: Path) -> int:
    from build_assets.stack.local import stack_down
    from build_assets.stack.postgres import postgres_down

    stack_down(home)
    postgres_down(home)
    return 0


def _status(args: argparse.Namespace, home: Path, settings: Settings) -> int:
    from build_assets.stack.local import stack_status

    info = stack_status(home, docker_tls_verify=bool(settings.docker_tls_verify))
    _print_status(info, args.json)
    return 0 if info.all_alive else 1


def _run(args: argparse.Namespace) -> int:
    """Entry point of `build-assets stack ...`; returns the exit code."""
    from build_assets.errors import UserError
    from build_assets.settings import Settings

    try:
        settings = Settings.resolve()  # the process starts here: the one resolve
        home = _home(args, settings)
        if args.stack_command == "up":
            return _up(args, home, settings)
        if args.stack_command == "down":
            return _down(home)
        return _status(args, home, settings)
    except UserError as e:
        _stderr(str(e))
        return e.exit_code


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


def main(argv: list[str] | None = None) -> int:
    """`python -m build_assets.cli.stack up|down|status` (same as `build-assets stack ...`)."""
    parser = argparse.ArgumentParser(prog="build-assets")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stack", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
