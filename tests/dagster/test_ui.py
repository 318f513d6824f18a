"""The Dagster UI as a person uses it: `dagster dev` on 127.0.0.1 against a copy of
examples/receipts and the real local stack (dockerd + registry + moto), driven by Debian's
Chromium through Playwright.

The root base builds `FROM` an image of the local registry (`PYTHON_BASE` in images.yaml),
which plays the external upstream registry, so the graph has an `upstream/...` observable root.

The tests run in order and share one `dagster dev` (webserver + daemon + code server):

1. the global asset lineage shows the external base at the root, every image and Lambda
   function node and the edges of the cascade (upstream -> dynamo -> label -> agent ->
   harmonize image -> its function; label -> create image -> its function), read from the
   rendered SVG and cross-checked with GraphQL;
2. "Observe selected" on the upstream node records the upstream digest as its data version;
3. "Materialize all" clicked on that page builds every image, creates both functions on moto;
4. an image's and a function's asset pages show their checks (`in_registry`,
   `dockerfile_context`, `runs_materialized_image`) passed after that run;
5. that run's view has the plan as its first step log entry (one line), its table as the
   `plan` markdown of an observation that the view renders ("Show Markdown": a real table, no
   raw `| … |` text in the log), and one `[image] ...` entry per state change of each image
   (the log filter finds one image's entries);
6. an edit to receipt_dynamo (in every base) + "Reload definitions" marks the whole cascade
   STALE (cause CODE) at once, and every node of the graph shows "Unsynced";
7. clicking the stale `base-receipt-dynamo` node and "Materialize selected" rebuilds it, and
   the plan's reason (`receipt_dynamo/client.py modified`) is in its materialization;
8. one more edit, reload and "Materialize" from the asset page: its Events tab plots `build_s`
   over the three materializations;
9. `build-assets materialize` builds the rest of the edited cascade; then the revert
   (`git checkout -- .`) + "Reload definitions": every tag is in the registry, yet Dagster
   recorded the edited versions and draws the whole cascade Unsynced; `build-assets
   materialize` records every image again as cached (no build), points the functions back,
   and the graph shows nothing Unsynced.

Screenshots in docs/ (ui-asset-graph.png: the stale cascade under its upstream root,
ui-run.png, ui-run-plan.png, ui-asset-checks.png, ui-build-seconds.png,
ui-asset-graph-after-revert.png) are rewritten only when BUILD_ASSETS_SCREENSHOTS=1, so a
test run leaves the work tree clean.
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
from build_assets.dagster.upstream import upstream_key
from build_assets.engine.progress import Progress
from build_assets.engine.registry import manifest_digest
from build_assets.stack.local import StackInfo
from tests.gitutil import (
    ALL_IMAGES,
    CREATE,
    DYNAMO,
    HARMONIZE,
    LAMBDA_CREATE,
    LAMBDA_HARMONIZE,
    commit_all,
    prepend,
    replace_in,
)

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCREENSHOTS = os.environ.get("BUILD_ASSETS_SCREENSHOTS") == "1"  # rewrite docs/*.png
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
# Wide enough that Dagster draws full asset nodes (name, status rows) of all five columns
# (upstream root, three bases, Lambda images, functions) rather than the zoomed-out
# "minimal" boxes whose labels are middle-truncated.
VIEWPORT = {"width": 2400, "height": 1000}
PAGE_VIEWPORT = {"width": 1600, "height": 900}  # asset pages and runs: no wide graph to draw
UPSTREAM_REPO = "ui-upstream/python"  # in the local registry, playing the upstream registry
UPSTREAM_TAG = "3.12"
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


def shot(page, name: str, **kwargs) -> None:
    """Save a screenshot as docs/NAME, only when BUILD_ASSETS_SCREENSHOTS=1 asks for it."""
    if SCREENSHOTS:
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), **kwargs)
        _log(f"screenshot docs/{name}")


def push_upstream(env: dict[str, str], ref: str, work: Path) -> str:
    """Build a tiny image with the stack's engine, push it as `ref`, return its digest."""
    ctx = work / "upstream"
    ctx.mkdir()
    (ctx / "release").write_text("3.12.0\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY release /release\n")
    for cmd in (["build", "-q", "-t", ref, str(ctx)], ["push", "-q", ref]):
        subprocess.run(["docker", *cmd], check=True, capture_output=True, env=env, timeout=120)
    repository, tag = ref.rsplit(":", 1)
    digest = manifest_digest(repository, tag)
    assert digest and digest.startswith("sha256:"), digest
    return digest


