"""Benchmark: the seed's Test 3 on the stack's local CodeBuild, base-first and early start.

Runs `demo --backend codebuild`'s steps up to Test 3 (Initial, Test 1, Test 2, Test 3:
`receipt_dynamo` changed, 3 bases + 2 Lambda images) twice in one run, on fresh namespaces:
with BUILD_ASSETS_EARLY_START=off (base-first, as before) and on. For Test 3 it prints the
wall time, the billed build-seconds (sum of `endTime - startTime` from `batch_get_builds`),
when each build started, and checks early start's wall against the goal
`critical path's work + 1.5 x P + 20 s` (P: the service's provisioning seconds; the work of a
build: its BUILD + POST_BUILD phases in the base-first run, where nothing waits).

    eval "$(BUILD_ASSETS_HOME=/tmp/cb-bench build-assets stack up --codebuild-provisioning 20)"
    python bench/codebuild_stack.py [--check]
    BUILD_ASSETS_HOME=/tmp/cb-bench build-assets stack down
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from build_assets.aws.clients import make_client
from build_assets.cli.demo import SEED_STEPS, run_demo
from build_assets.core.versioning import worktree_versions
from build_assets.stack.local import set_codebuild_knobs

WORK_PHASES = ("BUILD", "POST_BUILD")


def test3_builds(reports: list, namespace: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Test 3's report and its newest build per project (from the CodeBuild API)."""
    report = next(r for r in reports if r.name == "Test 3")
    cb = make_client("codebuild")
    builds = {}
    for project in report.codebuild_builds:
        ids = cb.list_builds_for_project(projectName=project, sortOrder="DESCENDING")["ids"]
        builds[project] = cb.batch_get_builds(ids=ids[:1])["builds"][0]
    return report, builds


def phase_s(build: dict[str, Any], names: tuple[str, ...]) -> float:
    return sum(
        p.get("durationInSeconds") or 0
        for p in build.get("phases", [])
        if p.get("phaseType") in names
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()
    address = os.environ.get("AWS_ENDPOINT_URL_CODEBUILD")
    if not address:
        sys.exit('no local CodeBuild: eval "$(build-assets stack up --codebuild-provisioning 20)"')
    p = float(set_codebuild_knobs(address)["provisioning_s"])
    work = Path(tempfile.mkdtemp(prefix="cb-stack-bench-"))
    stamp = int(time.time())
    runs: dict[str, tuple[Any, dict[str, dict[str, Any]], Path]] = {}
    for mode, flag in (("base-first", "off"), ("early start", "on")):
        os.environ["BUILD_ASSETS_EARLY_START"] = flag
        namespace = f"cbbench-{flag}-{stamp}"
        folder = work / flag
        reports = run_demo(folder, steps=SEED_STEPS[:4], namespace=namespace, backend="codebuild")
        bad = [r.name for r in reports if not r.success]
        if bad:
            sys.exit(f"{mode}: steps failed: {bad}: {[r.problems for r in reports]}")
        report, builds = test3_builds(reports, namespace)
        runs[mode] = (report, builds, folder / "monorepo")
        print(f"  {mode}: Test 3 {report.seconds:.1f} s", flush=True)

    # the critical path's work, from the base-first builds (nothing waits in them)
    report, builds, repo = runs["base-first"]
    versions = worktree_versions(repo)
    project_of = {versions.manifest.project_name(i.name, "dev"): i.name for i in versions}
    own = {project_of[pr]: phase_s(b, WORK_PHASES) for pr, b in builds.items()}
    chain: dict[str, float] = {}

    def path(name: str) -> float:
        if name not in chain:
            base = versions[name].base
            chain[name] = own.get(name, 0.0) + (path(base) if base in own else 0.0)
        return chain[name]

    crit = max(path(n) for n in own)
    goal = crit + 1.5 * p + 20
    print(f"\nTest 3 on the local CodeBuild, provisioning P = {p:.0f} s")
    print(f"{'mode':12} {'wall (s)':>9} {'billed (s)':>11}  builds started at (s after the first)")
    walls = {}
    for mode, (report, builds, _) in runs.items():
        starts = {project_of[pr]: b["startTime"].timestamp() for pr, b in builds.items()}
        first = min(starts.values())
        billed = sum((b["endTime"] - b["startTime"]).total_seconds() for b in builds.values())
        at = ", ".join(
            f"{n} +{s - first:.1f}" for n, s in sorted(starts.items(), key=lambda x: x[1])
        )
        walls[mode] = report.seconds
        print(f"{mode:12} {report.seconds:9.1f} {billed:11.1f}  {at}")
    early = walls["early start"]
    ok = early <= goal
    print(
        f"\ncritical path's work {crit:.1f} s; goal: early start wall <= {crit:.1f} + 1.5 x {p:.0f}"
        f" + 20 = {goal:.1f} s: {early:.1f} s {'yes' if ok else 'NO'};"
        f" early start / base-first {early / walls['base-first']:.2f}"
    )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
