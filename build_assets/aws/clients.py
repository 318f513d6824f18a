"""boto3 sessions and clients, and AWS errors turned into one-line `UserError`s.

Endpoints: boto3 (>= 1.28.57) honours `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` natively,
so pointing every client at moto or LocalStack needs nothing here beyond path-style S3 addressing
(virtual hosts such as `bucket.127.0.0.1` do not resolve). Credentials and region come from the
usual chain (env, profile, SSO, instance role); `AWS_PROFILE` selects a profile.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    TokenRetrievalError,
)

from build_assets.errors import UserError

# adaptive = standard retries (throttling, 5xx, transient network) + client-side rate limiting
RETRY_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})

# an emulator on this machine (moto, LocalStack) neither throttles nor blips: a refused
# connection means it is down, which should be said in seconds, not after a minute of back-off
LOOPBACK_RETRIES = Config(retries={"mode": "standard", "max_attempts": 3})

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
_ACCESS_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
_BAD_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    }
)
_AWS_HOST = re.compile(r"\.(amazonaws\.com(\.cn)?|api\.aws)$")  # AWS's own endpoints
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def make_session(region: str | None = None, profile: str | None = None) -> boto3.Session:
    """A boto3 session from the default chain; `region`/`profile` override the environment."""
    try:
        return boto3.Session(region_name=region, profile_name=profile)
    except Exception as exc:  # ProfileNotFound and friends
        raise UserError(f"AWS session: {exc}") from None


def region_of(session: boto3.Session) -> str:
    """The session's region, or a UserError saying how to set one."""
    if not session.region_name:
        raise UserError("no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION)")
    return session.region_name


def partition_of(session: boto3.Session) -> str:
    """ARN partition of the session's region ("aws", "aws-cn", "aws-us-gov")."""
    try:
        return session.get_partition_for_region(region_of(session))
    except Exception:
        return "aws"


def make_client(service: str, session: boto3.Session | None = None, **kwargs: Any) -> Any:
    """A client with adaptive retries; AWS_ENDPOINT_URL* and region come from the environment.

    The endpoint is the one boto3 resolved for this client (`endpoint_url=`, the
    `AWS_ENDPOINT_URL[_<SERVICE>]` variables or the profile's `endpoint_url`): an emulator's
    gets path-style S3 addressing and quick failure on loopback; that client is made again
    with them (a few ms, on an emulator only).
    """
    session = session or make_session()
    region_of(session)
    try:
        client = session.client(service, config=RETRY_CONFIG, **kwargs)
        extra = _emulator_config(service, client.meta.endpoint_url)
        if extra is None:
            return client
        return session.client(service, config=RETRY_CONFIG.merge(extra), **kwargs)
    except NoRegionError:
        raise UserError("no AWS region configured: set AWS_REGION") from None


def _emulator_config(service: str, endpoint: str | None) -> Config | None:
    """Path-style S3 on an endpoint that is not AWS's, few retries on loopback; None for AWS."""
    from urllib.parse import urlsplit

    host = (urlsplit(endpoint).hostname or "") if endpoint else ""
    extra: Config | None = None
    if service == "s3" and host and not _AWS_HOST.search(host):
        extra = Config(s3={"addressing_style": "path"})
    if host and _is_loopback(endpoint or ""):
        extra = LOOPBACK_RETRIES if extra is None else extra.merge(LOOPBACK_RETRIES)
    return extra


def account_id(session: boto3.Session) -> str:
    """The caller's AWS account id (STS GetCallerIdentity)."""
    with aws_errors("read caller identity", "sts"):
        return make_client("sts", session).get_caller_identity()["Account"]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_throttling(exc: BaseException) -> bool:
    """True when `exc` is an AWS throttling error."""
    return error_code(exc) in THROTTLING_CODES


def ecr_registry_parts(repository: str) -> tuple[str | None, str, str | None]:
    """Split "host/path/name" into (ECR registry host or None, repository name, account id)."""
    host, _, name = repository.partition("/")
    if not name or not ("." in host or ":" in host or host == "localhost"):
        return None, repository, None  # no registry host: the whole string is the name
    match = _ECR_HOST.match(host)
    return (host if match else None), name, (match.group(1) if match else None)


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def describe_error(exc: BaseException, action: str, resource: str) -> str:
    """One line telling the user what failed, on what, and (when known) what to do."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, TokenRetrievalError)):
        return (
            f"cannot {action} ({resource}): no usable AWS credentials"
            " (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws sso login`)"
        )
    if isinstance(exc, EndpointConnectionError):
        url = str(exc.kwargs.get("endpoint_url") or "")
        hint = " (AWS_ENDPOINT_URL: is the local stack up? build-assets stack up)"
        hint = hint if _is_loopback(url) else ""
        return f"cannot {action} ({resource}): cannot reach {url}{hint}"
    if isinstance(exc, NoRegionError):
        return f"cannot {action} ({resource}): no AWS region configured (set AWS_REGION)"
    if not isinstance(exc, ClientError):
        return f"cannot {action} ({resource}): {exc}"
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")).strip() or code
    hint = ""
    if code in _ACCESS_DENIED:
        hint = " — check the IAM permissions of the caller"
    elif code in _BAD_CREDENTIALS:
        hint = " — AWS credentials are invalid or expired"
    elif code in ("NoSuchBucket", "RepositoryNotFoundException") or (
        code == "ResourceNotFoundException" and "project" in message.lower()
    ):
        hint = " — run `build-assets bootstrap` first"
    elif code in THROTTLING_CODES:
        hint = " — AWS kept throttling after retries; try again later"
    return f"cannot {action} ({resource}): {code}: {message}{hint}"


def user_error(exc: BaseException, action: str, resource: str) -> UserError:
    """The UserError for an AWS/botocore exception."""
    return UserError(describe_error(exc, action, resource))


@contextmanager
def aws_errors(action: str, resource: str) -> Iterator[None]:
    """Turn botocore errors raised inside the block into a one-line UserError."""
    try:
        yield
    except (
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        TokenRetrievalError,
        EndpointConnectionError,
        NoRegionError,
    ) as exc:
        raise user_error(exc, action, resource) from exc


def bucket_name(session: boto3.Session, env: str, explicit: str | None = None) -> str:
    """Bucket: `explicit` (the `bucket` setting), else build-assets-<acct>-<region>-<env>."""
    if explicit:
        return explicit
    return f"build-assets-{account_id(session)}-{region_of(session)}-{env}"
