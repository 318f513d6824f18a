"""`build-assets demo`: the seed's test plan, for real, on a copy of examples/receipts.

Initial build of everything, then Test 1 (a handler edit), Test 2 (receipt_agent), Test 3
(receipt_dynamo, in every base), then the revert — after each, what was built, what was found
cached in the registry, which Lambda functions changed image, and how long it took.
Images go to a fresh namespace of the local registry, so every demo starts from nothing.

`--backend codebuild` runs the same plan through the production backend on the local stack:
`bootstrap` makes the bucket, ECR repositories and CodeBuild projects in moto, the functions
are created first (as the seed's infrastructure code did), and every image is built by the
local CodeBuild (context zip in S3, the buildspec, push, digest from ECR). Each step then also
says which `<image>-<env>-img-builder` projects got a new build (`list_builds_for_project`).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_assets.errors import UserError
from build_assets.settings import Settings, child_environment, export

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "receipts"
HANDLER = "infra/metadata_harmonizer_step_functions/lambdas/harmonize_metadata.py"
AGENT = "receipt_agent/validate.py"
DYNAMO = "receipt_dynamo/client.py"


@dataclass
class Step:
    """One scenario of the seed's test plan."""

    name: str
    change: str
    expect: str
    apply: Callable[[Path], None]


@dataclass
class StepReport:
    """What a step did."""

    name: str
    change: str
    expect: str
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    functions_updated: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    success: bool = True
    problems: list[str] = field(default_factory=list)
    codebuild_builds: dict[str, int] = field(default_factory=dict)  # project -> new builds


def _prepend(path: str, line: str) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        target = repo / path
        target.write_text(f"{line}\n{target.read_text()}")

    return apply


def _revert(repo: Path) -> None:
    subprocess.run(["git", "checkout", "--", "."], cwd=repo, check=True)


SEED_STEPS = [
    Step("Initial", "nothing built yet", "all images built, functions created", lambda _: None),
    Step(
        "Test 1",
        "handler comment",
        "1 Lambda image, no base",
        _prepend(HANDLER, "# Testing async build system - handler change"),
    ),
    Step(
        "Test 2",
        "receipt_agent change",
        "1 Lambda image, no base",
        _prepend(AGENT, "# Testing async build - receipt_agent change"),
    ),
    Step(
        "Test 3",
        "receipt_dynamo change",
        "3 bases + 2 Lambda images",
        _prepend(DYNAMO, "# Testing async build - receipt_dynamo change"),
    ),
    Step("Revert", "git checkout -- .", "nothing built: original tags, functions back", _revert),
]


def _git(repo: Path, *args: str) -> None:
    env = child_environment(
        {
            "GIT_AUTHOR_NAME": "demo",
            "GIT_AUTHOR_EMAIL": "demo@example.com",
            "GIT_COMMITTER_NAME": "demo",
            "GIT_COMMITTER_EMAIL": "demo@example.com",
        }
    )
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def make_demo_repo(target: Path, example: Path = EXAMPLE, manifest_extra: str = "") -> Path:
    """Copy the example monorepo into `target` and commit it in a fresh git repository
    (`manifest_extra`: manifest-wide YAML appended to its images.yaml, e.g. `naming:`)."""
    if not (example / "images.yaml").exists():
        raise UserError(f"{example}: example monorepo not found (images.yaml missing)")
    shutil.copytree(example, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if manifest_extra:
        manifest = target / "images.yaml"
        manifest.write_text(manifest.read_text() + manifest_extra)
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "commit", "-q", "-m", "example monorepo")
    return target


def ensure_stack(settings: Settings, home: Path | None = None, backend: str = "local") -> Settings:
    """Point this process at the local stack, starting it (under `home`, default the state
    home's `stack`) when it is not configured; return `settings` pointing at it too."""
    codebuild = backend != "codebuild" or settings.codebuild_endpoint_url
    if settings.registry and settings.aws_endpoint_url and codebuild:
        return settings
    from build_assets.stack.local import stack_up

    info = stack_up(
        home or settings.home / "stack",
        docker_host=settings.docker_host,
        docker_tls_verify=bool(settings.docker_tls_verify),
    )
    export(info.env())  # like `eval "$(build-assets stack up)"`: AWS SDK, docker
    return settings.with_(
        registry=info.registry,
        docker_host=info.docker_host,
        aws_endpoint_url=info.aws_endpoint_url,
        codebuild_endpoint_url=info.codebuild_endpoint_url,
    )


