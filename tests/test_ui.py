"""The Dagster UI as a person uses it: `dagster dev` on 127.0.0.1 against a copy of
examples/receipts and the real local stack (dockerd + registry + moto), driven by Debian's
Chromium through Playwright.

The tests run in order and share one `dagster dev` (webserver + daemon + code server):

1. the global asset lineage shows every image and Lambda function node and the edges of the
   cascade (dynamo -> label -> agent -> harmonize image -> its function; label -> create
   image -> its function), read from the rendered SVG and cross-checked with GraphQL;
2. "Materialize all" clicked on that page builds every image, creates both functions on moto;
3. an edit to receipt_dynamo (in every base) + "Reload definitions" marks the whole cascade
   STALE (cause CODE) at once, and every node of the graph shows "Unsynced";
4. clicking the stale `base-receipt-dynamo` node and "Materialize selected" rebuilds it, and
   the plan's reason (`receipt_dynamo/client.py modified`) is in its materialization.

Screenshots: docs/ui-asset-graph.png (the stale cascade) and docs/ui-run.png (the run).
"""

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

from build_assets.cli.demo import make_demo_repo
from build_assets.stack.local import StackInfo
from tests.gitutil import (
    ALL_IMAGES,
    CREATE,
    DYNAMO,
    HARMONIZE,
    LAMBDA_CREATE,
    LAMBDA_HARMONIZE,
    prepend,
)

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCATION = "build_assets"  # the location name in workspace.yaml
DYNAMO_KEY = "image/base-receipt-dynamo"
IMAGE_KEYS = {f"image/{name}" for name in ALL_IMAGES}
LAMBDA_KEYS = {f"lambda/{LAMBDA_HARMONIZE}", f"lambda/{LAMBDA_CREATE}"}
ALL_KEYS = IMAGE_KEYS | LAMBDA_KEYS
CASCADE = {  # (upstream, downstream) edges of the example monorepo
    ("image/base-receipt-dynamo", "image/base-receipt-label"),
    ("image/base-receipt-label", "image/base-receipt-agent"),
    ("image/base-receipt-agent", f"image/{HARMONIZE}"),
    ("image/base-receipt-label", f"image/{CREATE}"),
    (f"image/{HARMONIZE}", f"lambda/{LAMBDA_HARMONIZE}"),
    (f"image/{CREATE}", f"lambda/{LAMBDA_CREATE}"),
}
# Wide enough that Dagster draws full asset nodes (name, status rows) rather than the
# zoomed-out "minimal" boxes whose labels are middle-truncated.
VIEWPORT = {"width": 1920, "height": 1000}
RUN_TIMEOUT = 240  # a loaded 2-core machine: run process + step process + docker builds
T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    """Poll `check` until it returns something truthy, up to a deadline (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:  # the server is not answering yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _key(path: list[str]) -> str:
    return "/".join(path)


class Dagster:
    """A running `dagster dev` and its GraphQL API."""

    def __init__(self, url: str, repo: Path, log: Path) -> None:
        self.url, self.repo, self.log = url, repo, log

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

    def assets(self) -> dict[str, dict]:
        """Every asset node: deps, code version, staleness and its latest materialization."""
        nodes = self.gql(
            "{ assetNodes { assetKey { path } dependencyKeys { path } opVersion staleStatus"
            " staleCauses { key { path } category reason }"
            " assetMaterializations(limit: 1) { runId metadataEntries { label"
            " ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }"
            " ... on BoolMetadataEntry { boolValue } } } } }"
        )["assetNodes"]
        return {_key(n["assetKey"]["path"]): n for n in nodes}

    def run_ids(self) -> set[str]:
        runs = self.gql("{ runsOrError(limit: 50) { ... on Runs { results { runId } } } }")
        return {r["runId"] for r in runs["runsOrError"]["results"]}

    def run(self, run_id: str) -> dict:
        return self.gql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { runId status"
            " assetSelection { path } } } }",
            {"id": run_id},
        )["runOrError"]

    def wait_run(self, run_id: str) -> dict:
        return wait_for(
            lambda: (r := self.run(run_id))["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r,
            RUN_TIMEOUT,
            f"run {run_id} to finish (dagster dev log: {self.log})",
        )


def _meta(node: dict) -> dict[str, object]:
    """label -> value of an asset's latest materialization."""
    (mat,) = node["assetMaterializations"]
    return {
        e["label"]: e.get("text", e.get("mdStr", e.get("boolValue")))
        for e in mat["metadataEntries"]
    }


