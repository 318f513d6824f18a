"""The `build-assets` command line: argument parsing and dispatch. Each command lives in its
own module, imported only when that command runs (all of them for --help), so `plan` starts
fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from build_assets.errors import UserError

if TYPE_CHECKING:
    from build_assets.settings import Settings

# Modules that register their own subcommands with `add_cli(subparsers)`, by command name.
# Only the module of the command being run is imported (plus all of them for --help).
_PLUGIN_COMMANDS = {
    "plan": "build_assets.cli.plan",
    "stack": "build_assets.cli.stack",
    "bootstrap": "build_assets.cli.bootstrap",
    "status": "build_assets.cli.status",
    "materialize": "build_assets.cli.materialize",
    "demo": "build_assets.cli.demo",
    "gc": "build_assets.cli.gc",
    "rollback": "build_assets.cli.rollback",
    "init": "build_assets.cli.init",
    "bases": "build_assets.cli.bases",
}


def default_repo() -> str | None:
    """The git top level of the current folder, unless the repo setting is given."""
    from build_assets.settings import from_environment

    if from_environment("repo"):
        return None
    from build_assets.core.gitrepo import repo_root

    return str(repo_root("."))


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of a command line: --repo/--manifest over the environment, the repo
    defaulting to the git top level of the current folder."""
    from build_assets.settings import Settings

    return Settings.resolve(repo=args.repo or default_repo(), manifest=args.manifest)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `command`, only that command's plugin module is imported."""
    parser = argparse.ArgumentParser(
        prog="build-assets",
        description="Incremental, content-addressed image builds as Dagster assets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    wanted = {_PLUGIN_COMMANDS[command]} if command in _PLUGIN_COMMANDS else set()
    if command not in _PLUGIN_COMMANDS:
        wanted = set(_PLUGIN_COMMANDS.values())
    for name in sorted(wanted, key=lambda m: (m != _PLUGIN_COMMANDS["plan"], m)):  # plan first
        module = importlib.import_module(name)
        add_cli: Callable[[argparse._SubParsersAction], None] = module.add_cli
        add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors print one line each and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        for line in exc.lines:
            print(f"build-assets: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("build-assets: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): say nothing more, like other Unix tools
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
