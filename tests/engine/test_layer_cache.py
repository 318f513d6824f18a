"""The layer cache travels through the registry: a builder with an empty engine reuses the
dependency layers of the previous build, and a missing or broken cache never fails a build.

"Warm" builds run on the session's engine; "cold" builds on a private dockerd started here with
its own data-root (nothing in its build cache or image store), both against the same registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_assets.engine import registry
from build_assets.engine.builders.base import BuildRequest, BuildResult
from build_assets.engine.builders.local import SCRIPT, LocalDockerBuilder
from build_assets.stack.local import StackInfo
from tests.engine.test_local_builder import build, make_request
from tests.images import shell_image
from tests.stack_plugin import private_engine_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def cold_engine(local_stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DOCKER_HOST of a private, empty dockerd (stopped at the end of the module)."""
    with private_engine_stack(tmp_path_factory.mktemp("cold")) as info:
        yield info.docker_host


@pytest.fixture(scope="module")
def base(local_stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny shell image in the registry, pinned by digest."""
    return shell_image(local_stack.registry, tmp_path_factory.mktemp("shell"))


def _files(nonce: str, handler: str) -> dict[str, bytes]:
    # the nonce makes the dependency step new to every engine: it can only come from the registry
    dockerfile = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        f'RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo "{nonce} $i" > /deps\n'
        "COPY handler.txt /handler.txt\n"
    )
    return {"Dockerfile": dockerfile.encode(), "handler.txt": handler.encode()}


def _request(stack: StackInfo, image: str, nonce: str, handler: str, base: str) -> BuildRequest:
    return make_request(stack, image, _files(nonce, handler), base_image=base)


def _with_previous(req: BuildRequest, previous_tag: str) -> BuildRequest:
    return BuildRequest(**{**req.__dict__, "previous_tag": previous_tag})


def _cold_builder(stack: StackInfo, engine: str, tmp_path: Path) -> LocalDockerBuilder:
    return LocalDockerBuilder(
        tmp_path / "cold", registry_host=stack.registry, env={"DOCKER_HOST": engine}
    )


def _log(result: BuildResult) -> str:
    return Path(result.extra["log_path"]).read_text(errors="replace")


def _step_cached(log: str, instruction: str) -> bool:
    """True if BuildKit reported the step running `instruction` as CACHED."""
    ids = re.findall(r"^#(\d+) \[\d+/\d+\] " + re.escape(instruction), log, re.M)
    assert ids, f"no step {instruction!r} in the build output:\n{log}"
    return any(re.search(rf"^#{i} CACHED$", log, re.M) for i in ids)


def _layers(stack: StackInfo, image: str, tag: str) -> list[str]:
    manifest = registry.get_manifest(f"{stack.registry}/{image}", tag)
    assert manifest is not None
    return [layer["digest"] for layer in manifest["layers"]]


def test_cold_builder_reuses_dependency_layers_from_the_registry(
    local_stack: StackInfo,
    local_builder: LocalDockerBuilder,
    cold_engine: str,
    base: str,
    tmp_path: Path,
) -> None:
    image, nonce = f"lc-reuse-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    first = build(local_builder, _request(local_stack, image, nonce, "v1", base))
    assert not _step_cached(_log(first), "RUN i=0")

    change = _with_previous(_request(local_stack, image, nonce, "v2", base), first.tag)
    second = build(_cold_builder(local_stack, cold_engine, tmp_path), change)

    log = _log(second)
    assert f"importing cache manifest from {local_stack.registry}/{image}:{first.tag}" in log
    assert _step_cached(log, "RUN i=0"), log
    assert not _step_cached(log, "COPY handler.txt")
    old, new = _layers(local_stack, image, first.tag), _layers(local_stack, image, second.tag)
    assert new[:2] == old[:2]  # base and dependency layers: the same blobs
    assert new[2] != old[2]  # the handler layer is new


def test_missing_cache_tag_does_not_fail_the_build(
    local_stack: StackInfo, cold_engine: str, base: str, tmp_path: Path
) -> None:
    image, nonce = f"lc-missing-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    req = _with_previous(_request(local_stack, image, nonce, "v1", base), "git-doesnotexist")
    result = build(_cold_builder(local_stack, cold_engine, tmp_path), req)
    log = _log(result)
    assert f"{image}:git-doesnotexist" in log and "ERROR" in log  # the import did fail
    assert registry.manifest_digest(f"{local_stack.registry}/{image}", req.tag) == result.digest


def test_cache_whose_blob_is_gone_does_not_fail_the_build(
    local_stack: StackInfo,
    local_builder: LocalDockerBuilder,
    cold_engine: str,
    base: str,
    tmp_path: Path,
) -> None:
    image, nonce = f"lc-broken-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    first = build(local_builder, _request(local_stack, image, nonce, "v1", base))
    dependency_layer = _layers(local_stack, image, first.tag)[1]
    url = f"http://{local_stack.registry}/v2/{image}/blobs/{dependency_layer}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as r:
        assert r.status == 202

    change = _with_previous(_request(local_stack, image, nonce, "v2", base), first.tag)
    second = build(_cold_builder(local_stack, cold_engine, tmp_path), change)
    assert "importing cache manifest" in _log(second)
    assert registry.manifest_digest(f"{local_stack.registry}/{image}", change.tag)
    layers = _layers(local_stack, image, second.tag)
    for digest in layers:  # every layer of the new image is really in the registry
        head = f"http://{local_stack.registry}/v2/{image}/blobs/{digest}"
        with urllib.request.urlopen(urllib.request.Request(head, method="HEAD"), timeout=10):
            pass


def test_unreachable_cache_registry_does_not_fail_the_script(
    local_stack: StackInfo, cold_engine: str, base: str, tmp_path: Path
) -> None:
    """The script itself, with CACHE_FROM on a registry that refuses connections."""
    image, nonce = f"lc-unreachable-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    context = tmp_path / "context"
    context.mkdir()
    for name, data in _files(nonce, "v1").items():
        (context / name).write_bytes(data)
    env = {
        **os.environ,
        "DOCKER_HOST": cold_engine,
        "IMAGE_REPO": f"{local_stack.registry}/{image}",
        "IMAGE_TAG": "t1",
        "BASE_IMAGE": base,
        "CACHE_FROM": "127.0.0.1:1/nowhere/app:git-0 not/a/valid::ref",
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=context, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "importing cache manifest from 127.0.0.1:1/nowhere/app:git-0" in proc.stdout
    assert re.search(r"^BUILD_ASSETS_DIGEST=sha256:[0-9a-f]{64}$", proc.stdout, re.M)
    assert registry.manifest_digest(f"{local_stack.registry}/{image}", "t1")