def _default_signals() -> None:
    """In the child before exec: SIGTERM stops it even when this process was started with
    SIGTERM ignored (as some job runners do), which `dagster dev` would inherit."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop `dagster dev` and everything it started (webserver, daemon, code servers, run
    workers: one process group): SIGTERM, then SIGKILL what is left after a grace period."""

    def group_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            wait_for(group_gone, 15, "dagster dev's process group to exit", every=0.2)
            break
        except (subprocess.TimeoutExpired, AssertionError):
            continue
    _log("dagster dev stopped")


@pytest.fixture(scope="module")
def dagster(local_stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dagster]:
    """`dagster dev -w workspace.yaml` on a free port of 127.0.0.1, against a demo monorepo."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/setup.sh installs it (apt-get install chromium)"
        )
    work = tmp_path_factory.mktemp("ui")
    repo = make_demo_repo(work / "monorepo")
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {
        **os.environ,
        **local_stack.env(),  # DOCKER_HOST, registry, AWS_* of moto: what `stack_env` sets
        "DAGSTER_HOME": str(home),
        "BUILD_ASSETS_HOME": str(work / "state"),
        "BUILD_ASSETS_REPO": str(repo),
        "BUILD_ASSETS_REGISTRY": f"{local_stack.registry}/ui",
        "BUILD_ASSETS_WEBSERVER": f"127.0.0.1:{port}",
    }
    env.pop("BUILD_ASSETS_REF", None)
    log_path = work / "dagster-dev.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in teardown
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml")]
    proc = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: webserver, daemon, code server, runs
        preexec_fn=_default_signals,
    )
    server = Dagster(f"http://127.0.0.1:{port}", repo, log_path)
    try:
        _log("dagster dev starting")

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dagster dev exited early: {log_path.read_text()[-2000:]}")
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=2) as resp:
                return resp.status == 200

        wait_for(ready, 180, f"dagster dev on {server.url}")
        locations = server.gql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name"
            " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )["workspaceOrError"]["locationEntries"]
        assert [(loc["name"], loc["locationOrLoadError"]["__typename"]) for loc in locations] == [
            (LOCATION, "RepositoryLocation")
        ], locations
        server.gql("mutation { setNuxSeen }")  # the "Join the community" pop-up of a new instance
        _log("dagster dev serving")
        yield server
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def browser(dagster: Dagster):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile per test: no remembered graph layout or expanded groups."""
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        ctx.close()


# --- the rendered asset graph -----------------------------------------------------------------

_GRAPH_JS = """() => {
  const svgs = [...document.querySelectorAll('svg')];
  const svg = svgs.sort((a, b) => b.querySelectorAll('foreignObject').length
                                 - a.querySelectorAll('foreignObject').length)[0];
  if (!svg) return {nodes: [], edges: []};
  const nodes = [];
  for (const f of svg.querySelectorAll('foreignObject')) {
    if ((f.getAttribute('class') || '').includes('group')) continue;
    const name = f.querySelector('[class*="assetName"] [data-tooltip]')
              || f.querySelector('[data-tooltip]');
    if (!name) continue;
    nodes.push({name: name.getAttribute('data-tooltip'), label: name.textContent,
                x: +f.getAttribute('x'), y: +f.getAttribute('y'),
                w: +f.getAttribute('width'), h: +f.getAttribute('height'),
                text: f.textContent});
  }
  const edges = [...svg.querySelectorAll('path[marker-end]')].map(p => p.getAttribute('d'));
  return {nodes, edges};
}"""


