"""CodeBuildBuilder and the buildspec, against a real moto server over HTTP.

S3, ECR, CloudWatch Logs and the CodeBuild API calls all go to moto. moto's CodeBuild is shape
only: StartBuild ignores its overrides (source, buildspec, env vars, idempotency token), a build
reports SUCCEEDED on the first BatchGetBuilds and can never fail.

Builds that really run, fail, time out, fault, are stopped or throttled are tested on the
stack's local CodeBuild (tests/stack/test_local_codebuild.py, test_codebuild_failures.py,
test_e2e_codebuild.py). What stays here is what the local service cannot produce on demand:

* what StartBuild was sent, observed with a botocore event hook on the real client;
* `CodeBuildOverlay`, a wrapper of the moto client, only for builds whose timing a test must
  fix: a build held IN_PROGRESS until the test ends it (attach after a restart, one
  BatchGetBuilds per poll while nothing finishes, a retry after a failure), exact phase
  durations (95 s, QUEUED 4 s) in the result's metadata, a barrier between ListBuilds and
  StartBuild of two "processes" (the idempotency-token race), and a failed build without
  any log stream. Logs come from real moto CloudWatch Logs, digests from real moto ECR.
"""

from __future__ import annotations

import copy
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from build_assets.aws.bootstrap import bootstrap
from build_assets.aws.build_start import idempotency_token
from build_assets.aws.build_status import console_url
from build_assets.aws.buildspec import build_commands, load_script, render_buildspec
from build_assets.aws.context_upload import CONTEXT_FORMAT, context_key
from build_assets.core.context import MODE_EXEC, BuildContext, ContextFile, git_blob_id
from build_assets.engine.builders import codebuild as cbmod
from build_assets.engine.builders.base import Builder, BuildHandle, BuildRequest
from build_assets.engine.builders.codebuild import CodeBuildBuilder
from build_assets.errors import BuildError, UserError
from tests.aws_plugin import REGION, REGISTRY

BUCKET = "ba-contexts-test"
VERSION = "ab" * 32


class MemReader:
    """Context contents from a dict (path -> bytes)."""

    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def read(self, file: ContextFile) -> bytes:
        return self.data[file.path]


def make_request(
    image: str = "app",
    version: str = VERSION,
    files: dict[str, bytes] | None = None,
    **kw: Any,
) -> BuildRequest:
    files = files or {
        "app/Dockerfile": b"FROM scratch\nCOPY handler.py /\n",
        "app/handler.py": b"def handler(event, ctx):\n    return 1\n",
        "app/run.sh": b"#!/bin/sh\necho hi\n",
    }
    context = BuildContext(
        files=tuple(
            ContextFile(p, MODE_EXEC if p.endswith(".sh") else "100644", git_blob_id(d))
            for p, d in sorted(files.items())
        ),
        reader=MemReader(files),
    )
    fields: dict[str, Any] = {
        "image": image,
        "version": version,
        "tag": "git-" + version[:12],
        "repository": f"{REGISTRY}/{image}",
        "dockerfile": "app/Dockerfile",
        "build_args": {"PYTHON": "3.12", "EXTRA": "a b"},
        "base_image": None,
        "context": context,
    }
    fields.update(kw)
    return BuildRequest(**fields)


@pytest.fixture
def infra(aws: boto3.Session) -> boto3.Session:
    """Bucket, repositories, role and projects for images app and base (env dev)."""
    bootstrap(["base", "app"], bucket=BUCKET, session=aws)
    return aws


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_builder(infra: boto3.Session, sleeps: list[float]) -> Callable[..., CodeBuildBuilder]:
    def make(**kw: Any) -> CodeBuildBuilder:
        kw.setdefault("session", infra)
        kw.setdefault("sleep", sleeps.append)
        kw.setdefault("env", "dev")
        return CodeBuildBuilder(BUCKET, **kw)

    return make


@pytest.fixture
def start_calls(infra: boto3.Session) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """A real CodeBuild client whose StartBuild parameters are recorded on their way to moto."""
    client = infra.client("codebuild")
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    client.meta.events.register("provide-client-params.codebuild.StartBuild", record)
    yield client, seen


# -- plain moto ---------------------------------------------------------------------------


def test_builder_satisfies_the_protocol(make_builder: Callable[..., CodeBuildBuilder]) -> None:
    assert isinstance(make_builder(), Builder)