class Dagster:
    """A running `dagster dev` and its GraphQL API."""

    def __init__(self, url: str, repo: Path, log: Path, upstream: str, digest: str) -> None:
        self.url, self.repo, self.log = url, repo, log
        self.upstream = upstream  # the external base's reference (repo:tag)
        self.upstream_digest = digest
        self.upstream_key = _key(upstream_key(upstream).path)
        self.runs: dict[str, str] = {}  # what a test launched, for the later tests
        self.env: dict[str, str] = {}  # dagster dev's environment (the CLI steps use it too)

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
            " isObservable isMaterializable"
            " assetMaterializations(limit: 1) { runId metadataEntries { label"
            " ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }"
            " ... on BoolMetadataEntry { boolValue } } } } }"
        )["assetNodes"]
        return {_key(n["assetKey"]["path"]): n for n in nodes}

    def checks(self, key: str) -> dict[str, dict]:
        """Check name -> its execution for the asset's latest materialization."""
        nodes = self.gql(
            "query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { assetChecksOrError {"
            " ... on AssetChecks { checks { name executionForLatestMaterialization {"
            " runId status evaluation { success description } } } } } } }",
            {"k": [{"path": key.split("/")}]},
        )["assetNodes"]
        (node,) = nodes
        checks = node["assetChecksOrError"]["checks"]
        return {c["name"]: c["executionForLatestMaterialization"] for c in checks}

    def messages(self, run_id: str) -> list[str]:
        """The log messages of a run's steps (Dagster's own events and `context.log`)."""
        out = self.gql(
            "query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection {"
            " events { __typename ... on MessageEvent { message stepKey } } } } }",
            {"id": run_id},
        )["logsForRun"]["events"]
        return [e["message"] for e in out if e["__typename"] == "LogMessageEvent"]

    def observations(self, run_id: str) -> list[dict]:
        """The asset observations of a run: key, description, markdown metadata entries."""
        out = self.gql(
            "query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection {"
            " events { __typename ... on ObservationEvent { message assetKey { path }"
            " metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } } }",
            {"id": run_id},
        )["logsForRun"]["events"]
        return [e for e in out if e["__typename"] == "ObservationEvent"]

    def build_seconds(self, key: str) -> list[float]:
        """`build_s` of the asset's materializations, newest first."""
        (node,) = self.gql(
            "query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) {"
            " assetMaterializations(limit: 20) { metadataEntries { label"
            " ... on FloatMetadataEntry { floatValue } } } } }",
            {"k": [{"path": key.split("/")}]},
        )["assetNodes"]
        return [
            e["floatValue"]
            for m in node["assetMaterializations"]
            for e in m["metadataEntries"]
            if e["label"] == "build_s"
        ]

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
    upstream = f"{local_stack.registry}/{UPSTREAM_REPO}:{UPSTREAM_TAG}"
    digest = push_upstream({**os.environ, **local_stack.env()}, upstream, work)
    repo = make_demo_repo(work / "monorepo")
    # the root base builds FROM the "upstream" image instead of scratch: an external base
    replace_in(repo, "images.yaml", "{PYTHON_BASE: scratch}", f"{{PYTHON_BASE: {upstream}}}")
    commit_all(repo, "the root base on an external image")
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
    server = Dagster(f"http://127.0.0.1:{port}", repo, log_path, upstream, digest)
    server.env = env
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

    want_nodes, want_edges = len(ALL_KEYS) + 1, len(CASCADE) + 1  # + the upstream root

    def drawn() -> str | None:
        if len(page.evaluate(_GRAPH_JS)["nodes"]) >= want_nodes:
            return "expanded"
        if page.locator('svg [aria-label="unfold_more"]').count():
            return "collapsed"
        return None

    if wait_for(drawn, 60, "the asset graph to be drawn", every=0.2) == "collapsed":
        page.keyboard.press("Alt+KeyE")  # "Expand all groups" (a fresh profile: all collapsed)

    def complete() -> dict | None:
        g = page.evaluate(_GRAPH_JS)
        return g if len(g["nodes"]) >= want_nodes and len(g["edges"]) >= want_edges else None

    try:
        return wait_for(complete, 60, "every node and edge of the global asset lineage", every=0.2)
    except AssertionError as exc:  # say what was drawn, keep a picture of it
        png = dagster.log.with_name("graph-timeout.png")
        page.screenshot(path=str(png))
        drawn = [n["name"] for n in page.evaluate(_GRAPH_JS)["nodes"]]
        raise AssertionError(f"{exc}; drawn: {drawn}; screenshot: {png}") from None


