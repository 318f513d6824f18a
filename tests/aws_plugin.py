"""pytest plugin: a real moto server over HTTP for AWS tests (`-p tests.aws_plugin`).

`moto_server` (session) starts `ThreadedMotoServer` on 127.0.0.1 at a free port and points boto3
at it through the standard AWS_ENDPOINT_URL variable, with fake credentials and an isolated AWS
config, so nothing can reach real AWS. `aws` (function) resets moto's state before each test and
returns a boto3 session; `ecr_push` simulates a build's `docker push` with ECR PutImage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.request
from collections.abc import Callable, Iterator

import boto3
import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto server shared by the session; AWS env vars point at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
            mp.delenv(var, raising=False)
        # per-service endpoints (a local stack's AWS_ENDPOINT_URL_CODEBUILD, exported by
        # `eval "$(build-assets stack up)"` in .ci/run) would send those calls elsewhere
        for var in [v for v in os.environ if v.startswith("AWS_ENDPOINT_URL_")]:
            mp.delenv(var)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_REGION", REGION)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        # Lambda image functions must reference an image that exists in (moto's) ECR
        mp.setenv("MOTO_LAMBDA_STUB_ECR", "false")
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def aws(moto_server: str) -> boto3.Session:
    """A boto3 session on a freshly reset moto."""
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    return boto3.Session(region_name=REGION)


def push_image(session: boto3.Session, repository: str, tag: str, seed: str = "") -> str:
    """Put an image manifest into ECR under `tag` (what `docker push` does); return its digest."""
    layer = "sha256:" + hashlib.sha256(f"{repository}:{tag}:{seed}".encode()).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1469,
            "digest": "sha256:" + hashlib.sha256(layer.encode()).hexdigest(),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 977,
                "digest": layer,
            }
        ],
    }
    ecr = session.client("ecr")
    resp = ecr.put_image(
        repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag
    )
    return resp["image"]["imageId"]["imageDigest"]


@pytest.fixture
def ecr_push(aws: boto3.Session) -> Callable[..., str]:
    """`ecr_push(repository, tag)` -> digest (see push_image)."""
    return lambda repository, tag, seed="": push_image(aws, repository, tag, seed)


def endpoint_env() -> dict[str, str]:
    """The AWS_* variables the plugin set (for subprocesses)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
