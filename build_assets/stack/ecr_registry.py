"""The local stack's ECR: one address whose registry and ECR API agree.

A streaming HTTP reverse proxy in front of the CNCF `docker-registry` (under `/v2/`) and moto's
ECR API (everything else, e.g. boto3's `POST /` with `X-Amz-Target`). For a repository that
exists in the ECR API (moto; `bootstrap` makes them) it keeps ECR's rules:

- a manifest PUT at a tag that exists in an IMMUTABLE repository is refused as ECR refuses it
  (400 TAG_INVALID, "The image tag 'x' already exists in the 'repo' repository and cannot be
  overwritten because the repository is immutable."), even with the same content, as ECR does;
  the stored digest stays. Pushes of one tag are serialised, so of two racing pushes one wins;
- every manifest the registry accepts is put into the ECR API (`put_image` with the digest the
  registry computed, sha256 of the exact bytes, and the Content-Type as media type), so
  `describe_images` / `batch_get_image` answer what a HEAD on the registry answers;
- a manifest DELETE through the registry is a `batch_delete_image` by digest in the ECR API;
- through the ECR API front, `BatchDeleteImage` is reflected in the registry (a digest left
  without tags is deleted; a removed tag is unlinked from the registry's filesystem storage,
  which distribution 2.8 cannot do over HTTP) and `PutImage` is checked against the registry's
  blobs (`LayersNotFoundException`) and stored there too, with its digest computed as ECR does.

Repositories that the ECR API does not know are proxied untouched (the local backend makes one
by pushing). Blob uploads stream in both directions (never held in memory) and the `Host`
header is forwarded, so the registry's `Location` URLs name this proxy. Run as a stack service:
`python -m build_assets.stack.ecr_registry --listen ... --upstream ... --aws-endpoint ...`.
The ECR API and registry bookkeeping it relies on is `stack.ecr_state`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from build_assets.stack.ecr_state import (
    ACCEPTED_MEDIA_TYPES,
    UPSTREAM_TIMEOUT_S,
    EcrState,
    Upstream,
    immutable_message,
    references,
    sha256_digest,
)

log = logging.getLogger("ecr_registry")

CHUNK = 1024 * 1024
MAX_MANIFEST = 4 * 1024 * 1024  # ECR's limit on a manifest
ECR_TARGET = "AmazonEC2ContainerRegistry_V20150921."
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/?]+)$")


class Handler(BaseHTTPRequestHandler):
    """One client connection: registry calls go upstream, ECR API calls to moto."""

    protocol_version = "HTTP/1.1"
    server: ProxyServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._route()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- routing ----------------------------------------------------------------------------

    def _route(self) -> None:
        try:
            if not self.path.startswith("/v2/") and self.path != "/v2":
                self._ecr_api()
                return
            found = _MANIFEST_PATH.match(self.path.split("?", 1)[0])
            if found and self.command in ("PUT", "DELETE"):
                name, ref = found.group("name"), found.group("ref")
                repo = self.server.ecr.repository(name)
                if repo is not None:
                    if self.command == "PUT":
                        self._put_manifest(name, ref, repo)
                    else:
                        self._delete_manifest(name, ref)
                    return
            self._stream(self.server.upstream.connect())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - one request fails, the proxy stays up
            log.exception("%s %s failed", self.command, self.path)
            self._registry_error(500, "UNKNOWN", f"local ECR proxy: {exc}")

    # -- plain streaming --------------------------------------------------------------------

    def _forward_headers(self, conn: http.client.HTTPConnection, body_length: int | None) -> None:
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in _HOP and key.lower() != "content-length":
                conn.putheader(key, value)
        if body_length is not None:
            conn.putheader("Content-Length", str(body_length))
        elif self._chunked_request():
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()

    def _chunked_request(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _stream(self, conn: http.client.HTTPConnection) -> None:
        """Forward the request as it arrives and the response as it comes back."""
        try:
            length = self.headers.get("Content-Length")
            if length is not None:
                remaining = int(length)
                self._forward_headers(conn, remaining)
                while remaining > 0:
                    data = self.rfile.read(min(CHUNK, remaining))
                    if not data:
                        raise ConnectionResetError("client closed the request body early")
                    conn.send(data)
                    remaining -= len(data)
            elif self._chunked_request():
                self._forward_headers(conn, None)
                for data in self._read_chunks():
                    conn.send(b"%x\r\n%s\r\n" % (len(data), data))
                conn.send(b"0\r\n\r\n")
            else:
                self._forward_headers(conn, None)
            self._relay(conn.getresponse())
        finally:
            conn.close()

    def _read_chunks(self):
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining > 0:
                data = self.rfile.read(min(CHUNK, remaining))
                if not data:
                    raise ConnectionResetError("client closed a chunked body early")
                remaining -= len(data)
                yield data
            self.rfile.readline(3)  # the CRLF after the chunk

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        self.send_response_only(resp.status, resp.reason)
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        bodyless = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        rechunk = not has_length and not bodyless
        for key, value in headers:
            self.send_header(key, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        if resp.will_close and not has_length and not rechunk:
            self.close_connection = True
        self.end_headers()
        if bodyless:
            return
        while True:
            data = resp.read1(CHUNK) if rechunk else resp.read(CHUNK)
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response_only(status)
        for key, value in headers.items():
            if key.lower() not in _HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _registry_error(self, status: int, code: str, message: str, detail: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if detail is not None:
            error["detail"] = detail
        body = json.dumps({"errors": [error]}).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Docker-Distribution-Api-Version": "registry/2.0",
        }
        self._reply(status, headers, body)

    def _read_body(self, limit: int) -> bytes | None:
        """The whole (small) request body; None when it is larger than `limit`."""
        if self._chunked_request():
            data = b"".join(self._read_chunks())
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return data if len(data) <= limit else None

    # -- manifests of ECR repositories ------------------------------------------------------

    def _put_manifest(self, name: str, ref: str, repo: dict[str, Any]) -> None:
        body = self._read_body(MAX_MANIFEST)
        if body is None:
            self._registry_error(400, "MANIFEST_INVALID", "manifest larger than 4 MiB")
            return
        media_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if not media_type:
            media_type = json.loads(body or b"{}").get("mediaType", "")
        digest = sha256_digest(body)
        tag = None if ref.startswith("sha256:") else ref
        immutable = str(repo.get("imageTagMutability", "")).startswith("IMMUTABLE")
        ecr = self.server.ecr
        with ecr.lock(name, tag or digest):
            if tag is not None and immutable and ecr.tag_digest(name, tag) is not None:
                log.info("refused %s:%s: the tag exists and the repository is immutable", name, tag)
                detail = {"tag": tag, "repository": name}
                self._registry_error(400, "TAG_INVALID", immutable_message(tag, name), detail)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            status, got, answer = self.server.upstream.call("PUT", self.path, body, headers)
            if status == 201:
                try:
                    ecr.put(name, body, media_type, digest, tag)
                except ClientError as exc:
                    if (
                        exc.response.get("Error", {}).get("Code")
                        != "ImageTagAlreadyExistsException"
                    ):
                        raise
                    # put through the ECR API meanwhile, not through here: ECR's image stays
                    self._restore(name, tag or digest)
                    detail = {"tag": tag, "repository": name}
                    self._registry_error(400, "TAG_INVALID", immutable_message(ref, name), detail)
                    return
        self._reply(status, got, answer)

    def _restore(self, name: str, tag: str) -> None:
        """Put the ECR API's manifest for `tag` back into the registry."""
        [image] = self.server.ecr.client.batch_get_image(
            repositoryName=name,
            imageIds=[{"imageTag": tag}],
            acceptedMediaTypes=ACCEPTED_MEDIA_TYPES,
        )["images"]
        headers = {"Content-Type": image["imageManifestMediaType"]}
        body = image["imageManifest"].encode("utf-8")
        self.server.upstream.call("PUT", f"/v2/{name}/manifests/{tag}", body, headers)

    def _delete_manifest(self, name: str, ref: str) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        status, got, answer = self.server.upstream.call("DELETE", self.path, None, headers)
        if status == 202 and ref.startswith("sha256:"):
            self.server.ecr.client.batch_delete_image(
                repositoryName=name, imageIds=[{"imageDigest": ref}]
            )
        self._reply(status, got, answer)

    # -- the ECR API front ------------------------------------------------------------------

    def _ecr_api(self) -> None:
        target = self.headers.get("X-Amz-Target") or ""
        action = target[len(ECR_TARGET) :] if target.startswith(ECR_TARGET) else ""
        if action not in ("PutImage", "BatchDeleteImage"):
            if action in ("CreateRepository", "DeleteRepository", "PutImageTagMutability"):
                self.server.ecr.forget()
            self._stream(self.server.moto_connection())
            return
        body = self._read_body(2 * MAX_MANIFEST) or b"{}"
        params = json.loads(body)
        if action == "PutImage":
            refused = self._check_put_image(params)
            if refused:
                self._aws_error(400, *refused)
                return
            body = json.dumps(params).encode()
        status, headers, answer = self._moto_call(body)
        if status == 200:
            if action == "PutImage":
                self._reflect_put_image(params)
            else:
                self._reflect_delete(params["repositoryName"], json.loads(answer))
        self._reply(status, headers, answer)

    def _moto_call(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = self.server.moto_connection()
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            headers["Host"] = f"{conn.host}:{conn.port}"
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def _aws_error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"__type": code, "message": message}).encode()
        self._reply(status, {"Content-Type": "application/x-amz-json-1.1"}, body)

    def _check_put_image(self, params: dict[str, Any]) -> tuple[str, str] | None:
        """Refuse a PutImage whose blobs the registry lacks; give it ECR's digest."""
        name = params.get("repositoryName", "")
        text = params.get("imageManifest") or ""
        digest = sha256_digest(text.encode("utf-8"))
        if params.get("imageDigest") and params["imageDigest"] != digest:
            return "InvalidParameterException", f"imageDigest is not the manifest's ({digest})"
        params["imageDigest"] = digest
        try:
            manifest = json.loads(text)
        except ValueError:
            return "InvalidParameterException", "Invalid parameter at 'ImageManifest': not JSON"
        params.setdefault("imageManifestMediaType", manifest.get("mediaType", ""))
        upstream = self.server.upstream
        missing = [d for kind, d in references(manifest) if not upstream.exists(name, kind, d)]
        if missing:
            code = "ReferencedImagesNotFoundException" if "manifests" in manifest else None
            return (
                code or "LayersNotFoundException",
                f"The image manifest of '{name}' references {', '.join(missing)},"
                " which the registry does not have",
            )
        return None

    def _reflect_put_image(self, params: dict[str, Any]) -> None:
        name = params["repositoryName"]
        body = params["imageManifest"].encode("utf-8")
        ref = params.get("imageTag") or params["imageDigest"]
        headers = {"Content-Type": params["imageManifestMediaType"]}
        status, _, answer = self.server.upstream.call(
            "PUT", f"/v2/{name}/manifests/{ref}", body, headers
        )
        if status != 201:
            log.error("registry refused %s:%s from PutImage: %s %s", name, ref, status, answer)

    def _reflect_delete(self, name: str, answer: dict[str, Any]) -> None:
        ecr, upstream = self.server.ecr, self.server.upstream
        for ident in answer.get("imageIds") or []:
            digest, tag = ident.get("imageDigest"), ident.get("imageTag")
            if not digest:
                continue
            left = ecr.image_tags(name, digest)
            if left is None:
                upstream.call("DELETE", f"/v2/{name}/manifests/{digest}")
            elif tag:
                upstream.untag(name, tag, digest)


class ProxyServer(ThreadingHTTPServer):
    """The listening proxy; shared state for its handler threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, listen: tuple[str, int], upstream: Upstream, moto: str, ecr: EcrState):
        super().__init__(listen, Handler)
        self.upstream = upstream
        self.ecr = ecr
        hostport = moto.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        self._moto = (host, int(port))

    def moto_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self._moto, timeout=UPSTREAM_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_assets.stack.ecr_registry")
    p.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    p.add_argument("--upstream", required=True, help="the CNCF registry, 127.0.0.1:PORT")
    p.add_argument("--aws-endpoint", required=True, help="moto, http://127.0.0.1:PORT")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--data-root", default=None, help="the registry's filesystem storage")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    upstream = Upstream(args.upstream, Path(args.data_root) if args.data_root else None)
    server = ProxyServer(
        (host, int(port)), upstream, args.aws_endpoint, EcrState(args.aws_endpoint, args.region)
    )
    log.info("ECR on %s: registry %s, ECR API %s", args.listen, args.upstream, args.aws_endpoint)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
