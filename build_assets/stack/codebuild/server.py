"""The local CodeBuild's HTTP server: CodeBuild's JSON 1.1 API on 127.0.0.1.

Requests carry `X-Amz-Target: CodeBuild_20161006.<Operation>`. Builds are ours (StartBuild,
BatchGetBuilds, StopBuild, ListBuildsForProject, ListBuilds); every other operation (projects:
CreateProject, UpdateProject, BatchGetProjects, ListProjects, DeleteProject, ...) is forwarded
unchanged to moto, so `bootstrap` meets the same project API it is tested against.

Local-only knobs (docs/codebuild.md) are read and set with `GET`/`POST /_local/config`:
`provisioning_s`, `minute_s`, `fault_projects`, `throttle` ({operation: next N calls}).

    python -m build_assets.stack.codebuild.server --port P --moto URL --home DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from build_assets.stack.codebuild.record import Knobs, Services
from build_assets.stack.codebuild.runner import Build

TARGET_PREFIX = "CodeBuild_20161006."
JSON = "application/x-amz-json-1.1"
PAGE = 100
TOKEN_TTL_S = 300  # idempotency tokens are honoured for 5 minutes, as CodeBuild does
STOP_WAIT_S = 5.0  # StopBuild answers once the build has ended (or after this long)
OURS = {"StartBuild", "BatchGetBuilds", "StopBuild", "ListBuildsForProject", "ListBuilds"}

log = logging.getLogger("local-codebuild")


class ApiError(Exception):
    """An error answer: HTTP 400 with CodeBuild's `__type` and message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class Service:
    """The builds, the knobs and the moto clients behind the API."""

    def __init__(
        self,
        home: Path,
        moto_url: str,
        region: str,
        docker_host: str | None,
        knobs: Knobs,
    ) -> None:
        self.home = home
        self.moto_url = moto_url.rstrip("/")
        self.region = region
        self.knobs = knobs
        self.url = ""  # set once the server is bound
        self.docker_host = docker_host
        self.builds: dict[str, Build] = {}
        self.order: list[str] = []  # start order
        self.numbers: dict[str, int] = {}
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> (params hash, id, time)
        self.lock = threading.Lock()
        self._account_id = ""
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3})

        def client(name: str) -> Any:
            return session.client(name, endpoint_url=self.moto_url, config=config)

        self.codebuild = client("codebuild")
        self.s3 = session.client(
            "s3",
            endpoint_url=self.moto_url,
            config=config.merge(Config(s3={"addressing_style": "path"})),
        )
        self.ssm, self.secrets, self.logs = client("ssm"), client("secretsmanager"), client("logs")

    # -- operations ---------------------------------------------------------------------------

    def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            left = self.knobs.throttle.get(op, 0)
            if left > 0:
                self.knobs.throttle[op] = left - 1
                self.knobs.throttled[op] = self.knobs.throttled.get(op, 0) + 1
                raise ApiError("ThrottlingException", "Rate exceeded")
        return getattr(self, f"op_{op}")(body)

    def _project(self, name: str) -> dict[str, Any]:
        projects = self.codebuild.batch_get_projects(names=[name]).get("projects", [])
        if not projects:
            raise ApiError(
                "ResourceNotFoundException",
                f"Project cannot be found: arn:aws:codebuild:{self.region}:"
                f"{self._account()}:project/{name}",
            )
        return projects[0]

    def _account(self) -> str:
        if not self._account_id:
            sts = boto3.client(
                "sts",
                endpoint_url=self.moto_url,
                region_name=self.region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            self._account_id = sts.get_caller_identity()["Account"]
        return self._account_id

    def op_StartBuild(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("projectName") or ""
        if not name:
            raise ApiError("InvalidInputException", "projectName is required")
        project = self._project(name)
        token = body.get("idempotencyToken")
        params = {k: v for k, v in body.items() if k != "idempotencyToken"}
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        with self.lock:
            now = time.time()
            self.tokens = {t: v for t, v in self.tokens.items() if now - v[2] < TOKEN_TTL_S}
            if token and token in self.tokens:
                seen, build_id, _ = self.tokens[token]
                if seen != digest:
                    raise ApiError(
                        "IdempotentParameterMismatchException",
                        "idempotency token reused with different parameters",
                    )
                return {"build": self.builds[build_id].to_api()}
            number = self.numbers.get(name, 0) + 1
            self.numbers[name] = number
            build_uuid = str(uuid.uuid4())
            build_id = f"{name}:{build_uuid}"
            arn = project["arn"].replace(":project/", ":build/", 1).rsplit("/", 1)[0]
            build = Build(
                build_id=build_id,
                arn=f"{arn}/{build_id}",
                number=number,
                project=project,
                params=params,
                workdir=self.home / "builds" / build_uuid,
                services=Services(
                    s3=self.s3,
                    ssm=self.ssm,
                    secrets=self.secrets,
                    logs=self.logs,
                    region=self.region,
                    moto_url=self.moto_url,
                    codebuild_url=self.url,
                    docker_host=self.docker_host,
                ),
                knobs=Knobs(
                    self.knobs.provisioning_s,
                    self.knobs.minute_s,
                    set(self.knobs.fault_projects),
                ),
            )
            self.builds[build_id] = build
            self.order.append(build_id)
            if token:
                self.tokens[token] = (digest, build_id, now)
        build.start()
        log.info("started %s", build_id)
        return {"build": build.to_api()}

    def op_BatchGetBuilds(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids") or []
        if not ids or len(ids) > 100:
            raise ApiError("InvalidInputException", "ids: between 1 and 100 build ids")
        found = [self.builds[i].to_api() for i in ids if i in self.builds]
        return {"builds": found, "buildsNotFound": [i for i in ids if i not in self.builds]}

    def op_StopBuild(self, body: dict[str, Any]) -> dict[str, Any]:
        build = self.builds.get(body.get("id") or "")
        if build is None:
            raise ApiError("ResourceNotFoundException", f"Build {body.get('id')} not found")
        build.stop()
        build.wait(STOP_WAIT_S)
        return {"build": build.to_api()}

    def _page(self, ids: list[str], body: dict[str, Any]) -> dict[str, Any]:
        if body.get("sortOrder", "DESCENDING") == "DESCENDING":
            ids = ids[::-1]
        start = int(body.get("nextToken") or 0)
        out: dict[str, Any] = {"ids": ids[start : start + PAGE]}
        if start + PAGE < len(ids):
            out["nextToken"] = str(start + PAGE)
        return out

    def op_ListBuildsForProject(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("projectName") or ""
        self._project(name)
        ids = [i for i in self.order if self.builds[i].project_name == name]
        return self._page(ids, body)

    def op_ListBuilds(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._page(list(self.order), body)

    def shutdown(self) -> None:
        """Stop every build still running (the service is going away: its builds die)."""
        running = [b for b in self.builds.values() if not b.complete]
        for b in running:
            b.stop(message="Build was stopped: the local CodeBuild service stopped")
        for b in running:
            b.wait(10)

    # -- knobs --------------------------------------------------------------------------------

    def configure(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if "provisioning_s" in body:
                self.knobs.provisioning_s = float(body["provisioning_s"])
            if "minute_s" in body:
                self.knobs.minute_s = float(body["minute_s"])
            if "fault_projects" in body:
                self.knobs.fault_projects = set(body["fault_projects"])
            if "throttle" in body:  # new throttles, counted from zero
                self.knobs.throttle = {k: int(v) for k, v in body["throttle"].items()}
                self.knobs.throttled = {}
            return self.knobs.to_json()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Handler(BaseHTTPRequestHandler):
    """JSON 1.1 in, JSON 1.1 out; unknown operations go to moto."""

    server_version = "local-codebuild"
    service: Service  # set on the class by `serve`

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, payload: Any, ctype: str = JSON) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/_local/config"):
            self._send(200, self.service.knobs.to_json(), "application/json")
        else:
            self._send(200, {"service": "local CodeBuild", "moto": self.service.moto_url})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.startswith("/_local/config"):
            try:
                answer = self.service.configure(json.loads(raw or b"{}"))
                self._send(200, answer, "application/json")
            except (ValueError, TypeError, AttributeError) as exc:
                self._send(400, {"message": str(exc)}, "application/json")
            return
        target = self.headers.get("X-Amz-Target", "")
        op = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        if op not in OURS:
            self._forward(raw)
            return
        try:
            body = json.loads(raw or b"{}")
            self._send(200, _jsonable(self.service.call(op, body)))
        except ApiError as exc:
            self._send(exc.status, {"__type": exc.code, "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - answer, do not drop the connection
            log.exception("%s failed", op)
            self._send(500, {"__type": "InternalFailure", "message": str(exc)})

    def _forward(self, raw: bytes) -> None:
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        req = urllib.request.Request(
            self.service.moto_url + self.path, data=raw, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                self._send(resp.status, resp.read(), resp.headers.get("Content-Type", JSON))
        except urllib.error.HTTPError as exc:
            self._send(exc.code, exc.read(), exc.headers.get("Content-Type", JSON))
        except (urllib.error.URLError, OSError) as exc:
            self._send(503, {"__type": "ServiceUnavailable", "message": f"moto: {exc}"})


def serve(service: Service, port: int) -> ThreadingHTTPServer:
    """A bound server for `service` (not yet serving: call serve_forever)."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="local-codebuild", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--moto", required=True, help="moto's endpoint URL")
    p.add_argument("--home", required=True, help="where builds keep their folders")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--docker-host", default=None, help="DOCKER_HOST given to builds")
    p.add_argument("--provisioning", type=float, default=0.0, help="seconds in PROVISIONING")
    p.add_argument("--minute-seconds", type=float, default=60.0, help="seconds per timeout minute")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    knobs = Knobs(provisioning_s=args.provisioning, minute_s=args.minute_seconds)
    service = Service(home, args.moto, args.region, args.docker_host, knobs)
    server = serve(service, args.port)

    def stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving on %s (moto %s)", service.url, service.moto_url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        service.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
