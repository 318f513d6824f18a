"""LocalDockerBuilder against a real Docker engine and registry (the session's local stack)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from build_assets.core.context import MODE_EXEC, MODE_FILE, BuildContext, ContextFile, git_blob_id
from build_assets.engine import registry
from build_assets.engine.builders.base import Builder, BuildHandle, BuildRequest, BuildResult
from build_assets.engine.builders.local import LocalDockerBuilder
from build_assets.errors import BuildError, UserError
from build_assets.stack.local import StackInfo
from tests.images import shell_image

pytestmark = pytest.mark.stack

Files = dict[str, bytes | tuple[bytes, str]]


class DictReader:
    """Reads context files from a dict (path -> bytes)."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = contents

    def read(self, file: ContextFile) -> bytes:
        return self.contents[file.path]


def make_context(files: Files) -> BuildContext:
    contents: dict[str, bytes] = {}
    entries = []
    for path, spec in sorted(files.items()):
        data, mode = spec if isinstance(spec, tuple) else (spec, MODE_FILE)
        contents[path] = data
        entries.append(ContextFile(path, mode, git_blob_id(data)))
    return BuildContext(tuple(entries), DictReader(contents))


def make_request(
    stack: StackInfo,
    image: str,
    files: Files,
    *,
    dockerfile: str = "Dockerfile",
    build_args: dict[str, str] | None = None,
    base_image: str | None = None,
) -> BuildRequest:
    ctx = make_context(files)
    h = hashlib.sha256()
    for f in ctx.files:
        h.update(f"{f.path}\0{f.mode}\0{f.blob}\n".encode())
    h.update(json.dumps([dockerfile, build_args, base_image], sort_keys=True).encode())
    version = h.hexdigest()
    return BuildRequest(
        image=image,
        version=version,
        tag=f"git-{version[:12]}",
        repository=f"{stack.registry}/{image}",
        dockerfile=dockerfile,
        build_args=build_args or {},
        base_image=base_image,
        context=ctx,
    )


def wait_all(
    builder: LocalDockerBuilder, handles: Sequence[BuildHandle], timeout: float = 90.0
) -> None:
    """Poll until every handle is terminal (fails the test after `timeout`)."""
    pending = list(handles)
    deadline = time.monotonic() + timeout
    while pending:
        assert time.monotonic() < deadline, f"builds still running: {pending}"
        done = builder.poll(pending)
        pending = [h for h in pending if h not in done]


def build(builder: LocalDockerBuilder, request: BuildRequest) -> BuildResult:
    handle = builder.start(request)
    wait_all(builder, [handle])
    return builder.finish(handle)


def blob(stack: StackInfo, image: str, digest: str) -> bytes:
    url = f"http://{stack.registry}/v2/{image}/blobs/{digest}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def image_config(stack: StackInfo, image: str, tag: str) -> dict:
    manifest = registry.get_manifest(f"{stack.registry}/{image}", tag)
    assert manifest is not None
    return json.loads(blob(stack, image, manifest["config"]["digest"]))


