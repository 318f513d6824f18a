"""`make_client` picks its retry and S3 addressing settings from the endpoint boto3 resolved
(real boto3 clients; creating one makes no request, so nothing needs to listen)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from build_assets.aws.clients import make_client

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_CODEBUILD")


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> boto3.Session:
    """A session seeing no endpoint variable and no profile's `endpoint_url`."""
    for name in ENDPOINT_VARIABLES + ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return boto3.Session(region_name="eu-west-1")


def _settings(client) -> tuple[str | None, int, str]:
    """(S3 addressing style, attempts in all: retries + 1, retry mode)."""
    config = client.meta.config
    return (
        (config.s3 or {}).get("addressing_style"),
        config.retries["total_max_attempts"],
        config.retries["mode"],
    )


def test_aws_endpoints_keep_virtual_hosts_and_adaptive_retries(session: boto3.Session) -> None:
    s3 = make_client("s3", session)
    assert s3.meta.endpoint_url.endswith(".amazonaws.com")
    assert _settings(s3) == (None, 11, "adaptive")
    assert _settings(make_client("codebuild", session)) == (None, 11, "adaptive")


def test_an_emulator_on_loopback_gets_path_style_and_quick_failure(
    session: boto3.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    s3 = make_client("s3", boto3.Session(region_name="eu-west-1"))
    assert s3.meta.endpoint_url == "http://127.0.0.1:4566"
    assert _settings(s3) == ("path", 4, "standard")
    assert _settings(make_client("ecr", boto3.Session(region_name="eu-west-1")))[1:] == (
        4,
        "standard",
    )


def test_a_service_endpoint_applies_to_that_service_only(
    session: boto3.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_CODEBUILD", "http://localhost:9999")
    fresh = boto3.Session(region_name="eu-west-1")
    assert _settings(make_client("codebuild", fresh)) == (None, 4, "standard")
    assert _settings(make_client("s3", fresh)) == (None, 11, "adaptive")


def test_a_remote_emulator_and_an_explicit_endpoint(session: boto3.Session) -> None:
    remote = make_client("s3", session, endpoint_url="http://localstack.internal:4566")
    assert _settings(remote) == ("path", 11, "adaptive")  # not loopback: AWS's retries
    local = make_client("sqs", session, endpoint_url="http://127.0.0.1:1")
    assert _settings(local) == (None, 4, "standard")