def test_context_zip_lands_at_content_key_and_is_reused(
    make_builder: Callable[..., CodeBuildBuilder], infra: boto3.Session
) -> None:
    builder, request = make_builder(), make_request()
    key, uploaded = builder.upload_context(request)
    assert (key, uploaded) == (f"contexts/app/{VERSION}.c{CONTEXT_FORMAT}.zip", True)
    s3 = infra.client("s3")
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    assert obj["Body"].read() == request.context.zip_bytes()
    assert obj["Metadata"] == {"image": "app", "version": VERSION}

    puts: list[str] = []
    builder.s3.meta.events.register("before-call.s3.PutObject", lambda **kw: puts.append("put"))
    again = make_builder().upload_context(make_request())
    assert again == (key, False)
    builder.upload_context(request)
    assert puts == []
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == obj["ETag"]


def test_large_context_uploads_in_parts(
    make_builder: Callable[..., CodeBuildBuilder], infra: boto3.Session
) -> None:
    big = os.urandom(11 * 1024 * 1024)  # incompressible: > 2 parts of 5 MiB
    request = make_request(files={"app/Dockerfile": b"FROM scratch\n", "app/blob.bin": big})
    builder = make_builder(multipart_chunk=5 * 1024 * 1024)
    parts: list[int] = []
    builder.s3.meta.events.register(
        "provide-client-params.s3.UploadPart",
        lambda params, **kw: parts.append(params["PartNumber"]),
    )
    key, uploaded = builder.upload_context(request)
    assert uploaded and sorted(parts) == [1, 2, 3]
    body = infra.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body == request.context.zip_bytes()


def test_start_build_request(
    make_builder: Callable[..., CodeBuildBuilder],
    start_calls: tuple[Any, list[dict[str, Any]]],
) -> None:
    client, seen = start_calls
    builder = make_builder(
        codebuild=client, secrets={"NPM_TOKEN": "ssm:/ci/npm", "PYPI": "secretsmanager:arn:x"}
    )
    base = f"{REGISTRY}/base@sha256:" + "c" * 64
    request = make_request(base_image=base, previous_tag="git-000000000000")
    handle = builder.start(request)

    (params,) = seen
    assert params["projectName"] == "app-dev-img-builder"
    assert params["sourceTypeOverride"] == "S3"
    zip_key = f"contexts/app/{VERSION}.c{CONTEXT_FORMAT}.zip"
    assert params["sourceLocationOverride"] == f"{BUCKET}/{zip_key}"
    assert params["buildspecOverride"] == render_buildspec()
    rest = {k: v for k, v in params.items() if k != "idempotencyToken"}
    assert params["idempotencyToken"] == idempotency_token("app", VERSION, 0, rest)
    env = {v["name"]: (v["type"], v["value"]) for v in params["environmentVariablesOverride"]}
    assert env == {
        "IMAGE_REPO": ("PLAINTEXT", f"{REGISTRY}/app"),
        "IMAGE_TAG": ("PLAINTEXT", "git-" + VERSION[:12]),
        "DOCKERFILE": ("PLAINTEXT", "app/Dockerfile"),
        "BASE_IMAGE": ("PLAINTEXT", base),
        "BUILD_ARGS": ("PLAINTEXT", "EXTRA=a b\nPYTHON=3.12"),
        "CACHE_FROM": ("PLAINTEXT", f"{REGISTRY}/app:git-000000000000"),
        "ECR_REGISTRY": ("PLAINTEXT", REGISTRY),
        "BUILD_ASSETS_VERSION": ("PLAINTEXT", VERSION),
        "BUILD_ASSETS_IMAGE": ("PLAINTEXT", "app"),
        "NPM_TOKEN": ("PARAMETER_STORE", "/ci/npm"),
        "PYPI": ("SECRETS_MANAGER", "arn:x"),
    }
    # the build exists in moto's CodeBuild under that project
    (build,) = client.batch_get_builds(ids=[handle.build_id])["builds"]
    assert build["projectName"] == "app-dev-img-builder"
    assert (
        handle.build_id in client.list_builds_for_project(projectName="app-dev-img-builder")["ids"]
    )