def run_demo(
    workdir: Path,
    *,
    steps: list[Step] | None = None,
    namespace: str | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    example: Path = EXAMPLE,
    progress: Callable[[str], Any] | None = None,
    backend: str = "local",
    env: str = "dev",
    repo: Path | None = None,
    settings: Settings | None = None,
) -> list[StepReport]:
    """Run the seed's scenarios in `workdir`; the environment must point at a stack.

    progress: given a step's title, a context manager with an `update` method that receives
    the step's progress events (`cli.live.ProgressView`: the live table).
    backend: `codebuild` bootstraps the demo's AWS resources and builds on the local CodeBuild;
    the namespace then goes into the repository names (`naming.repository`), as ECR has it.
    repo: an existing copy of the example (`make_demo_repo`) instead of a new one.
    settings: this command's settings (default: resolved from the environment)."""
    from dagster import DagsterInstance

    from build_assets.cli.demo_codebuild import (
        CodeBuildDemoResource,
        prepare_codebuild,
        project_builds,
    )
    from build_assets.dagster.materialize import run_materialization, stale_keys
    from build_assets.dagster.resources import ImageBuildResource
    from build_assets.dagster.translator import ImageAssetTranslator

    namespace = namespace or f"demo-{int(time.time())}"
    registry = (settings or Settings.resolve()).require_registry()
    projects: list[str] = []
    if backend == "codebuild":
        naming = f"\nnaming: {{repository: '{namespace}/{{image}}'}}\n"
        repo = repo or make_demo_repo(workdir / "monorepo", example, manifest_extra=naming)
        prepare_codebuild(repo, env, registry)
        resource: ImageBuildResource = CodeBuildDemoResource(
            repo=str(repo), registry=registry, backend=backend, env=env, home=str(workdir / "state")
        )
    else:
        repo = repo or make_demo_repo(workdir / "monorepo", example)
        resource = ImageBuildResource(
            repo=str(repo),
            registry=f"{registry}/{namespace}",
            backend="local",
            home=str(workdir / "state"),
        )
    project = resource.project()
    translator = ImageAssetTranslator()
    reports = []
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.local_temp(str(dagster_home)) as instance:
        for step in steps or SEED_STEPS:
            step.apply(repo)
            versions = project.versions()
            if backend == "codebuild":
                projects = [versions.manifest.project_name(i.name, env) for i in versions]
            before = project_builds(projects) if projects else {}
            keys = stale_keys(project, versions, translator, instance)
            view = progress(f"{step.name}: {step.change}") if progress and keys else None
            with view or contextlib.nullcontext():
                summary = run_materialization(
                    keys,
                    instance=instance,
                    versions=versions,
                    resource=resource,
                    translator=translator,
                    log_level="CRITICAL" if view else "WARNING",
                    on_progress=view.update if view else None,
                )
            report = StepReport(
                name=step.name,
                change=step.change,
                expect=step.expect,
                built=summary.built,
                cached=summary.cached,
                functions_updated=summary.functions_updated,
                tags={img.name: img.tag for img in versions},
                seconds=summary.seconds,
                success=summary.success,
                problems=summary.problems,
            )
            if projects:
                after = project_builds(projects)
                report.codebuild_builds = {
                    p: len(after[p]) - len(before[p]) for p in projects if after[p] != before[p]
                }
            reports.append(report)
            if on_step:
                on_step(report)
    return reports


def _print_step(report: StepReport) -> None:
    from rich.console import Console

    c = Console()
    c.rule(f"{report.name}: {report.change}")
    c.print(f"built   : {', '.join(report.built) or '-'}")
    c.print(f"cached  : {', '.join(report.cached) or '-'}")
    c.print(f"lambdas : {', '.join(report.functions_updated) or '-'}")
    if report.codebuild_builds or report.built:
        builds = ", ".join(f"{p} (+{n})" for p, n in sorted(report.codebuild_builds.items()))
        c.print(f"codebuild: {builds or '-'}")
    c.print(f"time    : {report.seconds:.1f}s   expected: {report.expect}")
    for p in report.problems:
        c.print(f"[red]{p}[/]")


def print_summary_table(reports: list[StepReport]) -> None:
    """The seed's summary table, with what really happened."""
    from rich.console import Console
    from rich.table import Table

    bases = ("base-",)
    t = Table(title="Summary", title_justify="left")
    for col in (
        "Test",
        "Change",
        "Images built",
        "Cached",
        "Lambdas updated",
        "Time",
        "Base rebuilt?",
    ):
        t.add_column(col)
    for r in reports:
        base_rebuilt = any(n.startswith(bases) for n in r.built)
        t.add_row(
            r.name,
            r.change,
            str(len(r.built)),
            str(len(r.cached)),
            str(len(r.functions_updated)),
            f"{r.seconds:.1f}s",
            "Yes" if base_rebuilt else "No",
        )
    Console().print(t)


def cmd_demo(args: argparse.Namespace) -> int:
    from build_assets.cli.materialize import quiet_dagster_warnings

    quiet_dagster_warnings()
    settings = Settings.resolve()
    stack_home = Path(args.stack_home) if args.stack_home else None
    settings = ensure_stack(settings, stack_home, args.backend)
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="build-assets-demo-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"Demo monorepo and state in {workdir}")
    from build_assets.cli.live import ProgressView

    reports = run_demo(
        workdir,
        on_step=_print_step,
        example=Path(args.example),
        progress=ProgressView,
        backend=args.backend,
        env=args.env,
        settings=settings,
    )
    print_summary_table(reports)
    return 0 if all(r.success for r in reports) else 1


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `demo`."""
    p = subparsers.add_parser(
        "demo", help="run the seed's test plan on a copy of examples/receipts"
    )
    p.add_argument("--workdir", help="where to put the demo monorepo and state (default: temp)")
    p.add_argument("--example", default=str(EXAMPLE), help="example monorepo to copy")
    p.add_argument("--stack-home", help="local stack home (default: BUILD_ASSETS_HOME)")
    p.add_argument(
        "--backend",
        choices=("local", "codebuild"),
        default="local",
        help="codebuild: bootstrap, then build on the stack's local CodeBuild (S3 + ECR)",
    )
    p.add_argument("--env", default="dev", help="environment of the CodeBuild projects (dev)")
    p.set_defaults(func=cmd_demo)
