"""The stack's local CodeBuild, through boto3 as build-assets and the AWS CLI call it.

Every build here really runs: the source zip comes from (moto's) S3, the buildspec's commands
run in a shell session on this host, variables come from moto's SSM and Secrets Manager, the
log goes to moto's CloudWatch Logs. Nothing is stubbed; the local-only knobs (provisioning
time, timeout scale, injected faults) are set through the service's `/_local/config`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from build_assets.aws.clients import make_client
from build_assets.stack.local import StackInfo, set_codebuild_knobs
from tests.polling import until as _until

pytestmark = pytest.mark.stack

BUCKET = "local-codebuild-tests"
DEFAULT_KNOBS = {"provisioning_s": 0, "minute_s": 60, "fault_projects": [], "throttle": {}}


@pytest.fixture
def cb(stack_env: StackInfo) -> Iterator[Any]:
    """A CodeBuild client on the local CodeBuild; its knobs are reset afterwards."""
    address = stack_env.services["codebuild"].address
    yield make_client("codebuild")
    set_codebuild_knobs(address, **DEFAULT_KNOBS)


@pytest.fixture
def knobs(stack_env: StackInfo) -> Callable[..., dict]:
    return lambda **kw: set_codebuild_knobs(stack_env.services["codebuild"].address, **kw)


def _zip(files: dict[str, tuple[int, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (mode, data) in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _project(cb: Any, **env: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cb.create_project(
        name=name,
        source={"type": "S3", "location": f"{BUCKET}/none.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
            **env,
        },
        serviceRole="arn:aws:iam::123456789012:role/t",
        timeoutInMinutes=60,
    )
    return name


def _spec(phases: dict[str, Any], env: dict[str, Any] | None = None) -> str:
    return json.dumps({"version": 0.2, "env": env or {}, "phases": phases})


def _wait(cb: Any, build_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        (build,) = cb.batch_get_builds(ids=[build_id])["builds"]
        return build if build["buildComplete"] else None

    return _until(done, timeout, f"build {build_id}")


def _phases(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["phaseType"]: p for p in build["phases"]}


def _log(build: dict[str, Any]) -> list[str]:
    logs = make_client("logs")
    group, stream = build["logs"]["groupName"], build["logs"]["streamName"]
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"].rstrip("\n") for e in events["events"]]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def s3(stack_env: StackInfo) -> Any:
    client = make_client("s3")
    try:
        client.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if "BucketAlreadyOwnedByYou" not in str(exc):
            raise
    return client


def test_buildspec_runs_with_codebuild_semantics(cb: Any, s3: Any, tmp_path: Path) -> None:
    ssm, sm = make_client("ssm"), make_client("secretsmanager")
    tag = uuid.uuid4().hex[:8]
    ssm.put_parameter(Name=f"/t/{tag}/a", Value="from-ssm", Type="SecureString")
    ssm.put_parameter(Name=f"/t/{tag}/o", Value="override-from-ssm", Type="String")
    sm.create_secret(Name=f"s-{tag}", SecretString=json.dumps({"k": "from-secret"}))
    source = _zip(
        {
            "tool.sh": (0o100755, b"#!/bin/sh\necho tool-ran\n"),
            "data.txt": (0o100644, b"data\n"),
            "link": (0o120777, b"tool.sh"),
        }
    )
    s3.put_object(Bucket=BUCKET, Key=f"{tag}.zip", Body=source)
    name = _project(
        cb, environmentVariables=[{"name": "LEVEL", "value": "project", "type": "PLAINTEXT"}]
    )
    spec = _spec(
        env={
            "shell": "bash",
            "variables": {"LEVEL": "buildspec", "ONLY_SPEC": "spec"},
            "parameter-store": {"FROM_SSM": f"/t/{tag}/a"},
            "secrets-manager": {"FROM_SM": f"s-{tag}:k"},
            "exported-variables": ["RESULT", "LEVEL"],
        },
        phases={
            "install": {"commands": ["export CARRIED=yes", "cd /tmp"]},
            "pre_build": {
                "on-failure": "CONTINUE",
                "commands": ['echo "carried=$CARRIED pwd=$PWD"', "exit 3", "echo skipped"],
                "finally": ["echo finally-ran"],
            },
            "build": {
                "commands": [
                    'cd "$CODEBUILD_SRC_DIR"',
                    'stat -c "%a %F" tool.sh data.txt link && ./link',
                    'echo "level=$LEVEL spec=$ONLY_SPEC ssm=$FROM_SSM sm=$FROM_SM'
                    ' o1=$O_SSM o2=$O_SM succeeding=$CODEBUILD_BUILD_SUCCEEDING"',
                    'echo "id=$CODEBUILD_BUILD_ID arn=$CODEBUILD_BUILD_ARN'
                    " n=$CODEBUILD_BUILD_NUMBER"
                    ' image=$CODEBUILD_BUILD_IMAGE region=$AWS_REGION/$AWS_DEFAULT_REGION"',
                    f"aws ssm get-parameter --name /t/{tag}/a --with-decryption"
                    " --query Parameter.Value --output text",
                    'echo "ecr-token-bytes=$(aws ecr get-login-password | wc -c)"',
                    "export RESULT=$(cat data.txt)-done",
                ]
            },
            "post_build": {"commands": ["echo post succeeding=$CODEBUILD_BUILD_SUCCEEDING"]},
        },
    )
    build = cb.start_build(
        projectName=name,
        sourceLocationOverride=f"{BUCKET}/{tag}.zip",
        buildspecOverride=spec,
        environmentVariablesOverride=[
            {"name": "O_SSM", "value": f"/t/{tag}/o", "type": "PARAMETER_STORE"},
            {"name": "O_SM", "value": f"s-{tag}:k", "type": "SECRETS_MANAGER"},
        ],
    )["build"]
    assert build["buildStatus"] == "IN_PROGRESS" and build["buildNumber"] == 1
    done = _wait(cb, build["id"])

    # pre_build failed with on-failure CONTINUE: the later phases ran, the build is FAILED
    assert done["buildStatus"] == "FAILED" and done["currentPhase"] == "COMPLETED"
    phases = _phases(done)
    assert list(phases) == [
        "SUBMITTED",
        "QUEUED",
        "PROVISIONING",
        "DOWNLOAD_SOURCE",
        "INSTALL",
        "PRE_BUILD",
        "BUILD",
        "POST_BUILD",
        "UPLOAD_ARTIFACTS",
        "FINALIZING",
        "COMPLETED",
    ]
    assert phases["PRE_BUILD"]["phaseStatus"] == "FAILED"
    assert phases["PRE_BUILD"]["contexts"] == [
        {
            "statusCode": "COMMAND_EXECUTION_ERROR",
            "message": "Error while executing command: exit 3. Reason: exit status 3",
        }
    ]
    assert phases["BUILD"]["phaseStatus"] == "SUCCEEDED"
    for p in done["phases"][:-1]:
        assert p["endTime"] >= p["startTime"] and p["durationInSeconds"] >= 0
    assert {v["name"]: v["value"] for v in done["exportedEnvironmentVariables"]} == {
        "RESULT": "data-done",
        "LEVEL": "project",  # StartBuild > project > buildspec
    }
    uuid_part = build["id"].split(":", 1)[1]
    assert done["logs"]["groupName"] == f"/aws/codebuild/{name}"
    assert done["logs"]["streamName"] == uuid_part
    assert uuid_part in done["logs"]["deepLink"]

    lines = _log(done)
    assert "carried=yes pwd=/tmp" in lines  # export and cd carry across commands and phases
    assert "skipped" not in lines and "finally-ran" in lines
    assert "755 regular file" in lines and "644 regular file" in lines
    assert "777 symbolic link" in lines and "tool-ran" in lines
    assert (
        "level=project spec=spec ssm=from-ssm sm=from-secret o1=override-from-ssm"
        " o2=from-secret succeeding=0"
    ) in lines
    arn = f"arn:aws:codebuild:us-east-1:123456789012:build/{build['id']}"
    assert (
        f"id={build['id']} arn={arn} n=1 image=aws/codebuild/standard:7.0"
        " region=us-east-1/us-east-1"
    ) in lines
    assert "from-ssm" in lines  # the AWS CLI on PATH, pointed at moto
    token = next(ln for ln in lines if ln.startswith("ecr-token-bytes="))
    assert int(token.split("=")[1]) > 10  # what build_image.sh pipes into docker login
    assert "post succeeding=0" in lines

    # the variable overrides are reported by reference, as CodeBuild does
    reported = {v["name"]: v for v in done["environment"]["environmentVariables"]}
    assert reported["O_SSM"] == {
        "name": "O_SSM",
        "value": f"/t/{tag}/o",
        "type": "PARAMETER_STORE",
    }
    # a second build of the project gets the next number; listing is newest first
    second = cb.start_build(
        projectName=name, buildspecOverride=spec, sourceTypeOverride="NO_SOURCE"
    )
    assert second["build"]["buildNumber"] == 2
    ids = cb.list_builds_for_project(projectName=name, sortOrder="DESCENDING")["ids"]
    assert ids == [second["build"]["id"], build["id"]]
    assert cb.list_builds_for_project(projectName=name, sortOrder="ASCENDING")["ids"] == ids[::-1]
    assert set(ids) <= set(cb.list_builds(sortOrder="DESCENDING")["ids"])
    _wait(cb, second["build"]["id"])


def test_failed_install_ends_the_build_and_a_build_failure_still_runs_post_build(
    cb: Any, s3: Any
) -> None:
    name = _project(cb)
    early = cb.start_build(
        projectName=name,
        sourceTypeOverride="NO_SOURCE",
        buildspecOverride=_spec(
            {
                "install": {"commands": ["false"]},
                "build": {"commands": ["echo build-ran"]},
                "post_build": {"commands": ["echo post-ran"]},
            }
        ),
    )["build"]
    late = cb.start_build(
        projectName=name,
        sourceTypeOverride="NO_SOURCE",
        buildspecOverride=_spec(
            {
                "build": {"commands": ["echo last words", "exit 1"]},
                "post_build": {"commands": ["echo post-ran"]},
            }
        ),
    )["build"]
    early, late = _wait(cb, early["id"]), _wait(cb, late["id"])
    assert early["buildStatus"] == "FAILED"
    # INSTALL failed: straight to FINALIZING, no BUILD, POST_BUILD or UPLOAD_ARTIFACTS
    assert [p["phaseType"] for p in early["phases"]][-4:] == [
        "DOWNLOAD_SOURCE",
        "INSTALL",
        "FINALIZING",
        "COMPLETED",
    ]
    assert "post-ran" not in _log(early) and "build-ran" not in _log(early)
    assert late["buildStatus"] == "FAILED"
    assert _phases(late)["BUILD"]["phaseStatus"] == "FAILED"
    assert _phases(late)["POST_BUILD"]["phaseStatus"] == "SUCCEEDED"
    assert "post-ran" in _log(late) and "last words" in _log(late)


def test_a_bad_buildspec_or_a_missing_source_fails_download_source(cb: Any, s3: Any) -> None:
    name = _project(cb)
    bad = cb.start_build(
        projectName=name,
        sourceTypeOverride="NO_SOURCE",
        buildspecOverride="version: 0.2\nphases: [1]\n",
    )
    missing = cb.start_build(
        projectName=name,
        sourceLocationOverride=f"{BUCKET}/no-such.zip",
        buildspecOverride=_spec({"build": {"commands": ["true"]}}),
    )
    for build, code in ((bad, "YAML_FILE_ERROR"), (missing, "CLIENT_ERROR")):
        done = _wait(cb, build["build"]["id"])
        assert done["buildStatus"] == "FAILED"
        phase = _phases(done)["DOWNLOAD_SOURCE"]
        assert phase["phaseStatus"] == "FAILED" and phase["contexts"][0]["statusCode"] == code
    assert (
        "no-such.zip"
        in _phases(_wait(cb, missing["build"]["id"]))["DOWNLOAD_SOURCE"]["contexts"][0]["message"]
    )


def test_timeout_and_stop_end_the_build_and_kill_its_processes(
    cb: Any, knobs: Callable[..., dict], tmp_path: Path
) -> None:
    knobs(minute_s=0.3)  # a 5-minute timeout lasts 1.5 s
    name = _project(cb)
    pids = {k: tmp_path / f"{k}.pids" for k in ("timeout", "stop")}

    def spec(key: str) -> str:
        return _spec(
            {
                "build": {
                    "commands": [
                        f"sleep 300 & echo $! >> {pids[key]}; echo $$ >> {pids[key]}; sleep 300"
                    ]
                }
            }
        )

    slow = cb.start_build(
        projectName=name,
        sourceTypeOverride="NO_SOURCE",
        buildspecOverride=spec("timeout"),
        timeoutInMinutesOverride=5,
    )["build"]
    stopped = cb.start_build(
        projectName=name, sourceTypeOverride="NO_SOURCE", buildspecOverride=spec("stop")
    )["build"]
    assert slow["timeoutInMinutes"] == 5
    _until(lambda: len(_pids(pids["stop"])) == 2, 30, "the stopped build's processes")
    answer = cb.stop_build(id=stopped["id"])["build"]
    assert answer["buildStatus"] == "STOPPED"

    timed_out = _wait(cb, slow["id"])
    assert timed_out["buildStatus"] == "TIMED_OUT"
    build_phase = _phases(timed_out)["BUILD"]
    assert build_phase["phaseStatus"] == "TIMED_OUT"
    assert build_phase["contexts"][0]["statusCode"] == "BUILD_TIMED_OUT"
    done = _wait(cb, stopped["id"])
    assert done["buildStatus"] == "STOPPED" and _phases(done)["BUILD"]["phaseStatus"] == "STOPPED"
    assert "POST_BUILD" not in _phases(done)
    for key in pids:
        found = _pids(pids[key])
        assert len(found) == 2
        _until(lambda f=found: not any(_alive(p) for p in f), 10, f"{key} processes gone")


def test_provisioning_time_and_an_injected_fault(cb: Any, knobs: Callable[..., dict]) -> None:
    name, faulty = _project(cb), _project(cb)
    knobs(provisioning_s=1.5, fault_projects=[faulty])
    spec = _spec({"build": {"commands": ["echo hi"]}})
    ok = cb.start_build(projectName=name, sourceTypeOverride="NO_SOURCE", buildspecOverride=spec)
    bad = cb.start_build(projectName=faulty, sourceTypeOverride="NO_SOURCE", buildspecOverride=spec)
    ok, bad = _wait(cb, ok["build"]["id"]), _wait(cb, bad["build"]["id"])
    assert ok["buildStatus"] == "SUCCEEDED"
    prov = _phases(ok)["PROVISIONING"]
    assert (prov["endTime"] - prov["startTime"]).total_seconds() >= 1.5 and prov[
        "durationInSeconds"
    ] >= 1
    assert bad["buildStatus"] == "FAULT"
    phase = _phases(bad)["PROVISIONING"]
    assert phase["phaseStatus"] == "FAULT" and "fault" in phase["contexts"][0]["message"]
    assert "DOWNLOAD_SOURCE" not in _phases(bad)


def test_api_errors_idempotency_and_throttling(cb: Any, knobs: Callable[..., dict]) -> None:
    with pytest.raises(ClientError) as err:
        cb.start_build(projectName="no-such-project-here")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "no-such-project-here" in str(err.value)
    with pytest.raises(ClientError):
        cb.list_builds_for_project(projectName="no-such-project-here")

    name = _project(cb)
    spec = _spec({"build": {"commands": ["true"]}})
    kw = {"projectName": name, "sourceTypeOverride": "NO_SOURCE", "buildspecOverride": spec}
    first = cb.start_build(**kw, idempotencyToken="tok-1")["build"]
    again = cb.start_build(**kw, idempotencyToken="tok-1")["build"]
    assert first["id"] == again["id"]
    with pytest.raises(ClientError) as err:
        cb.start_build(**{**kw, "buildspecOverride": spec + " "}, idempotencyToken="tok-1")
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    # project calls are moto's
    assert name in cb.list_projects()["projects"]
    assert cb.batch_get_projects(names=[name])["projects"][0]["name"] == name

    state = knobs(throttle={"BatchGetBuilds": 5})
    assert state["throttle"] == {"BatchGetBuilds": 5}
    with pytest.raises(ClientError) as err:  # 4 attempts against loopback: all throttled
        cb.batch_get_builds(ids=[first["id"]])
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert cb.batch_get_builds(ids=[first["id"]])["builds"][0]["id"] == first["id"]
    assert knobs()["throttled"]["BatchGetBuilds"] == 5
    _wait(cb, first["id"])


def test_builds_die_with_the_service(stack_env: StackInfo, tmp_path: Path) -> None:
    """A second service (the module `stack up` runs) on the session's moto, stopped by
    SIGTERM as `stack down` does: its running build ends and its processes are gone."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "build_assets.stack.codebuild.server",
            "--port",
            str(port),
            "--moto",
            stack_env.aws_endpoint_url,
            "--home",
            str(tmp_path / "cb"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from build_assets.stack.health import http_up

        _until(lambda: http_up(f"http://127.0.0.1:{port}/"), 30, "the service")
        client = make_client("codebuild", endpoint_url=f"http://127.0.0.1:{port}")
        name = _project(client)
        pids = tmp_path / "pids"
        client.start_build(
            projectName=name,
            sourceTypeOverride="NO_SOURCE",
            buildspecOverride=_spec(
                {"build": {"commands": [f"sleep 300 & echo $! $$ > {pids}; sleep 300"]}}
            ),
        )
        found = _until(lambda: len(_pids(pids)) == 2 and _pids(pids), 30, "the build's pids")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _until(lambda: not any(_alive(p) for p in found), 10, "the build's processes gone")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# -- CodeBuildBuilder's own failure handling, against builds that really ran -------------------


@pytest.fixture
def builder_infra(stack_env: StackInfo) -> str:
    """Bucket, ECR repository and project for image `cbb-app` (env dev); the bucket name."""
    from build_assets.aws.bootstrap import bootstrap

    bucket = "local-codebuild-builder-tests"
    bootstrap(["cbb-app"], bucket=bucket, env="dev")
    return bucket


def _builder_request(version: str) -> Any:
    from tests.aws.test_codebuild import make_request

    return make_request(
        image="cbb-app", version=version, repository="127.0.0.1:9/cbb-app", build_args={}
    )


def test_builder_reports_a_failed_build_with_its_phase_and_cloudwatch_tail(
    cb: Any, builder_infra: str
) -> None:
    from build_assets.aws.build_status import console_url
    from build_assets.engine.builders.codebuild import CodeBuildBuilder
    from build_assets.errors import BuildError

    spec = _spec({"build": {"commands": ["for i in $(seq 80); do echo step $i; done", "exit 1"]}})
    builder = CodeBuildBuilder(builder_infra, "dev", buildspec=spec, sleep=lambda s: None)
    handle = builder.start(_builder_request("f1" * 32))
    _wait(cb, handle.build_id)
    assert builder.poll([handle]) == [handle]
    with pytest.raises(BuildError) as err:
        builder.finish(handle)
    exc = err.value
    assert (exc.status, exc.phase, exc.build_id) == ("FAILED", "BUILD", handle.build_id)
    tail = exc.log_tail.splitlines()
    assert len(tail) == 50  # the last 50 lines of the CloudWatch stream
    assert [t for t in tail if t.startswith("step ")][-1] == "step 80"
    text = str(exc)
    assert "Error while executing command: exit 1. Reason: exit status 1" in text
    assert console_url("us-east-1", "cbb-app-dev-img-builder", handle.build_id) in text
    assert handle.state["build"]["logs"]["deepLink"] in text


def test_builder_reports_a_build_that_succeeded_without_pushing(
    cb: Any, builder_infra: str
) -> None:
    from build_assets.engine.builders.codebuild import CodeBuildBuilder
    from build_assets.errors import BuildError

    spec = _spec({"build": {"commands": ["echo pushed nothing"]}})
    builder = CodeBuildBuilder(builder_infra, "dev", buildspec=spec, sleep=lambda s: None)
    request = _builder_request("f2" * 32)
    handle = builder.start(request)
    _wait(cb, handle.build_id)
    builder.poll([handle])
    with pytest.raises(BuildError, match=f"SUCCEEDED but {request.image_uri} is not in ECR"):
        builder.finish(handle)


def test_builder_backs_off_on_throttled_polls_and_resets_after_a_build_ends(
    cb: Any, builder_infra: str, knobs: Callable[..., dict]
) -> None:
    from build_assets.engine.builders.codebuild import CodeBuildBuilder

    sleeps: list[float] = []
    spec = _spec({"build": {"commands": ["true"]}})
    builder = CodeBuildBuilder(
        builder_infra, "dev", buildspec=spec, sleep=sleeps.append, poll_interval=5.0
    )
    handle = builder.start(_builder_request("f3" * 32))
    _wait(cb, handle.build_id)
    knobs(throttle={"BatchGetBuilds": 4})  # one poll's call and its 3 retries (loopback)
    assert builder.poll([handle]) == []
    assert builder.poll([handle]) == [handle]
    assert sleeps == [5.0, 10.0]
    assert knobs()["throttled"] == {"BatchGetBuilds": 4}
    builder.poll([handle])
    assert sleeps[-1] == 5.0