_SCROLL_TOP_JS = """() => {
  for (const el of document.querySelectorAll('*'))
    if (el.scrollHeight > el.clientHeight + 1 && el.scrollTop > 0) el.scrollTop = 0;
}"""


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


def test_global_graph_shows_the_upstream_root_every_image_and_function_and_the_cascade(
    page, dagster
) -> None:
    up = dagster.upstream_key
    assets = dagster.assets()
    assert set(assets) == ALL_KEYS | {up}
    graphql_edges = {(_key(d["path"]), k) for k, n in assets.items() for d in n["dependencyKeys"]}
    assert graphql_edges == CASCADE | {(up, DYNAMO_KEY)}
    for key in ALL_KEYS:
        node = assets[key]
        assert node["staleStatus"] == "MISSING" and node["assetMaterializations"] == []
    # the external base: an observable (not materializable) root of the graph
    assert assets[up]["isObservable"] and not assets[up]["isMaterializable"]
    assert assets[up]["dependencyKeys"] == []

    graph = open_graph(page, dagster)
    up_name = up.split("/", 1)[1]
    drawn = {n["name"] for n in graph["nodes"]}
    assert drawn == {*ALL_IMAGES, LAMBDA_HARMONIZE, LAMBDA_CREATE, up_name}, graph["nodes"]
    for n in graph["nodes"]:  # long names are middle-truncated on the node, full in the tooltip
        head, _, tail = n["label"].partition("…")
        assert n["name"].startswith(head) and n["name"].endswith(tail), n
    keys = {n: _full_key(n, ALL_KEYS | {up}) for n in drawn}
    rendered_edges = {(keys.get(a, a), keys.get(b, b)) for a, b in _edges(graph)}
    assert rendered_edges == CASCADE | {(up, DYNAMO_KEY)}, graph["edges"]
    x = {n["name"]: n["x"] for n in graph["nodes"]}
    assert x[up_name] == min(x.values()) < x["base-receipt-dynamo"]  # drawn at the root
    # groups as drawn: upstream bases, bases, Lambda images, Lambda functions
    for group in ("upstream_images", "base_images", "lambda_images", "lambda_functions"):
        assert page.locator(f'svg [data-tooltip="{group}"]').count()
    _log("graph checked")


def test_observe_the_upstream_base_from_its_node(page, dagster) -> None:
    up = dagster.upstream_key
    open_graph(page, dagster)
    page.locator(f'svg [data-tooltip="{up.split("/", 1)[1]}"]').first.click()
    run = launch_from_page(page, dagster, "Observe selected")
    assert [_key(k["path"]) for k in run["assetSelection"]] == [up]
    assert dagster.wait_run(run["runId"])["status"] == "SUCCESS", dagster.log.read_text()[-3000:]
    (node,) = dagster.gql(
        "query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) {"
        " assetObservations(limit: 1) { runId tags { key value } } } }",
        {"k": [{"path": up.split("/")}]},
    )["assetNodes"]
    (obs,) = node["assetObservations"]
    tags = {t["key"]: t["value"] for t in obs["tags"]}
    assert obs["runId"] == run["runId"]
    assert tags["dagster/data_version"] == dagster.upstream_digest  # the upstream digest
    _log("upstream observed")


