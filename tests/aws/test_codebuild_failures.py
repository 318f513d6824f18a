"""Failure paths of the codebuild backend, for real, on the stack's local CodeBuild.

One run covers what a build can end as: a `RUN` step exiting 1 (FAILED, its dependents
blocked, its siblings built), a build over its timeout (TIMED_OUT), a provisioning fault
injected into the service (FAULT), with BatchGetBuilds throttled meanwhile. Then a run
cancelled with Ctrl-C (StopBuild, STOPPED, the build's processes gone) and S3 refusing the
context upload. The faults are the local service's knobs (`/_local/config`), nothing is stubbed;
ECR is moto's, kept in step with every push by the stack's registry (`stack.ecr_registry`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from build_assets.aws.bootstrap import bootstrap
from build_assets.aws.clients import make_client
from build_assets.cli.demo_codebuild import CodeBuildDemoResource
from build_assets.stack.local import StackInfo, set_codebuild_knobs
from tests.images import shell_image
from tests.polling import until as _until

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KNOBS = {"provisioning_s": 0, "minute_s": 60, "fault_projects": [], "throttle": {}}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _repo(root: Path, images: dict[str, dict[str, str]], files: dict[str, str]) -> Path:
    lines = ["images:"]
    for name, fields in images.items():
        lines.append(f"  {name}:")
        lines += [f"    {k}: {v}" for k, v in fields.items()]
    files = {"images.yaml": "\n".join(lines) + "\n", **files}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def knobs(stack_env: StackInfo):
    address = stack_env.services["codebuild"].address
    yield lambda **kw: set_codebuild_knobs(address, **kw)
    set_codebuild_knobs(address, **DEFAULT_KNOBS)


def _newest(image: str, env: str = "dev") -> dict[str, Any]:
    cb = make_client("codebuild")
    ids = cb.list_builds_for_project(projectName=f"{image}-{env}-img-builder")["ids"]
    return cb.batch_get_builds(ids=ids[:1])["builds"][0]


def _log_lines(build: dict[str, Any]) -> list[str]:
    events = make_client("logs").get_log_events(
        logGroupName=build["logs"]["groupName"], logStreamName=build["logs"]["streamName"]
    )["events"]
    return [e["message"].rstrip("\n") for e in events]


def test_failed_timed_out_and_faulted_builds_with_throttled_polls(
    stack_env: StackInfo, tmp_path: Path, knobs: Callable[..., dict]
) -> None:
    from dagster import DagsterInstance

    from build_assets.dagster.location import load_versions
    from build_assets.dagster.materialize import all_keys, run_materialization
    from build_assets.dagster.translator import ImageAssetTranslator

    shell = shell_image(stack_env.registry, tmp_path, "cbfail-shell")
    on_base = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
    images = {
        "cbf-base": {"dockerfile": "d/base/Dockerfile", "source_paths": "[pkg]"},
        "cbf-sibling": {"dockerfile": "d/sibling/Dockerfile", "base": "cbf-base"},
        "cbf-bad": {"dockerfile": "d/bad/Dockerfile", "base": "cbf-base"},
        "cbf-bad-child": {"dockerfile": "d/child/Dockerfile", "base": "cbf-bad"},
        "cbf-slow": {
            "dockerfile": "d/slow/Dockerfile",
            "base": "cbf-base",
            "codebuild": "{timeout_minutes: 5}",
        },
        "cbf-faulty": {"dockerfile": "d/faulty/Dockerfile", "base": "cbf-base"},
    }
    repo = _repo(
        tmp_path / "repo",
        images,
        {
            "pkg/a.py": "A = 1\n",
            "d/base/Dockerfile": f"FROM {shell}\nCOPY pkg /pkg\n",
            "d/sibling/Dockerfile": on_base + "COPY d/sibling/Dockerfile /s\n",
            "d/bad/Dockerfile": on_base + "RUN echo about-to-fail-in-run && exit 1\n",
            "d/child/Dockerfile": on_base + "COPY d/child/Dockerfile /c\n",
            "d/slow/Dockerfile": on_base + "RUN sleep 120\n",
            "d/faulty/Dockerfile": on_base + "COPY d/faulty/Dockerfile /f\n",
        },
    )
    bootstrap(list(images), {"cbf-slow": {"timeout_minutes": 5}}, env="dev")
    # a minute lasts 1 s: cbf-slow's 5-minute timeout is 5 s, the others' 60 minutes 60 s;
    # BatchGetBuilds answers ThrottlingException 4 times: botocore's 4 attempts of one poll
    knobs(minute_s=1, fault_projects=["cbf-faulty-dev-img-builder"], throttle={"BatchGetBuilds": 4})
    resource = CodeBuildDemoResource(
        repo=str(repo),
        registry=stack_env.registry,
        backend="codebuild",
        env="dev",
        home=str(tmp_path / "state"),
    )
    tr = ImageAssetTranslator()
    with DagsterInstance.ephemeral() as instance:
        versions = load_versions(resource)
        run = run_materialization(
            all_keys(versions, tr), instance=instance, versions=versions, resource=resource
        )
    assert not run.success
    assert sorted(run.built) == ["cbf-base", "cbf-sibling"]
    problems = "\n".join(run.problems)
    assert "cbf-bad: build FAILED in phase BUILD" in problems
    assert "cbf-bad-child: not built: base cbf-bad failed" in problems
    assert "cbf-slow: build TIMED_OUT in phase BUILD" in problems
    assert "cbf-faulty: build FAULT in phase PROVISIONING" in problems
    assert knobs()["throttled"] == {"BatchGetBuilds": 4}  # the run got through them

    # the same answers from the CodeBuild API and CloudWatch
    bad = _newest("cbf-bad")
    phases = {p["phaseType"]: p for p in bad["phases"]}
    assert bad["buildStatus"] == "FAILED" and phases["BUILD"]["phaseStatus"] == "FAILED"
    assert phases["BUILD"]["contexts"][0]["statusCode"] == "COMMAND_EXECUTION_ERROR"
    tail = _log_lines(bad)[-40:]
    assert any("about-to-fail-in-run" in line for line in tail)
    assert "about-to-fail-in-run" in problems  # the log tail the error shows
    slow = _newest("cbf-slow")
    assert slow["buildStatus"] == "TIMED_OUT" and slow["timeoutInMinutes"] == 5
    assert _newest("cbf-faulty")["buildStatus"] == "FAULT"
    assert _newest("cbf-sibling")["buildStatus"] == "SUCCEEDED"
    cb = make_client("codebuild")
    assert cb.list_builds_for_project(projectName="cbf-bad-child-dev-img-builder")["ids"] == []


def _cli_env(stack_env: StackInfo, state: Path, env_name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER")}
    env.update(
        BUILD_ASSETS_BACKEND="codebuild",
        BUILD_ASSETS_ENV=env_name,
        BUILD_ASSETS_HOME=str(state),
        PYTHONPATH=str(ROOT),
    )
    return env


def _processes_with(marker: str) -> list[int]:
    found = []
    needle = marker.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_ctrl_c_stops_the_build_and_its_processes(stack_env: StackInfo, tmp_path: Path) -> None:
    shell = shell_image(stack_env.registry, tmp_path, "cbstop-shell")
    repo = _repo(
        tmp_path / "repo",
        {"cbs-sleepy": {"dockerfile": "d/Dockerfile"}},
        {"d/Dockerfile": f"FROM {shell}\nRUN sleep 300\n"},
    )
    bootstrap(["cbs-sleepy"], env="dev")
    proc = subprocess.Popen(
        [sys.executable, "-m", "build_assets", "materialize", "--all"],
        cwd=repo,
        env=_cli_env(stack_env, tmp_path / "state", "dev"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def sleeping() -> dict[str, Any] | None:
            cb = make_client("codebuild")
            ids = cb.list_builds_for_project(projectName="cbs-sleepy-dev-img-builder")["ids"]
            if not ids:
                return None
            build = cb.batch_get_builds(ids=ids[:1])["builds"][0]
            running = build["currentPhase"] == "BUILD" and any(
                "sleep 300" in line for line in _log_lines(build)
            )
            return build if running else None

        build = _until(sleeping, 120, "the build's RUN sleep")
        marker = f"CODEBUILD_BUILD_ID={build['id']}"
        assert _processes_with(marker)  # the build's docker client and shells
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted" in err and "cbs-sleepy" in err
    cb = make_client("codebuild")
    done = _until(
        lambda: (b := cb.batch_get_builds(ids=[build["id"]])["builds"][0])["buildComplete"] and b,
        30,
        "the stopped build",
    )
    assert done["buildStatus"] == "STOPPED"
    assert {p["phaseType"]: p for p in done["phases"]}["BUILD"]["phaseStatus"] == "STOPPED"
    _until(lambda: not _processes_with(marker), 15, "the build's processes gone")


def test_s3_refusing_the_context_upload_is_one_line_and_no_build(
    stack_env: StackInfo, tmp_path: Path
) -> None:
    repo = _repo(
        tmp_path / "repo",
        {"cbu-app": {"dockerfile": "d/Dockerfile"}},
        {"d/Dockerfile": "FROM scratch\nCOPY d/Dockerfile /x\n"},
    )
    bootstrap(["cbu-app"], env="s3gone")
    bucket = "build-assets-123456789012-us-east-1-s3gone"
    make_client("s3").delete_bucket(Bucket=bucket)
    res = subprocess.run(
        [sys.executable, "-m", "build_assets", "materialize", "--all"],
        cwd=repo,
        env=_cli_env(stack_env, tmp_path / "state", "s3gone"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    line = next(ln for ln in res.stderr.splitlines() if f"s3://{bucket}/contexts/cbu-app/" in ln)
    assert "NoSuchBucket" in line and "bootstrap" in line
    cb = make_client("codebuild")
    assert cb.list_builds_for_project(projectName="cbu-app-s3gone-img-builder")["ids"] == []