def test_optional_variables_are_omitted(
    make_builder: Callable[..., CodeBuildBuilder],
    start_calls: tuple[Any, list[dict[str, Any]]],
) -> None:
    client, seen = start_calls
    make_builder(codebuild=client).start(
        make_request(build_args={}, repository="registry.local:5000/app")
    )
    names = {v["name"] for v in seen[0]["environmentVariablesOverride"]}
    assert names == {
        "IMAGE_REPO",
        "IMAGE_TAG",
        "DOCKERFILE",
        "BUILD_ASSETS_VERSION",
        "BUILD_ASSETS_IMAGE",
    }


def test_success_reads_digest_from_ecr(
    make_builder: Callable[..., CodeBuildBuilder],
    ecr_push: Callable[..., str],
    sleeps: list[float],
) -> None:
    builder, request = make_builder(poll_interval=2.0), make_request()
    assert builder.existing_digest(request) is None
    handle = builder.start(request)
    digest = ecr_push("app", request.tag)  # what the build's `docker push` does
    assert builder.poll([handle]) == [handle]  # moto: SUCCEEDED at once
    assert sleeps == [2.0]
    result = builder.finish(handle)
    assert (result.digest, result.cached, result.builder) == (digest, False, "codebuild")
    assert result.image_uri == f"{REGISTRY}/app:{request.tag}"
    assert result.pinned_uri == f"{REGISTRY}/app@{digest}"
    assert result.build_id == handle.build_id
    assert result.log_url == console_url(REGION, "app-dev-img-builder", handle.build_id)
    assert result.extra["build_id"] == handle.build_id
    assert set(result.extra) >= {"console_url", "log_deep_link", "queued_s", "build_s", "phases"}
    assert builder.existing_digest(request) == digest


def test_console_link_format() -> None:
    url = console_url("eu-west-1", "app-dev-img-builder", "app-dev-img-builder:1234-abcd")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/codesuite/codebuild/projects/"
        "app-dev-img-builder/build/app-dev-img-builder%3A1234-abcd/?region=eu-west-1"
    )


def test_missing_repository_is_a_user_error(make_builder: Callable[..., CodeBuildBuilder]) -> None:
    with pytest.raises(UserError) as err:
        make_builder().existing_digest(make_request(image="ghost", repository=f"{REGISTRY}/ghost"))
    (line,) = err.value.lines
    assert "RepositoryNotFoundException" in line and "ghost" in line and "bootstrap" in line


def test_missing_bucket_is_a_user_error(aws: boto3.Session) -> None:
    builder = CodeBuildBuilder("no-such-bucket-here", session=aws, sleep=lambda s: None)
    with pytest.raises(UserError) as err:
        builder.start(make_request())
    (line,) = err.value.lines
    assert "s3://no-such-bucket-here/contexts/app/" in line and "bootstrap" in line


def test_missing_project_is_a_user_error(make_builder: Callable[..., CodeBuildBuilder]) -> None:
    with pytest.raises(UserError) as err:
        make_builder(env="prod").start(make_request())
    (line,) = err.value.lines
    assert "app-prod-img-builder" in line and "ResourceNotFoundException" in line


def test_access_denied_is_one_line(make_builder: Callable[..., CodeBuildBuilder]) -> None:
    """moto does not enforce IAM; the AccessDenied answer is stubbed."""
    from botocore.stub import Stubber

    builder = make_builder()
    with Stubber(builder.ecr) as stub:
        stub.add_client_error("describe_images", "AccessDeniedException", "not allowed")
        with pytest.raises(UserError) as err:
            builder.existing_digest(make_request())
    assert err.value.lines == [
        f"cannot read image tag from ECR ({REGISTRY}/app:git-{VERSION[:12]}):"
        " AccessDeniedException: not allowed — check the IAM permissions of the caller"
    ]


def test_bad_secret_reference_is_a_user_error(infra: boto3.Session) -> None:
    with pytest.raises(UserError, match="secret TOKEN: reference 'vault:x'"):
        CodeBuildBuilder(BUCKET, session=infra, secrets={"TOKEN": "vault:x"})


# -- buildspec ----------------------------------------------------------------------------


def test_buildspec_embeds_the_shared_script() -> None:
    spec = yaml.safe_load(render_buildspec())
    assert spec["version"] == 0.2 and spec["env"]["shell"] == "bash"
    assert spec["env"]["exported-variables"] == ["BUILD_ASSETS_DIGEST"]
    assert spec["phases"]["build"]["commands"] == build_commands(load_script())