def test_materialize_all_from_the_graph_builds_everything(page, dagster, stack_env) -> None:
    open_graph(page, dagster)
    run = launch_from_page(page, dagster, "Materialize all")
    assert {_key(k["path"]) for k in run["assetSelection"]} == ALL_KEYS
    assert dagster.wait_run(run["runId"])["status"] == "SUCCESS", dagster.log.read_text()[-3000:]
    dagster.runs["all"] = run["runId"]
    _log("materialize all: run succeeded")

    assets = dagster.assets()
    for key in ALL_KEYS:
        node = assets[key]
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
        lambda: all(
            "Materialized" in n["text"]
            for n in page.evaluate(_GRAPH_JS)["nodes"]
            if n["name"] in {k.split("/", 1)[1] for k in ALL_KEYS}
        ),
        30,
        "every image and function node to show Materialized",
    )
    assert len(graph["nodes"]) == len(ALL_KEYS) + 1


def test_asset_pages_show_the_checks_passed(page, dagster) -> None:
    run_id = dagster.runs["all"]
    # GraphQL first: the checks ran in the materializing run and passed
    dynamo = dagster.checks(DYNAMO_KEY)
    assert set(dynamo) >= {"in_registry", "dockerfile_context"}, dynamo
    for name in ("in_registry", "dockerfile_context"):
        assert dynamo[name]["runId"] == run_id and dynamo[name]["status"] == "SUCCEEDED", dynamo
    assert "is in the registry at sha256:" in dynamo["in_registry"]["evaluation"]["description"]
    fn = dagster.checks(f"lambda/{LAMBDA_CREATE}")
    drift = fn["runs_materialized_image"]
    assert drift["runId"] == run_id and drift["status"] == "SUCCEEDED", fn

    # the asset page's Checks tab lists them with their status; the selected one's result
    page.set_viewport_size(PAGE_VIEWPORT)
    page.goto(f"{dagster.url}/assets/{DYNAMO_KEY}?view=checks")
    for name in ("in_registry", "dockerfile_context"):
        page.get_by_text(name, exact=True).first.wait_for()
    wait_for(
        lambda: page.get_by_text("Succeeded", exact=True).count() == 2,
        60,
        "both checks of base-receipt-dynamo listed as Succeeded",
        every=0.2,
    )
    page.get_by_text("in_registry", exact=True).first.click()
    page.get_by_text(re.compile(r"is in the registry at sha256:[0-9a-f]{64}")).first.wait_for()
    page.get_by_text("Passed", exact=True).first.wait_for()
    shot(page, "ui-asset-checks.png")

    page.goto(f"{dagster.url}/assets/lambda/{LAMBDA_CREATE}?view=checks")
    page.get_by_text("runs_materialized_image", exact=True).first.wait_for()
    page.get_by_text("Passed", exact=True).first.wait_for()
    _log("checks shown on the asset pages")


