"""The Dagster UI as a person uses it: `dagster dev` on 127.0.0.1 against a real monorepo
and the real local stack, driven by Debian's Chromium through Playwright; plus the fast
async launch (`build-assets materialize --async`) executed by the same daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from build_assets.demo import make_demo_repo
from tests.gitutil import ALL_IMAGES, CREATE, DYNAMO, HARMONIZE, prepend

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FN_HARMONIZE = "metadata-harmonizer-dev-harmonize-metadata"
FN_CREATE = "create-labels-dev-create"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    """Poll `check` until it returns something truthy (not a fixed sleep: a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Server:
    """A running `dagster dev` (webserver + daemon)."""

    def __init__(self, port: int, env: dict[str, str], repo: Path) -> None:
        self.port, self.env, self.repo = port, env, repo
        self.url = f"http://127.0.0.1:{port}"

    def gql(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = json.load(resp)
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def run_status(self, run_id: str) -> str:
        data = self.gql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )
        return data["runOrError"].get("status", "")

    def wait_run(self, run_id: str, timeout: float = 180) -> str:
        return wait_for(
            lambda: (s := self.run_status(run_id)) in ("SUCCESS", "FAILURE", "CANCELED") and s,
            timeout,
            f"run {run_id}",
        )

    def reload(self) -> None:
        self.gql(
            "mutation($n: String!) { reloadRepositoryLocation(repositoryLocationName: $n)"
            " { __typename } }",
            {"n": "build_assets.definitions"},
        )


@pytest.fixture(scope="module")
def server(local_stack, tmp_path_factory) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (scripts/setup.sh installs it)")
    work = tmp_path_factory.mktemp("ui")
    repo = make_demo_repo(work / "monorepo")
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {
        **os.environ,
        **local_stack.env(),
        "DAGSTER_HOME": str(home),
        "BUILD_ASSETS_HOME": str(work / "state"),
        "BUILD_ASSETS_REPO": str(repo),
        "BUILD_ASSETS_REGISTRY": f"{local_stack.registry}/ui",
        "BUILD_ASSETS_WEBSERVER": f"127.0.0.1:{port}",
        "MOTO_LAMBDA_STUB_ECR": "TRUE",
    }
    log = open(work / "dagster-dev.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-m",
            "build_assets.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    srv = Server(port, env, repo)
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{srv.url}/server_info", timeout=2).status == 200,
            120,
            "dagster dev to serve",
        )
        yield srv
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")  # the community pop-up on a new profile
    try:
        skip.wait_for(timeout=5000)
        skip.click()
    except Exception:  # noqa: BLE001 - the pop-up does not always show
        pass
    return page


def test_graph_shows_the_whole_cascade(server, browser) -> None:
    nodes = server.gql("{ assetNodes { assetKey { path } dependencyKeys { path } } }")["assetNodes"]
    deps = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }
    assert deps["image/base-receipt-label"] == {"image/base-receipt-dynamo"}
    assert deps["image/base-receipt-agent"] == {"image/base-receipt-label"}
    assert deps[f"image/{HARMONIZE}"] == {"image/base-receipt-agent"}
    assert deps[f"image/{CREATE}"] == {"image/base-receipt-label"}
    assert deps[f"lambda/{FN_HARMONIZE}"] == {f"image/{HARMONIZE}"}
    assert deps[f"lambda/{FN_CREATE}"] == {f"image/{CREATE}"}

    seen: set[str] = set()
    for fn in (FN_HARMONIZE, FN_CREATE):
        page = open_page(
            browser,
            f"{server.url}/assets/lambda/{fn}?view=lineage&lineageScope=upstream&lineageDepth=6",
        )
        for name in [*ALL_IMAGES, FN_HARMONIZE, FN_CREATE]:
            label = name if len(name) <= 24 else name[:10]  # long names are middle-truncated
            if page.get_by_text(label, exact=False).count():
                seen.add(name)
        if fn == FN_HARMONIZE:
            page.wait_for_timeout(500)
            DOCS.mkdir(exist_ok=True)
            page.screenshot(path=str(DOCS / "ui-asset-graph.png"))
        page.close()
    assert seen == {*ALL_IMAGES, FN_HARMONIZE, FN_CREATE}


def test_materialize_from_the_ui_builds_and_succeeds(server, browser) -> None:
    page = open_page(browser, f"{server.url}/assets/image/base-receipt-dynamo")
    button = page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize\s*$"))
    button.first.click()
    runs = lambda: server.gql(  # noqa: E731
        "{ runsOrError(limit: 5) { ... on Runs { results {"
        " runId status assetSelection { path } } } } }"
    )["runsOrError"]["results"]
    run = wait_for(
        lambda: next(
            (
                r
                for r in runs()
                if {"path": ["image", "base-receipt-dynamo"]} in (r["assetSelection"] or [])
            ),
            None,
        ),
        60,
        "the run launched from the UI",
    )
    assert server.wait_run(run["runId"]) == "SUCCESS"
    page.goto(f"{server.url}/runs/{run['runId']}")
    page.get_by_text("Success", exact=False).first.wait_for(timeout=30000)
    page.screenshot(path=str(DOCS / "ui-run.png"))
    mats = server.gql(
        '{ assetNodes(assetKeys: [{path: ["image", "base-receipt-dynamo"]}]) {'
        " assetMaterializations(limit: 1) { runId metadataEntries { label } } } }"
    )["assetNodes"][0]["assetMaterializations"]
    assert mats and mats[0]["runId"] == run["runId"]
    assert {"tag", "digest", "reasons", "version"} <= {
        m["label"] for m in mats[0]["metadataEntries"]
    }


def test_edit_then_reload_marks_the_cascade_stale(server) -> None:
    prepend(server.repo, DYNAMO, "# edited while the UI is open")
    try:
        server.reload()
        stale = wait_for(
            lambda: (
                {
                    "/".join(n["assetKey"]["path"]): n["staleStatus"]
                    for n in server.gql("{ assetNodes { assetKey { path } staleStatus } }")[
                        "assetNodes"
                    ]
                }.get("image/base-receipt-dynamo")
                == "STALE"
                and True
            ),
            60,
            "base-receipt-dynamo to turn stale after the reload",
        )
        assert stale
    finally:
        subprocess.run(["git", "checkout", "--", "."], cwd=server.repo, check=True)


def test_async_launch_returns_at_once_and_the_daemon_runs_it(server) -> None:
    env = {**server.env}
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build_assets",
            "materialize",
            "--async",
            "--json",
            "--select",
            CREATE,
            "base-receipt-label",
            "base-receipt-dynamo",
        ],
        env=env,
        cwd=server.repo,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["assets"]) == {
        f"image/{CREATE}",
        "image/base-receipt-label",
        "image/base-receipt-dynamo",
    }
    print(f"async launch took {took:.2f}s (command), {out['seconds']:.2f}s (submission)")
    assert server.wait_run(out["run_id"]) == "SUCCESS"


def test_async_launch_without_a_webserver_is_one_clear_line(server, tmp_path) -> None:
    env = {**server.env, "BUILD_ASSETS_WEBSERVER": f"127.0.0.1:{_free_port()}"}
    proc = subprocess.run(
        [sys.executable, "-m", "build_assets", "materialize", "--async", "--all"],
        env=env,
        cwd=server.repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "no Dagster webserver" in proc.stderr and "Traceback" not in proc.stderr