def test_buildspec_commands_run_the_script_in_the_context(tmp_path: Any) -> None:
    """Runs the rendered build commands with bash, as CodeBuild would, on a stand-in script."""
    script = (
        "set -eu\n"
        'echo "in $(pwd) tag=$IMAGE_TAG args=$BUILD_ARGS quote=\'\\"\\$\'"\n'
        "test -f Dockerfile\n"
        "echo BUILD_ASSETS_DIGEST=sha256:1234\n"
    )
    work, ctx = tmp_path / "work", tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    commands = yaml.safe_load(render_buildspec(script, work_dir=str(work)))["phases"]["build"][
        "commands"
    ]
    shell = "\n".join(["set -e", *commands, 'echo "exported=$BUILD_ASSETS_DIGEST"'])
    env = {"PATH": os.environ["PATH"], "IMAGE_TAG": "git-abc", "BUILD_ARGS": "A=1\nB=2"}
    out = subprocess.run(
        ["bash", "-c", shell], cwd=ctx, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert f"in {ctx} tag=git-abc args=A=1\nB=2 quote='\"$'" in out
    assert out.rstrip().endswith("exported=sha256:1234")

    failing = script.replace("test -f Dockerfile", "exit 3")
    commands = yaml.safe_load(render_buildspec(failing, work_dir=str(work)))["phases"]["build"][
        "commands"
    ]
    proc = subprocess.run(["bash", "-c", "\n".join(["set -e", *commands])], cwd=ctx, env=env)
    assert proc.returncode != 0


def test_buildspec_runs_the_real_script_far_enough_to_validate_inputs(tmp_path: Any) -> None:
    """The packaged build_image.sh survives embedding: it runs and rejects a missing IMAGE_REPO
    (a full build needs Docker, covered by the local builder's end-to-end tests)."""
    commands = yaml.safe_load(render_buildspec(work_dir=str(tmp_path / "work")))["phases"]["build"][
        "commands"
    ]
    proc = subprocess.run(
        ["bash", "-c", "\n".join(["set -e", *commands])],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "IMAGE_TAG": "git-abc"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "IMAGE_REPO is required" in proc.stdout


# -- what moto cannot do: CodeBuild overlay -----------------------------------------------


class CodeBuildOverlay:
    """The real moto CodeBuild client plus what moto lacks (see the module docstring)."""

    def __init__(self, client: Any, *, honour_tokens: bool = True) -> None:
        self.client = client
        self.honour_tokens = honour_tokens
        self.builds: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.throttle_next = 0
        self.before_list: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def start_build(self, **kw: Any) -> dict[str, Any]:
        with self._lock:
            self.calls.append(("start_build", kw))
            token = kw.get("idempotencyToken")
            if self.honour_tokens and token in self.tokens:
                return {"build": copy.deepcopy(self.builds[self.tokens[token]])}
            build = self.client.start_build(projectName=kw["projectName"])["build"]
            now = datetime.now(UTC)
            build.update(
                buildStatus="IN_PROGRESS",
                currentPhase="BUILD",
                startTime=now,
                source={
                    "type": kw["sourceTypeOverride"],
                    "location": kw["sourceLocationOverride"],
                    "buildspec": kw["buildspecOverride"],
                },
                environment={
                    **build["environment"],
                    "environmentVariables": kw["environmentVariablesOverride"],
                },
                phases=[
                    {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 0},
                    {"phaseType": "QUEUED", "phaseStatus": "SUCCEEDED", "durationInSeconds": 4},
                    {"phaseType": "BUILD", "startTime": now},
                ],
                logs={
                    "groupName": f"/aws/codebuild/{kw['projectName']}",
                    "streamName": build["id"].split(":", 1)[1],
                    "deepLink": f"https://console.aws.amazon.com/cloudwatch/home#logs/{build['id']}",
                },
            )
            self.builds[build["id"]] = build
            if token:
                self.tokens[token] = build["id"]
            return {"build": copy.deepcopy(build)}

    def batch_get_builds(self, ids: list[str]) -> dict[str, Any]:
        self.calls.append(("batch_get_builds", {"ids": list(ids)}))
        if self.throttle_next:
            self.throttle_next -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                "BatchGetBuilds",
            )
        self.client.batch_get_builds(ids=ids)  # moto validates the ids
        with self._lock:
            return {
                "builds": [copy.deepcopy(self.builds[i]) for i in ids if i in self.builds],
                "buildsNotFound": [i for i in ids if i not in self.builds],
            }

    def list_builds_for_project(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(("list_builds_for_project", kw))
        self.before_list()
        ids = self.client.list_builds_for_project(projectName=kw["projectName"])["ids"]
        return {"ids": ids[::-1] if kw.get("sortOrder") == "DESCENDING" else ids}

    def stop_build(self, id: str) -> dict[str, Any]:  # noqa: A002 - boto3's name
        self.calls.append(("stop_build", {"id": id}))
        self.client.stop_build(id=id)
        self.end(id, "STOPPED", phase="BUILD", message="Build was stopped by user")
        return {"build": copy.deepcopy(self.builds[id])}

    def end(
        self, build_id: str, status: str, *, phase: str | None = None, message: str = ""
    ) -> None:
        """Finish a build like CodeBuild does: status, phases (the failed one with context)."""
        with self._lock:
            build = self.builds[build_id]
            build["buildStatus"] = status
            build["currentPhase"] = "COMPLETED"
            build["endTime"] = build["startTime"] + timedelta(seconds=95)
            build["buildComplete"] = True
            ok = "SUCCEEDED" if status == "SUCCEEDED" else status
            contexts = [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": message}]
            phases = build["phases"][:2]  # SUBMITTED, QUEUED
            if phase and phase != "BUILD":  # failed before the build phase ran
                phases.append(
                    {
                        "phaseType": phase,
                        "phaseStatus": ok,
                        "durationInSeconds": 1,
                        "contexts": contexts,
                    }
                )
            else:
                phases.append(
                    {
                        "phaseType": "BUILD",
                        "phaseStatus": ok,
                        "durationInSeconds": 80,
                        **({"contexts": contexts} if message else {}),
                    }
                )
            build["phases"] = phases

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.calls if name == op)


@pytest.fixture
def overlay(infra: boto3.Session) -> CodeBuildOverlay:
    return CodeBuildOverlay(infra.client("codebuild"))


def write_log(session: boto3.Session, build: dict[str, Any], lines: int) -> list[str]:
    """Put `lines` log lines into the build's (moto) CloudWatch log stream."""
    logs = session.client("logs")
    group, stream = build["logs"]["groupName"], build["logs"]["streamName"]
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    messages = [f"step {i}: doing things\n" for i in range(lines)]
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
    )
    return [m.rstrip("\n") for m in messages]


def test_missing_logs_are_tolerated(
    make_builder: Callable[..., CodeBuildBuilder], overlay: CodeBuildOverlay
) -> None:
    builder = make_builder(codebuild=overlay)
    handle = builder.start(make_request())
    overlay.end(handle.build_id, "FAILED", phase="BUILD", message="exit 1")
    builder.poll([handle])
    with pytest.raises(BuildError, match="FAILED in phase BUILD") as err:
        builder.finish(handle)
    assert err.value.log_tail == ""


def test_success_metadata(
    make_builder: Callable[..., CodeBuildBuilder],
    overlay: CodeBuildOverlay,
    ecr_push: Callable[..., str],
) -> None:
    builder = make_builder(codebuild=overlay)
    request = make_request()
    handle = builder.start(request)
    overlay.end(handle.build_id, "SUCCEEDED")
    digest = ecr_push("app", request.tag)
    builder.poll([handle])
    result = builder.finish(handle)
    assert result.digest == digest
    assert result.duration_s == 95.0
    assert result.extra["queued_s"] == 4
    assert result.extra["phases"] == {"SUBMITTED": 0, "QUEUED": 4, "BUILD": 80}
    assert result.extra["log_deep_link"] == overlay.builds[handle.build_id]["logs"]["deepLink"]
    assert result.extra["attached"] is False


def test_one_batch_call_per_poll_with_growing_backoff(
    make_builder: Callable[..., CodeBuildBuilder],
    overlay: CodeBuildOverlay,
    sleeps: list[float],
) -> None:
    builder = make_builder(codebuild=overlay, poll_interval=4.0, max_poll_interval=10.0)
    handles = [builder.start(make_request(version=c * 64)) for c in "123"]
    before = overlay.count("batch_get_builds")
    for _ in range(4):
        assert builder.poll(handles) == []
    batch_calls = [kw for op, kw in overlay.calls if op == "batch_get_builds"][before:]
    assert [sorted(kw["ids"]) for kw in batch_calls] == [sorted(h.build_id for h in handles)] * 4
    assert sleeps == [4.0, 6.0, 9.0, 10.0]
    overlay.end(handles[1].build_id, "FAILED", phase="BUILD", message="x")
    assert builder.poll(handles) == [handles[1]]


def test_restarted_run_attaches_to_the_build_in_progress(
    make_builder: Callable[..., CodeBuildBuilder],
    overlay: CodeBuildOverlay,
    ecr_push: Callable[..., str],
) -> None:
    first = make_builder(codebuild=overlay).start(make_request())
    # the process dies; a new one (new builder, same AWS) starts the same version again
    cbmod._START_LOCKS.clear()
    builder = make_builder(codebuild=overlay)
    handle = builder.start(make_request())
    assert handle.build_id == first.build_id
    assert handle.state["attached"] is True
    assert overlay.count("start_build") == 1
    overlay.end(handle.build_id, "SUCCEEDED")
    ecr_push("app", handle.request.tag)
    builder.poll([handle])
    assert builder.finish(handle).extra["attached"] is True


def test_other_versions_in_progress_are_not_attached(
    make_builder: Callable[..., CodeBuildBuilder], overlay: CodeBuildOverlay
) -> None:
    builder = make_builder(codebuild=overlay)
    a = builder.start(make_request(version="1" * 64))
    b = builder.start(make_request(version="2" * 64))
    assert a.build_id != b.build_id and overlay.count("start_build") == 2


def test_retry_after_failure_starts_a_new_build(
    make_builder: Callable[..., CodeBuildBuilder], overlay: CodeBuildOverlay
) -> None:
    builder = make_builder(codebuild=overlay)
    first = builder.start(make_request())
    overlay.end(first.build_id, "FAILED", phase="BUILD", message="exit 1")
    second = builder.start(make_request())
    assert second.build_id != first.build_id
    starts = [kw for op, kw in overlay.calls if op == "start_build"]
    rest = [{k: v for k, v in kw.items() if k != "idempotencyToken"} for kw in starts]
    assert rest[0] == rest[1]
    assert [kw["idempotencyToken"] for kw in starts] == [
        idempotency_token("app", VERSION, 0, rest[0]),
        idempotency_token("app", VERSION, 1, rest[1]),
    ]


def _start_together(builders: list[CodeBuildBuilder]) -> list[BuildHandle]:
    barrier = threading.Barrier(len(builders), timeout=30)
    results: list[Any] = [None] * len(builders)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = builders[i].start(make_request())
        except BaseException as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(builders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def test_concurrent_starts_in_one_process_make_one_build(
    make_builder: Callable[..., CodeBuildBuilder], infra: boto3.Session
) -> None:
    """Idempotency tokens off: the per-version lock + attach alone prevent the duplicate."""
    overlay = CodeBuildOverlay(infra.client("codebuild"), honour_tokens=False)
    handles = _start_together([make_builder(codebuild=overlay) for _ in range(2)])
    assert overlay.count("start_build") == 1
    assert handles[0].build_id == handles[1].build_id
    assert sorted(h.state["attached"] for h in handles) == [False, True]


def test_concurrent_starts_in_two_processes_make_one_build(
    make_builder: Callable[..., CodeBuildBuilder],
    overlay: CodeBuildOverlay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No shared lock (two processes) and both list before either starts: the idempotency
    token makes CodeBuild return the same build to both."""
    monkeypatch.setattr(CodeBuildBuilder, "_start_lock", lambda self, p, v: threading.Lock())
    listed = threading.Barrier(2, timeout=30)
    overlay.before_list = listed.wait
    handles = _start_together([make_builder(codebuild=overlay) for _ in range(2)])
    assert overlay.count("start_build") == 2
    assert len(overlay.builds) == 1
    assert handles[0].build_id == handles[1].build_id


def test_cancel_on_plain_moto_calls_stop_build(
    make_builder: Callable[..., CodeBuildBuilder], infra: boto3.Session
) -> None:
    client = infra.client("codebuild")
    stops: list[str] = []
    client.meta.events.register(
        "provide-client-params.codebuild.StopBuild", lambda params, **kw: stops.append(params["id"])
    )
    builder = make_builder(codebuild=client)
    handle = builder.start(make_request())
    builder.cancel(handle)
    assert stops == [handle.build_id]
    builder.cancel(handle)  # already stopped: best effort, no error


def test_context_key_is_content_addressed() -> None:
    assert context_key("app", VERSION) == f"contexts/app/{VERSION}.c{CONTEXT_FORMAT}.zip"