def open_graph(page, dagster: Dagster) -> dict:
    """The global asset lineage page with every group expanded (as ⌥E does), once drawn."""
    page.goto(f"{dagster.url}/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()

    def drawn() -> str | None:
        if len(page.evaluate(_GRAPH_JS)["nodes"]) >= len(ALL_KEYS):
            return "expanded"
        if page.locator('svg [aria-label="unfold_more"]').count():
            return "collapsed"
        return None

    if wait_for(drawn, 60, "the asset graph to be drawn", every=0.2) == "collapsed":
        page.keyboard.press("Alt+KeyE")  # "Expand all groups" (a fresh profile: all collapsed)

    def complete() -> dict | None:
        g = page.evaluate(_GRAPH_JS)
        return g if len(g["nodes"]) >= len(ALL_KEYS) and len(g["edges"]) >= len(CASCADE) else None

    return wait_for(complete, 60, "every node and edge of the global asset lineage", every=0.2)


def _edges(graph: dict) -> set[tuple[str, str]]:
    """(upstream, downstream) names of the drawn edges, from the SVG geometry: an edge starts
    on the right side of its upstream node and its arrow ends at the left of the downstream."""
    nodes = graph["nodes"]

    def at(x: float, y: float, side: str) -> str | None:
        for n in nodes:
            edge_x = n["x"] + n["w"] if side == "right" else n["x"]
            if abs(edge_x - x) <= 15 and n["y"] <= y <= n["y"] + n["h"]:
                return n["name"]
        return None

    out = set()
    for d in graph["edges"]:
        points = [tuple(map(float, p)) for p in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]
        if len(points) < 2:
            continue
        out.add((at(*points[0], "right"), at(*points[-1], "left")))
    return out


def _full_key(name: str, keys: set[str]) -> str:
    (key,) = [k for k in keys if k.endswith("/" + name)]
    return key


def launch_from_page(page, dagster: Dagster, button: str) -> dict:
    """Click a materialize button of the page; the run the UI launched (by its toast)."""
    before = dagster.run_ids()
    page.get_by_role("button", name=button).click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first
    toast.wait_for(timeout=60_000)
    prefix = re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)
    new = wait_for(
        lambda: [r for r in dagster.run_ids() - before if r.startswith(prefix)],
        30,
        f"run {prefix} in the runs list",
    )
    assert len(dagster.run_ids() - before) == 1, "one click, one run"
    _log(f"'{button}' launched run {new[0]}")
    return dagster.run(new[0])


# --- the tests, in order ----------------------------------------------------------------------


def test_global_graph_shows_every_image_and_function_and_the_cascade(page, dagster) -> None:
    assets = dagster.assets()
    assert set(assets) == ALL_KEYS
    graphql_edges = {(_key(d["path"]), k) for k, n in assets.items() for d in n["dependencyKeys"]}
    assert graphql_edges == CASCADE
    for node in assets.values():
        assert node["staleStatus"] == "MISSING" and node["assetMaterializations"] == []

    graph = open_graph(page, dagster)
    drawn = {n["name"] for n in graph["nodes"]}
    assert drawn == {*ALL_IMAGES, LAMBDA_HARMONIZE, LAMBDA_CREATE}, graph["nodes"]
    for n in graph["nodes"]:  # long names are middle-truncated on the node, full in the tooltip
        head, _, tail = n["label"].partition("…")
        assert n["name"].startswith(head) and n["name"].endswith(tail), n
    keys = {n: _full_key(n, ALL_KEYS) for n in drawn}
    rendered_edges = {(keys.get(a, a), keys.get(b, b)) for a, b in _edges(graph)}
    assert rendered_edges == CASCADE, graph["edges"]
    # groups as drawn: bases, Lambda images, Lambda functions
    for group in ("base_images", "lambda_images", "lambda_functions"):
        assert page.locator(f'svg [data-tooltip="{group}"]').count()
    _log("graph checked")


def test_materialize_all_from_the_graph_builds_everything(page, dagster, stack_env) -> None:
    open_graph(page, dagster)
    run = launch_from_page(page, dagster, "Materialize all")
    assert {_key(k["path"]) for k in run["assetSelection"]} == ALL_KEYS
    assert dagster.wait_run(run["runId"])["status"] == "SUCCESS", dagster.log.read_text()[-3000:]
    _log("materialize all: run succeeded")

    assets = dagster.assets()
    for key, node in assets.items():
        assert node["assetMaterializations"][0]["runId"] == run["runId"], key
        assert node["staleStatus"] == "FRESH", (key, node["staleCauses"])
    for key in IMAGE_KEYS:
        meta = _meta(assets[key])
        assert meta["version"] == assets[key]["opVersion"]  # code version = content version
        assert meta["tag"] == "git-" + assets[key]["opVersion"][:12]
        assert str(meta["digest"]).startswith("sha256:")
        assert meta["cached"] is False and "first build" in str(meta["reasons"])

    # the functions exist on moto, pinned to the digest of their image
    from build_assets.aws.clients import make_client

    lam = make_client("lambda")  # stack_env: this test's AWS_* point at the stack's moto
    for fn, image in ((LAMBDA_HARMONIZE, HARMONIZE), (LAMBDA_CREATE, CREATE)):
        pinned = _meta(assets[f"image/{image}"])["pinned_uri"]
        assert lam.get_function(FunctionName=fn)["Code"]["ImageUri"] == pinned
        assert _meta(assets[f"lambda/{fn}"])["image_uri"] == pinned

    graph = open_graph(page, dagster)
    wait_for(
        lambda: all("Materialized" in n["text"] for n in page.evaluate(_GRAPH_JS)["nodes"]),
        30,
        "every node to show Materialized",
    )
    assert len(graph["nodes"]) == len(ALL_KEYS)