def test_the_run_view_shows_the_plan_table_and_one_entry_per_state_change(page, dagster) -> None:
    run_id = dagster.runs["all"]
    messages = dagster.messages(run_id)
    step_logs = [m for m in messages if m.startswith(("Plan at", "["))]
    line = step_logs[0]  # the plan comes first: one short line
    assert re.fullmatch(r"Plan at .*: 5 to build, 0 cached, 0 blocked", line), line
    # its table: markdown metadata of an observation, which the run view renders
    (observed,) = dagster.observations(run_id)
    assert observed["assetKey"]["path"] == DYNAMO_KEY.split("/")  # the run's first target
    (plan,) = [e["mdStr"] for e in observed["metadataEntries"] if e["label"] == "plan"]
    assert plan.startswith(line) and "| target | kind | tag | action | why |" in plan, plan
    rows = {
        name: action
        for name, action in re.findall(r"^\| (\S+) \|.*\| (\w+) \| [^|]+ \|$", plan, re.M)
        if name != "target"  # the header row
    }
    assert rows == {
        **dict.fromkeys(ALL_IMAGES, "build"),
        LAMBDA_HARMONIZE: "deploy",
        LAMBDA_CREATE: "deploy",
    }, plan
    # one entry per state change: each image is queued (or waits for its base), works, ends done
    # (a phase shorter than the builder's poll may not show: a COPY-only build is quick)
    seen = {}
    for name in ALL_IMAGES:
        mine = [m for m in messages if m.startswith(f"[{name}] image ")]
        states = seen[name] = [Progress.parse(m, 0.0).state for m in mine]  # type: ignore[union-attr]
        assert states[0] in ("queued", "waiting") and states[-1] == "done", (name, states, mine)
        assert len(set(states)) >= 3, (name, states)
    _log(f"states per image: {seen}")
    assert "[base-receipt-agent] image waiting for base-receipt-label" in messages

    # the run view, its log filtered to the build step (as a person picks the step), from the top
    page.set_viewport_size(PAGE_VIEWPORT)
    page.goto(f"{dagster.url}/runs/{run_id}?logs=step:build_images")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.get_by_text("STEP_SUCCESS").first.wait_for()  # the step's logs are loaded
    page.evaluate(_SCROLL_TOP_JS)  # a finished run's log opens at its end
    page.get_by_text(re.compile(r"^Plan at .*: 5 to build, 0 cached")).first.wait_for()
    page.get_by_text(re.compile(r"^\[base-receipt-dynamo\] image queued")).first.wait_for()
    assert page.get_by_text("| target | kind |").count() == 0  # no raw markdown in the log
    page.get_by_text("[Show Markdown]").first.click()  # the observation's `plan` entry
    dialog = page.get_by_role("dialog")
    for column in ("target", "kind", "tag", "action", "why"):  # rendered: a table
        dialog.get_by_role("columnheader", name=column).wait_for()
    assert dialog.get_by_role("row").count() == len(rows) + 1  # + its header row
    dialog.get_by_role("cell", name="create-labels-create", exact=True).wait_for()
    shot(page, "ui-run-plan.png")
    page.keyboard.press("Escape")

    # the log filter by image: one image's entries, first to last
    page.goto(f"{dagster.url}/runs/{run_id}?logs=[create-labels-create]")
    for state in ("waiting for base-receipt-label", "done"):
        page.get_by_text(f"[create-labels-create] image {state}").first.wait_for()
    assert page.get_by_text("[base-receipt-dynamo] image").count() == 0  # filtered out
    _log("plan table and per-image entries shown in the run view")


def _edit_and_reload(page, dagster: Dagster, line: str) -> dict[str, dict]:
    """Edit receipt_dynamo, click "Reload definitions"; the assets once the new version shows."""
    before = dagster.assets()[DYNAMO_KEY]["opVersion"]
    prepend(dagster.repo, DYNAMO, line)  # in every base
    open_graph(page, dagster)
    page.get_by_role("button", name="Reload definitions").click()  # what a person does
    assets = wait_for(
        lambda: (a := dagster.assets())[DYNAMO_KEY]["opVersion"] != before and a,
        90,
        "the reloaded code location to show base-receipt-dynamo's new version",
    )
    _log("reloaded")
    return assets


def test_edit_and_reload_marks_the_whole_cascade_stale(page, dagster) -> None:
    before = {k: n["opVersion"] for k, n in dagster.assets().items()}
    assets = _edit_and_reload(page, dagster, "# edited while the UI is open")
    # Merkle versions: every image on dynamo and every function got a new code version,
    # and Dagster shows the whole cascade stale at once (not one level per rebuild)
    for key in ALL_KEYS:
        node = assets[key]
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
        "every image and function node of the graph to show Unsynced",
    )
    assert len(graph["nodes"]) == len(ALL_KEYS) + 1
    bottom = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('svg foreignObject.group')]"
        ".map(f => f.getBoundingClientRect().bottom))"
    )
    height = min(VIEWPORT["height"], int(bottom) + 60)
    shot(page, "ui-asset-graph.png", clip={**VIEWPORT, "x": 0, "y": 0, "height": height})


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
    shot(page, "ui-run.png")

    page.goto(f"{dagster.url}/assets/image/base-receipt-dynamo")  # the asset's own page
    page.get_by_text("receipt_dynamo/client.py modified").first.wait_for()
    _log("reasons shown on the asset page")


