"""Registries that challenge for a Bearer token (Docker Hub, public ECR, GHCR): `bases update`
and every registry look-up get the anonymous pull token of the registry's token service.

Docker Hub is not reachable here, so its front is a stub (a token service plus a gate that
demands the token), proxying every authorised request to the real local registry: the
manifests and digests are the registry's own.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from build_assets.core.lock import HEADER, LOCK_FILE
from build_assets.engine import registry as reg
from tests.core.test_lock import adopt_repo, cli, push_scratch

pytestmark = pytest.mark.stack


class TokenGate(ThreadingHTTPServer):
    """`/token` hands out a pull token (or refuses, `anonymous=False`); `/v2/...` answers 401
    with a Bearer challenge unless the token comes with the request, then proxies upstream."""

    def __init__(self, upstream: str, anonymous: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream, self.anonymous = upstream, anonymous
        self.token = "pull-ok"  # what /token hands out and /v2 accepts
        self.scopes: list[str] = []  # scopes asked at /token
        self.refused = 0  # /v2 requests answered 401

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: TokenGate

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            query = urllib.parse.parse_qs(url.query)
            self.server.scopes.extend(query.get("scope", []))
            if not self.server.anonymous:
                return self._reply(401, b'{"details": "incorrect username or password"}')
            body = f'{{"token": "{self.server.token}", "expires_in": 300}}'.encode()
            return self._reply(200, body)
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self.server.refused += 1
            name = url.path.split("/v2/", 1)[-1].rsplit("/manifests/", 1)[0]
            challenge = (
                f'Bearer realm="http://{self.server.host}/token",service="stub.registry",'
                f'scope="repository:{name}:pull"'
            )
            return self._reply(401, b"{}", {"WWW-Authenticate": challenge})
        req = urllib.request.Request(
            f"http://{self.server.upstream}{self.path}",
            method=self.command,
            headers={"Accept": self.headers.get("Accept", "*/*")},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, headers, body = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, dict(e.headers.items()), e.read()
        keep = ("Content-Type", "Docker-Content-Digest")
        self._reply(status, body, {k: v for k, v in headers.items() if k in keep})

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _serve(gate: TokenGate) -> Iterator[TokenGate]:
    thread = threading.Thread(target=gate.serve_forever, daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        gate.shutdown()
        gate.server_close()


@pytest.fixture
def gate(stack_env) -> Iterator[TokenGate]:
    yield from _serve(TokenGate(stack_env.registry))


def test_bases_update_pins_a_base_behind_a_token_service(stack_env, gate, tmp_path: Path):
    ns = f"hub{uuid.uuid4().hex[:8]}"
    digest = push_scratch(stack_env.registry, f"{ns}/python", "3.12", "3.12.0")
    upstream = f"{gate.host}/{ns}/python:3.12"
    repo = adopt_repo(tmp_path, upstream)

    out = cli(repo, "bases", "update")

    assert out.returncode == 0, out.stderr
    assert (repo / LOCK_FILE).read_text() == f"{HEADER}bases:\n  {upstream}: {digest}\n"
    assert gate.scopes and set(gate.scopes) == {f"repository:{ns}/python:pull"}
    # a look-up after that reuses the token until it expires: no second challenge
    refused = gate.refused
    assert reg.manifest_digest(f"{gate.host}/{ns}/python", "3.12") == digest
    assert reg.manifest_digest(f"{gate.host}/{ns}/python", "3.12") == digest
    assert gate.refused - refused == 1
    # a token the service stops honouring before it expires: one fresh token, then success
    gate.token = "rotated"
    assert reg.manifest_digest(f"{gate.host}/{ns}/python", "3.12") == digest


def test_a_token_service_that_refuses_anonymous_pulls_is_one_line(stack_env, tmp_path: Path):
    for gate in _serve(TokenGate(stack_env.registry, anonymous=False)):
        upstream = f"{gate.host}/private/python:3.12"
        repo = adopt_repo(tmp_path, upstream)
        out = cli(repo, "bases", "update")
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert f"{upstream}: registry {gate.host} refused anonymous access" in out.stderr
        assert "pin its digest in bases.lock by hand" in out.stderr
        assert not (repo / LOCK_FILE).exists()  # nothing half-written
