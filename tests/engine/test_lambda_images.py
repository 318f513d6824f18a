"""Images Lambda can run (issue 19, item 5): Lambda takes a single-platform image manifest only.

The deploy test runs on the real stack (dockerd, the stack's ECR proxy + registry, moto's
Lambda over HTTP): a real OCI image index is pushed next to the image it references, and the
deploy refuses it with one line before the function is touched. buildx is not installed on this
Debian, so the script test runs `build_image.sh` against a recording stand-in for the docker CLI
(it says which flags the buildx path passes; it builds nothing).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from build_assets.aws.clients import make_client
from build_assets.engine import registry as reg
from build_assets.engine.builders.local import SCRIPT
from build_assets.engine.deploy import deploy_function, ensure_local_execution_role
from build_assets.errors import UserError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _single_and_index(registry: str, tmp_path: Path) -> tuple[str, str]:
    """(image pinned, index pinned) in a new repository of the stack's ECR: the image built
    and pushed by the engine, then an OCI index referencing it (as buildx pushes one when
    attestations are on) PUT through the registry API."""
    name = f"lambda-{uuid.uuid4().hex[:8]}/fn"
    make_client("ecr").create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    repository = f"{registry}/{name}"
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY handler.py /var/task/\n")
    (tmp_path / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    for args in (
        ["build", "-q", "-t", f"{repository}:single", str(tmp_path)],
        ["push", f"{repository}:single"],
    ):
        res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    digest = reg.manifest_digest(repository, "single")
    media_type = reg.manifest_media_type(repository, "single")
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/single", headers={"Accept": reg.ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        size = len(resp.read())  # the exact bytes the index references
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    index_digest = reg.put_manifest(repository, "index", index, OCI_INDEX)
    return f"{repository}@{digest}", f"{repository}@{index_digest}"


@pytest.mark.stack
def test_an_image_index_is_refused_before_the_function_is_touched(stack_env, tmp_path) -> None:
    single, index = _single_and_index(stack_env.registry, tmp_path)
    repository, _, index_digest = index.partition("@")
    # the registry and the ECR API agree on what the index is
    assert reg.manifest_media_type(repository, index_digest) == OCI_INDEX
    name = reg.parse_repository(repository).name
    [detail] = make_client("ecr").describe_images(
        repositoryName=name, imageIds=[{"imageTag": "index"}]
    )["imageDetails"]
    assert (detail["imageDigest"], detail["imageManifestMediaType"]) == (index_digest, OCI_INDEX)

    lam = make_client("lambda")
    role = ensure_local_execution_role(make_client("iam"))
    fn = f"fn-{uuid.uuid4().hex[:8]}"
    expected = (
        f"Lambda {fn}: {index} is an image index ({OCI_INDEX}), which Lambda refuses (it runs a"
        " single-platform image manifest only): rebuild it without attestations,"
        " `docker buildx build --provenance=false --sbom=false` (build_image.sh passes them)"
    )
    with pytest.raises(UserError) as created:
        deploy_function(lam, fn, index, create_if_missing=True, role_arn=role)
    assert created.value.lines == [expected]
    assert fn not in {f["FunctionName"] for f in lam.list_functions()["Functions"]}

    assert deploy_function(lam, fn, single, create_if_missing=True, role_arn=role).changed
    with pytest.raises(UserError) as updated:
        deploy_function(lam, fn, index)
    assert updated.value.lines == [expected]
    assert lam.get_function(FunctionName=fn)["Code"]["ImageUri"] == single
    subprocess.run(["docker", "rmi", f"{repository}:single"], capture_output=True)


_FAKE_DOCKER = """#!/usr/bin/env bash
# Stand-in for a docker CLI with buildx (none on this machine): records its arguments.
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1 $2" in
  "buildx version") echo "github.com/docker/buildx $FAKE_BUILDX_VERSION" ;;
  "buildx build")
    if [ "${3:-}" = --help ]; then
      echo "Usage:  docker buildx build [OPTIONS] PATH | URL | -"
      [ "$FAKE_BUILDX_VERSION" = v0.9.1 ] || echo "      --provenance string   Shorthand"
      [ "$FAKE_BUILDX_VERSION" = v0.9.1 ] || echo "      --sbom string         Shorthand"
    fi ;;
  "push "*) echo "x: digest: sha256:$(printf '%064d' 7) size: 1" ;;
esac
exit 0
"""


@pytest.mark.parametrize(("version", "flags"), [("v0.12.1", True), ("v0.9.1", False)])
def test_the_buildx_path_never_asks_for_attestations(tmp_path, version, flags) -> None:
    fake = tmp_path / "docker"
    fake.write_text(_FAKE_DOCKER)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    calls = tmp_path / "calls.log"
    env = {
        **os.environ,
        "DOCKER_CLI": str(fake),
        "FAKE_DOCKER_LOG": str(calls),
        "FAKE_BUILDX_VERSION": version,
        "IMAGE_REPO": "127.0.0.1:1/app",
        "IMAGE_TAG": "git-000000000000",
    }
    res = subprocess.run(
        ["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    builds = [c for c in calls.read_text().splitlines() if c.startswith("buildx build --")]
    [build] = [c for c in builds if c != "buildx build --help"]
    assert ("--provenance=false --sbom=false" in build) is flags
    assert "(" + str(fake) + ", buildx," in res.stdout