def test_the_asset_page_plots_build_seconds_over_materializations(page, dagster) -> None:
    _edit_and_reload(page, dagster, "# edited again")
    page.goto(f"{dagster.url}/assets/{DYNAMO_KEY}")
    run = launch_from_page(page, dagster, "Materialize")
    assert [_key(k["path"]) for k in run["assetSelection"]] == [DYNAMO_KEY]
    assert dagster.wait_run(run["runId"])["status"] == "SUCCESS", dagster.log.read_text()[-3000:]
    seconds = dagster.build_seconds(DYNAMO_KEY)
    assert len(seconds) == 3 and all(s > 0 for s in seconds), seconds  # floats: plottable

    page.set_viewport_size(PAGE_VIEWPORT)
    page.goto(f"{dagster.url}/assets/{DYNAMO_KEY}")  # Overview: its Metadata section
    page.get_by_text("build_s", exact=True).first.wait_for()  # the table of the latest
    page.get_by_role("button", name="Plots").click()
    wait_for(lambda: page.locator("canvas").count() >= 3, 60, "the metadata plots", every=0.2)
    for label in ("build_s", "queue_wait_s", "push_s"):  # one plot per numeric entry
        page.get_by_text(label, exact=True).first.wait_for()
    page.get_by_text("build_s", exact=True).first.scroll_into_view_if_needed()
    shot(page, "ui-build-seconds.png")
    _log(f"build_s plotted: {seconds}")


def _materialize_cli(dagster: Dagster) -> dict:
    """`build-assets materialize --json` (what is stale) in the monorepo, against the same
    instance, registry and moto as `dagster dev`: what a person runs in a terminal."""
    proc = subprocess.run(
        [sys.executable, "-m", "build_assets", "materialize", "--json"],
        cwd=dagster.repo,
        env=dagster.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_after_a_revert_nothing_is_unsynced(page, dagster) -> None:
    # everything built and recorded at the edited versions (the previous tests built dynamo)
    summary = _materialize_cli(dagster)
    assert DYNAMO_KEY.split("/")[1] not in summary["built"]  # its tag is in the registry
    edited = dagster.assets()
    assert {k for k in ALL_KEYS if edited[k]["staleStatus"] != "FRESH"} == set()

    # the revert: every original tag is still in the registry, so by the registry's rule
    # only the functions are stale; Dagster recorded the edited versions, so it shows the
    # whole cascade Unsynced until the images are recorded again
    subprocess.run(["git", "checkout", "--", "."], cwd=dagster.repo, check=True)
    open_graph(page, dagster)
    page.get_by_role("button", name="Reload definitions").click()
    reverted = wait_for(
        lambda: (
            (a := dagster.assets())[DYNAMO_KEY]["opVersion"] != edited[DYNAMO_KEY]["opVersion"]
            and a
        ),
        90,
        "the reloaded code location to show the reverted versions",
    )
    assert {k for k in ALL_KEYS if reverted[k]["staleStatus"] == "STALE"} == ALL_KEYS

    summary = _materialize_cli(dagster)
    assert summary["built"] == [], summary  # nothing to build
    assert sorted(summary["cached"]) == sorted(ALL_IMAGES), summary  # recorded again
    assert set(summary["functions_updated"]) == {LAMBDA_HARMONIZE, LAMBDA_CREATE}
    assets = dagster.assets()
    for key in ALL_KEYS:
        assert assets[key]["staleStatus"] == "FRESH", (key, assets[key]["staleCauses"])
        assert assets[key]["opVersion"] == reverted[key]["opVersion"]
    for key in IMAGE_KEYS:
        meta = _meta(assets[key])
        assert meta["cached"] is True and meta["version"] == assets[key]["opVersion"], key

    graph = open_graph(page, dagster)
    names = {k.split("/", 1)[1] for k in ALL_KEYS}
    wait_for(
        lambda: all(
            "Materialized" in n["text"] and "Unsynced" not in n["text"]
            for n in page.evaluate(_GRAPH_JS)["nodes"]
            if n["name"] in names
        ),
        30,
        "every image and function node to show Materialized, none Unsynced",
    )
    assert len(graph["nodes"]) == len(ALL_KEYS) + 1
    bottom = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('svg foreignObject.group')]"
        ".map(f => f.getBoundingClientRect().bottom))"
    )
    height = min(VIEWPORT["height"], int(bottom) + 60)
    shot(
        page, "ui-asset-graph-after-revert.png", clip={**VIEWPORT, "x": 0, "y": 0, "height": height}
    )
    _log("after the revert: every image recorded as cached, nothing Unsynced")
