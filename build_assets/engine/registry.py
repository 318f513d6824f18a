"""A tiny client for the OCI distribution HTTP API (the local registry, or any plain registry).

Only what build-assets needs: does a tag exist and with which digest, which tags a repository
has, reading and writing a manifest or a blob (the provenance artifact, `engine.provenance`) and
deleting a manifest (`gc`). Plain HTTP for loopback hosts, HTTPS otherwise; ECR hosts get a
Basic token from `ecr:GetAuthorizationToken`; a registry that challenges for a Bearer token
(Docker Hub, public ECR) gets the anonymous pull token of its token service. Uses only
`urllib` (and boto3 for ECR's token).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from build_assets.core.mediatypes import MANIFEST_TYPES
from build_assets.errors import UserError
from build_assets.settings import ENV_REGISTRY

ACCEPT = ", ".join(MANIFEST_TYPES)
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
DEFAULT_TIMEOUT = 10.0


class RegistryError(UserError):
    """The registry cannot be reached or answered something unexpected."""


class TagExistsError(RegistryError):
    """The registry refused to move a tag: it exists in an immutable repository (ECR's
    TAG_INVALID, also the local stack's for repositories of its ECR API)."""


class RegistryUnreachable(RegistryError):
    """Nothing answers at the registry's address (refused, timed out, unknown host)."""


@dataclass(frozen=True)
class RepoRef:
    """A repository split into registry host and repository name."""

    host: str  # "127.0.0.1:5000", "123.dkr.ecr.us-east-1.amazonaws.com"
    name: str  # "team/image"

    @property
    def base_url(self) -> str:
        hostname = self.host.rsplit(":", 1)[0] if not self.host.endswith("]") else self.host
        scheme = "http" if hostname in _LOOPBACK or hostname.startswith("127.") else "https"
        return f"{scheme}://{self.host}/v2/{self.name}"


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part.startswith("[")


def parse_repository(repository: str, registry: str | None = None) -> RepoRef:
    """Split "host[:port]/name" (or a bare "name" + `registry`/BUILD_ASSETS_REGISTRY).

    A trailing ":tag" or "@digest" is ignored.
    """
    repo = repository.strip()
    for scheme in ("http://", "https://"):
        if repo.startswith(scheme):
            repo = repo[len(scheme) :]
    repo = repo.split("@", 1)[0]
    head, _, rest = repo.partition("/")
    if rest and _looks_like_host(head):
        host, name = head, rest
    else:
        host = (registry or "").strip().rstrip("/")
        if not host:
            raise RegistryError(
                f"no registry host in {repository!r}: set {ENV_REGISTRY} (e.g. 127.0.0.1:5000)"
            )
        if "/" in host:  # a registry given with a prefix: "host/prefix"
            host, _, prefix = host.partition("/")
            repo = f"{prefix}/{repo}"
        name = repo
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # name:tag
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if not name:
        raise RegistryError(f"no repository name in {repository!r}")
    return RepoRef(host=host, name=name)


_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


def is_ecr(host: str) -> bool:
    """True for an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com)."""
    return bool(_ECR_HOST.match(host))


@functools.lru_cache(maxsize=8)
def _ecr_authorization(host: str) -> str:
    """'Basic <token>' for an ECR host (valid 12 hours; one per process is enough)."""
    from build_assets.aws.clients import make_client

    region = host.split(".")[3]
    data = make_client("ecr", region_name=region).get_authorization_token()
    token = data["authorizationData"][0]["authorizationToken"]
    base64.b64decode(token)  # fails loudly on a malformed answer
    return f"Basic {token}"


def _request(
    method: str,
    url: str,
    *,
    accept: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    data: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": accept, "Content-Type": content_type}
    host = urllib.parse.urlsplit(url).netloc
    if is_ecr(host):
        headers["Authorization"] = _ecr_authorization(host)
    repo_key = _repository_key(url)
    known = _TOKEN_URLS.get(repo_key)  # this repository's token service, met before
    token = _cached_token(known) if known else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, got, body = _send(method, url, headers, data, timeout)
    challenge = {k.lower(): v for k, v in got.items()}.get("www-authenticate", "")
    if status == 401 and challenge.lower().startswith("bearer") and not is_ecr(host):
        if known:
            _TOKENS.pop(known, None)  # refused (revoked early?): one fresh token, once
        fresh = _bearer_token(challenge, timeout, repo_key)
        if fresh and fresh != token:
            headers["Authorization"] = f"Bearer {fresh}"
            status, got, body = _send(method, url, headers, data, timeout)
    return status, got, body


_REPOSITORY_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


def _repository_key(url: str) -> str:
    """'host/name' of a distribution API URL (the unit a pull token is scoped to)."""
    parts = urllib.parse.urlsplit(url)
    found = _REPOSITORY_PATH.match(parts.path)
    return f"{parts.netloc}/{found.group(1) if found else ''}"


def _send(
    method: str, url: str, headers: dict[str, str | None], data: bytes | None, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, data=data)
    for name, value in headers.items():
        if value:
            req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        body = e.read() if method != "HEAD" else b""
        return e.code, dict(e.headers.items()) if e.headers else {}, body
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        host = urllib.parse.urlsplit(url).netloc
        raise RegistryUnreachable(f"registry {host} not reachable: {reason}") from None


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TOKENS: dict[str, tuple[str, float]] = {}  # token URL -> (token, expiry on the monotonic clock)
_TOKEN_URLS: dict[str, str] = {}  # 'host/name' -> the token URL its challenge named


def _cached_token(token_url: str) -> str | None:
    cached = _TOKENS.get(token_url)
    return cached[0] if cached and cached[1] > time.monotonic() else None


def _bearer_token(challenge: str, timeout: float, repo_key: str) -> str | None:
    """An anonymous pull token for a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
    challenge (the distribution token flow of Docker Hub, public ECR, GHCR …), cached until it
    expires; None when the token service refuses anonymous access."""
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    realm = params.pop("realm", "")
    if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
        return None
    query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
    token_url = f"{realm}?{query}" if query else realm
    _TOKEN_URLS[repo_key] = token_url
    cached = _cached_token(token_url)
    if cached:
        return cached
    status, _, body = _send("GET", token_url, {"Accept": "application/json"}, None, timeout)
    if status != 200:
        return None
    try:
        doc = json.loads(body)
        token = doc.get("token") or doc.get("access_token")
        lifetime = float(doc.get("expires_in") or 60)
    except (ValueError, AttributeError, TypeError):
        return None
    if not isinstance(token, str) or not token:
        return None
    _TOKENS[token_url] = (token, time.monotonic() + max(0.0, lifetime - 10))
    return token


def _check(status: int, url: str) -> None:
    if status in (401, 403):
        raise RegistryError(f"registry refused access ({status}) to {url}: log in first")
    if status >= 400:
        raise RegistryError(f"registry answered {status} for {url}")


def manifest_digest(
    repository: str, tag: str, *, registry: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str | None:
    """Digest (sha256:...) of the manifest `repository:tag`, or None if the tag is absent."""
    found = _manifest("HEAD", repository, tag, registry, timeout)
    if found is None:
        return None
    digest = found[0].get("docker-content-digest")
    if not digest:
        # Some registries omit the header on HEAD: fall back to GET and hash the body.
        got = _manifest("GET", repository, tag, registry, timeout)
        if got is None:  # gone between the two requests: as before, the GET's 404 is an error
            url = f"{parse_repository(repository, registry).base_url}/manifests/{tag}"
            _check(404, url)
        digest = "sha256:" + hashlib.sha256(got[1]).hexdigest()
    return digest


def _manifest(
    method: str, repository: str, reference: str, registry: str | None, timeout: float
) -> tuple[dict[str, str], bytes] | None:
    """(lower-cased headers, body) of a HEAD or GET of a manifest; None when it is absent."""
    ref = parse_repository(repository, registry)
    url = f"{ref.base_url}/manifests/{reference}"
    status, headers, body = _request(method, url, accept=ACCEPT, timeout=timeout)
    if status == 404:
        return None
    _check(status, url)
    return {k.lower(): v for k, v in headers.items()}, body


def manifest_media_type(
    repository: str,
    reference: str,
    *,
    registry: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str | None:
    """Media type (the Content-Type of a HEAD) of a tag's or digest's manifest; None if absent."""
    found = _manifest("HEAD", repository, reference, registry, timeout)
    if found is None:
        return None
    return found[0].get("content-type", "").split(";", 1)[0].strip() or None


def get_manifest(
    repository: str,
    reference: str,
    *,
    registry: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict | None:
    """The manifest (parsed JSON) for a tag or digest, or None if absent."""
    found = _manifest("GET", repository, reference, registry, timeout)
    return None if found is None else json.loads(found[1])


def list_tags(
    repository: str, *, registry: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """All tags of a repository (sorted); [] when the repository does not exist."""
    ref = parse_repository(repository, registry)
    url: str | None = f"{ref.base_url}/tags/list?n=1000"
    tags: list[str] = []
    while url:
        status, headers, body = _request("GET", url, timeout=timeout)
        if status == 404:
            return []
        _check(status, url)
        tags.extend(json.loads(body).get("tags") or [])
        link = {k.lower(): v for k, v in headers.items()}.get("link", "")
        # Link: </v2/name/tags/list?last=x&n=1000>; rel="next"
        url = None
        if 'rel="next"' in link and "<" in link:
            path = link[link.index("<") + 1 : link.index(">")]
            url = urllib.parse.urljoin(ref.base_url, path)
    return sorted(set(tags))


def get_blob(
    repository: str, digest: str, *, registry: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> bytes | None:
    """The bytes of a blob (checked against `digest`), or None if absent."""
    ref = parse_repository(repository, registry)
    url = f"{ref.base_url}/blobs/{digest}"
    status, _, body = _request("GET", url, timeout=timeout)
    if status == 404:
        return None
    _check(status, url)
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise RegistryError(f"registry returned a blob that does not match {digest} at {url}")
    return body


def put_blob(
    repository: str, data: bytes, *, registry: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Upload `data` as a blob (skipped when present); its digest."""
    ref = parse_repository(repository, registry)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = _request("HEAD", f"{ref.base_url}/blobs/{digest}", timeout=timeout)
    if status == 200:
        return digest
    url = f"{ref.base_url}/blobs/uploads/"
    status, headers, _ = _request("POST", url, data=b"", timeout=timeout)
    _check(status, url)
    location = {k.lower(): v for k, v in headers.items()}.get("location", "")
    upload = urllib.parse.urljoin(ref.base_url + "/", location)
    sep = "&" if "?" in upload else "?"
    put = f"{upload}{sep}digest={urllib.parse.quote(digest)}"
    status, _, _ = _request(
        "PUT", put, data=data, content_type="application/octet-stream", timeout=timeout
    )
    _check(status, url)
    return digest


def put_manifest(
    repository: str,
    reference: str,
    body: bytes,
    media_type: str,
    *,
    registry: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """PUT a manifest at a tag (or its digest); the manifest's digest."""
    ref = parse_repository(repository, registry)
    url = f"{ref.base_url}/manifests/{reference}"
    status, _, answer = _request("PUT", url, data=body, content_type=media_type, timeout=timeout)
    if status == 400 and b'"TAG_INVALID"' in answer:
        raise TagExistsError(
            f"registry refused to overwrite {ref.name}:{reference}: {_said(answer)}"
        )
    _check(status, url)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _said(answer: bytes) -> str:
    """The first error message of a distribution error body."""
    try:
        return str(json.loads(answer)["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return answer.decode(errors="replace")[:200]


def delete_manifest(
    repository: str, digest: str, *, registry: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Delete a manifest by digest (and so every tag on it); False when it was not there."""
    ref = parse_repository(repository, registry)
    url = f"{ref.base_url}/manifests/{digest}"
    status, _, _ = _request("DELETE", url, timeout=timeout)
    if status == 404:
        return False
    if status == 405:
        raise RegistryError(f"registry {ref.host} does not allow deletes (storage.delete)")
    _check(status, url)
    return True


def ping(host: str, *, timeout: float = 2.0) -> bool:
    """True when `host` answers the distribution API base endpoint (GET /v2/)."""
    try:
        url = RepoRef(host, "x").base_url[: -len("x")]
        status, _, _ = _request("GET", url, timeout=timeout)
    except RegistryError:
        return False
    return status in (200, 401)