def layer_members(stack: StackInfo, image: str, layer_digest: str) -> dict[str, tarfile.TarInfo]:
    data = gzip.decompress(blob(stack, image, layer_digest))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_scratch_build_is_pushed_and_found_afterwards(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    assert isinstance(local_builder, Builder)
    files: Files = {
        "images/hello/Dockerfile": b"FROM scratch\nCOPY images/hello/app/ /app/\n",
        "images/hello/app/hello.txt": b"hello\n",
        "images/hello/app/run.sh": (b"#!/bin/sh\necho hi\n", MODE_EXEC),
    }
    req = make_request(local_stack, "hello", files, dockerfile="images/hello/Dockerfile")
    assert local_builder.existing_digest(req) is None

    result = build(local_builder, req)

    assert result.digest.startswith("sha256:")
    assert result.digest == registry.manifest_digest(req.repository, req.tag)
    assert local_builder.existing_digest(req) == result.digest
    assert (result.image, result.tag, result.image_uri) == ("hello", req.tag, req.image_uri)
    assert not result.cached and result.builder == "local"
    assert result.build_id and result.build_id.startswith(f"local-hello-{req.tag}-")
    assert result.log_url and result.log_url.startswith("file://")
    assert Path(result.log_url.removeprefix("file://")).is_file()
    assert f"BUILD_ASSETS_DIGEST={result.digest}" in result.log_tail
    assert len(result.log_tail.splitlines()) <= 50
    assert result.duration_s > 0
    assert list((local_builder.work_dir / "tmp").iterdir()) == []  # context folder removed
    assert req.tag in registry.list_tags(req.repository)

    manifest = registry.get_manifest(req.repository, req.tag)
    assert manifest is not None
    members = layer_members(local_stack, "hello", manifest["layers"][0]["digest"])
    assert members["app/run.sh"].mode & 0o777 == 0o755
    assert members["app/hello.txt"].mode & 0o777 == 0o644


def test_dependent_image_builds_on_its_base_pinned_by_digest(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    base_req = make_request(
        local_stack,
        "dep-base",
        {"Dockerfile": b"FROM scratch\nCOPY base.txt /base.txt\n", "base.txt": b"base\n"},
    )
    base = build(local_builder, base_req)
    app_req = make_request(
        local_stack,
        "dep-app",
        {
            "Dockerfile": b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY app.txt /app.txt\n",
            "app.txt": b"app\n",
        },
        base_image=base.pinned_uri,
    )
    assert base.pinned_uri == f"{local_stack.registry}/dep-base@{base.digest}"

    app = build(local_builder, app_req)

    base_layers = registry.get_manifest(base_req.repository, base_req.tag)["layers"]  # type: ignore[index]
    app_layers = registry.get_manifest(app_req.repository, app_req.tag)["layers"]  # type: ignore[index]
    assert len(app_layers) == 2
    assert app_layers[0]["digest"] == base_layers[0]["digest"]
    assert "app.txt" in layer_members(local_stack, "dep-app", app_layers[1]["digest"])
    assert app.digest != base.digest


def test_build_args_reach_the_dockerfile(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    req = make_request(
        local_stack,
        "with-args",
        {
            "Dockerfile": b"FROM scratch\nARG GREETING\nARG TARGET=none\n"
            b"LABEL greeting=$GREETING target=$TARGET\nCOPY x /x\n",
            "x": b"x",
        },
        build_args={"GREETING": "hello world", "TARGET": "lambda"},
    )
    build(local_builder, req)
    labels = image_config(local_stack, "with-args", req.tag)["config"]["Labels"]
    assert labels == {"greeting": "hello world", "target": "lambda"}


def test_arg_defaulting_to_scratch_works_in_from(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    """`ARG BASE=scratch` + `FROM ${BASE}` is accepted by this engine's (legacy) builder."""
    req = make_request(
        local_stack,
        "arg-scratch",
        {"Dockerfile": b"ARG BASE=scratch\nFROM ${BASE}\nCOPY f /f\n", "f": b"f"},
    )
    result = build(local_builder, req)
    assert result.digest == local_builder.existing_digest(req)


def test_failing_dockerfile_raises_build_error_with_log_tail(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    req = make_request(
        local_stack,
        "broken",
        {"Dockerfile": b"FROM scratch\nCOPY missing.txt /missing.txt\n", "x": b"x"},
    )
    handle = local_builder.start(req)
    wait_all(local_builder, [handle])
    with pytest.raises(BuildError) as err:
        local_builder.finish(handle)
    e = err.value
    assert e.status == "FAILED" and e.phase == "BUILD"
    assert "missing.txt" in e.log_tail
    assert e.build_id == handle.build_id
    assert e.log_url and e.log_url.startswith("file://")
    assert "\n" not in str(e)
    assert local_builder.existing_digest(req) is None


def test_concurrent_builds_and_attaching_to_one_in_flight(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    reqs = [
        make_request(
            local_stack,
            f"many-{i}",
            {"Dockerfile": b"FROM scratch\nCOPY n /n\n", "n": str(i).encode()},
        )
        for i in range(3)
    ]
    handles = [local_builder.start(r) for r in reqs]
    twin = local_builder.start(reqs[0])
    assert twin.build_id == handles[0].build_id
    assert len({h.build_id for h in handles}) == 3

    wait_all(local_builder, [*handles, twin])

    results = [local_builder.finish(h) for h in handles]
    assert local_builder.finish(twin).digest == results[0].digest
    assert len({r.digest for r in results}) == 3
    for req, res in zip(reqs, results, strict=True):
        assert registry.manifest_digest(req.repository, req.tag) == res.digest


def test_context_changed_after_hashing_is_a_build_error(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    req = make_request(
        local_stack, "changed", {"Dockerfile": b"FROM scratch\nCOPY a /a\n", "a": b"old"}
    )
    req.context.reader.contents["a"] = b"new"  # type: ignore[attr-defined]
    handle = local_builder.start(req)
    wait_all(local_builder, [handle])
    with pytest.raises(BuildError, match="changed after its version was computed") as err:
        local_builder.finish(handle)
    assert err.value.phase == "PREPARE"


def test_invalid_build_arg_is_a_user_error(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    req = make_request(
        local_stack,
        "bad-arg",
        {"Dockerfile": b"FROM scratch\n"},
        build_args={"OK": "line1\nline2"},
    )
    with pytest.raises(UserError, match="single line"):
        local_builder.start(req)


def test_cancel_stops_a_running_build(local_stack: StackInfo, tmp_path: Path) -> None:
    # the legacy builder: its RUN steps are engine containers this test can watch
    local_builder = LocalDockerBuilder(
        tmp_path / "builder", registry_host=local_stack.registry, env={"DOCKER_BUILDKIT": "0"}
    )
    base = shell_image(local_stack.registry, tmp_path)
    req = make_request(
        local_stack,
        "slow",
        {"Dockerfile": b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN sleep 120\n"},
        base_image=base,
    )
    handle = local_builder.start(req)
    log = Path(handle.state["run"].log_path)
    deadline = time.monotonic() + 60
    while not (found := re.search(r"Running in ([0-9a-f]+)", log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, log.read_text()
        assert not local_builder.poll([handle], timeout=0.2), log.read_text()
    container = found.group(1)

    local_builder.cancel(handle)
    wait_all(local_builder, [handle], timeout=30)
    with pytest.raises(BuildError) as err:
        local_builder.finish(handle)
    assert err.value.status == "STOPPED"
    assert local_builder.existing_digest(req) is None

    def running() -> str:
        ps = ["docker", "ps", "-q", "--filter", f"id={container}"]
        return subprocess.run(ps, capture_output=True, text=True, check=True).stdout.strip()

    deadline = time.monotonic() + 30
    while running():  # the engine drops the RUN container once its client is gone
        assert time.monotonic() < deadline, f"container {container} still running"
        time.sleep(0.2)


def _foreign_elf() -> tuple[str, bytes]:
    """(a platform this host cannot run, an ELF header of that architecture): what the kernel
    refuses with ENOEXEC ('exec format error') when no emulator is registered."""
    import platform
    import struct

    machine = platform.machine()
    target, e_machine = (
        ("linux/amd64", 62) if machine in ("aarch64", "arm64") else ("linux/arm64", 183)
    )
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, e_machine, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0
    )
    return target, header


def test_a_platform_the_engine_cannot_run_is_one_clear_line(
    local_stack: StackInfo, local_builder: LocalDockerBuilder
) -> None:
    target, sh = _foreign_elf()
    emulators = Path("/proc/sys/fs/binfmt_misc")
    if emulators.is_dir() and any(p.name.startswith("qemu") for p in emulators.iterdir()):
        pytest.skip("QEMU emulation is registered here: the build would run")
    req = make_request(
        local_stack,
        "foreign",
        {"Dockerfile": b"FROM scratch\nCOPY sh /bin/sh\nRUN true\n", "sh": (sh, MODE_EXEC)},
    )
    req = dataclasses.replace(req, platform=target)
    with pytest.raises(BuildError) as err:
        build(local_builder, req)
    message = str(err.value)
    assert f"this Docker engine cannot run {target} programs" in message
    assert "qemu-user-static" in message and "\n" not in message
    assert err.value.phase == "BUILD"