def test_edit_and_reload_marks_the_whole_cascade_stale(page, dagster) -> None:
    before = {k: n["opVersion"] for k, n in dagster.assets().items()}
    prepend(dagster.repo, DYNAMO, "# edited while the UI is open")  # in every base
    open_graph(page, dagster)
    page.get_by_role("button", name="Reload definitions").click()  # what a person does
    assets = wait_for(
        lambda: (a := dagster.assets())[DYNAMO_KEY]["opVersion"] != before[DYNAMO_KEY] and a,
        90,
        "the reloaded code location to show base-receipt-dynamo's new version",
    )
    _log("reloaded")
    # Merkle versions: every image on dynamo and every function got a new code version,
    # and Dagster shows the whole cascade stale at once (not one level per rebuild)
    for key, node in assets.items():
        assert node["opVersion"] != before[key], key
        assert node["staleStatus"] == "STALE", (key, node["staleStatus"])
        causes = {(_key(c["key"]["path"]), c["category"]) for c in node["staleCauses"]}
        assert (key, "CODE") in causes, (key, node["staleCauses"])

    graph = open_graph(page, dagster)
    wait_for(
        lambda: (
            sum("Unsynced" in n["text"] for n in page.evaluate(_GRAPH_JS)["nodes"]) == len(ALL_KEYS)
        ),
        30,
        "every node of the graph to show Unsynced",
    )
    assert len(graph["nodes"]) == len(ALL_KEYS)
    DOCS.mkdir(exist_ok=True)
    bottom = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('svg foreignObject.group')]"
        ".map(f => f.getBoundingClientRect().bottom))"
    )
    height = min(VIEWPORT["height"], int(bottom) + 60)
    page.screenshot(
        path=str(DOCS / "ui-asset-graph.png"), clip={**VIEWPORT, "x": 0, "y": 0, "height": height}
    )


def test_materialize_the_stale_base_from_its_node(page, dagster) -> None:
    new_version = dagster.assets()[DYNAMO_KEY]["opVersion"]
    open_graph(page, dagster)
    page.locator('svg [data-tooltip="base-receipt-dynamo"]').first.click()
    page.get_by_text("image / base-receipt-dynamo").first.wait_for()  # the asset's side panel
    page.get_by_text(new_version).first.wait_for()  # its code version, shown in the panel
    run = launch_from_page(page, dagster, "Materialize selected")
    assert [_key(k["path"]) for k in run["assetSelection"]] == [DYNAMO_KEY]
    assert dagster.wait_run(run["runId"])["status"] == "SUCCESS", dagster.log.read_text()[-3000:]
    _log("materialize selected: run succeeded")

    assets = dagster.assets()
    dynamo = assets[DYNAMO_KEY]
    assert dynamo["assetMaterializations"][0]["runId"] == run["runId"]
    meta = _meta(dynamo)
    assert meta["version"] == new_version and meta["cached"] is False
    assert "receipt_dynamo/client.py modified" in str(meta["reasons"])  # the plan's reason
    assert dynamo["staleStatus"] == "FRESH"
    for key in ALL_KEYS - {DYNAMO_KEY}:  # not rebuilt yet: still stale
        assert assets[key]["staleStatus"] == "STALE", key

    page.goto(f"{dagster.url}/runs/{run['runId']}")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.get_by_text("RUN_SUCCESS").first.wait_for()
    page.screenshot(path=str(DOCS / "ui-run.png"))

    page.goto(f"{dagster.url}/assets/image/base-receipt-dynamo")  # the asset's own page
    page.get_by_text("receipt_dynamo/client.py modified").first.wait_for()
    _log("reasons shown on the asset page")
