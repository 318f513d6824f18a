"""Bases exactly as declared, on a uv-workspace monorepo with multi-stage Dockerfiles (issue 18).

`services/api/Dockerfile` takes its base as `ARG RUNTIME_IMAGE=ghcr.io/acme/runtime:latest`,
builds in a `FROM ${RUNTIME_IMAGE} AS builder` stage, copies a tool from a real external
`FROM python:3.12-slim AS tools` stage and starts its final stage `FROM ${RUNTIME_IMAGE}` again.
Its manifest entry says `base: images-runtime`. Every FROM naming that arg is the manifest base:
the arg is reserved (setting it in `build_args` is one line, exit 2), and the default
(`ghcr.io/…`, unreachable here) is never an external base: not in the lock, not an upstream
asset, never resolved by `init` / `bases update`, never passed as the arg. The real external
stage is still found, pinned and passed. On the stack's engine both stages build on the
manifest base (its files are in the final image); nothing is pulled from public registries,
so the `tools` stage's image there is a FROM-scratch image pushed to the local registry.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from build_assets.core import lock as lk
from build_assets.core.dockerfile import image_froms, parse
from build_assets.core.lock import LOCK_FILE, ExternalBase, pinned_reference
from build_assets.core.versioning import worktree_versions
from build_assets.dagster import upstream
from build_assets.engine import registry as reg
from build_assets.engine.builders.base import make_request
from build_assets.errors import ManifestError
from build_assets.project import Project
from tests.core.test_lock import push_scratch
from tests.gitutil import commit_all, git, replace_in, write
from tests.importtime import run_cli

DIGEST = "sha256:" + "cd" * 32
TOOLS = "python:3.12-slim"
DEFAULT = "ghcr.io/acme/runtime:latest"
API_DOCKERFILE = "services/api/Dockerfile"
API = "services-api"
RUNTIME = "images-runtime"

MANIFEST = f"""\
images:
  {RUNTIME}:
    dockerfile: images/runtime/Dockerfile
    source_paths: [images/runtime/rootfs]
  {API}:
    dockerfile: {API_DOCKERFILE}
    base: {RUNTIME}
    source_paths: [pyproject.toml, uv.lock, packages/acme-core, services/api]
"""

API_TEXT = """\
# The API service, built in a builder stage on the runtime.
ARG RUNTIME_IMAGE={default}
FROM ${{RUNTIME_IMAGE}} AS builder
COPY pyproject.toml uv.lock /build/
COPY packages/acme-core /build/packages/acme-core
COPY services/api /build/services/api

FROM {tools} AS tools

FROM ${{RUNTIME_IMAGE}}
COPY --from=builder /opt/runtime/RELEASE /var/task/built-on
COPY --from=builder /build /var/task
COPY --from=tools /release /opt/tools-release
"""


def uv_monorepo(path: Path, tools: str = TOOLS, digest: str | None = DIGEST) -> Path:
    """A committed uv-workspace-like monorepo: a workspace root, one package, one service,
    the runtime base image (FROM scratch) and the manifest; `tools` is the external image
    of the service's `tools` stage, locked at `digest` (no lock when None)."""
    files = {
        "pyproject.toml": '[project]\nname = "acme"\nversion = "0"\n\n'
        '[tool.uv.workspace]\nmembers = ["packages/*", "services/*"]\n',
        "uv.lock": 'version = 1\nrequires-python = ">=3.12"\n',
        "packages/acme-core/pyproject.toml": '[project]\nname = "acme-core"\nversion = "0"\n',
        "packages/acme-core/src/acme_core/__init__.py": "VERSION = 1\n",
        "services/api/pyproject.toml": '[project]\nname = "api"\ndependencies = ["acme-core"]\n',
        "services/api/src/api/handler.py": "def handler(event, context):\n    return 1\n",
        API_DOCKERFILE: API_TEXT.format(default=DEFAULT, tools=tools),
        "images/runtime/Dockerfile": "FROM scratch\nCOPY images/runtime/rootfs/ /\n",
        "images/runtime/rootfs/opt/runtime/RELEASE": "runtime 1\n",
        "images.yaml": MANIFEST,
    }
    if digest is not None:
        files[LOCK_FILE] = f"bases:\n  {tools}: {digest}\n"
    write(path, files)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "uv workspace")
    return path


def cli(repo: Path, *args: str):
    return run_cli(*args, cwd=repo, home=repo.parent / "home")[0]


@pytest.fixture(autouse=True)
def _no_stack_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("BUILD_ASSETS_") and key != "BUILD_ASSETS_REGISTRY":
            monkeypatch.delenv(key)
    monkeypatch.setenv("BUILD_ASSETS_HOME", str(tmp_path / "home"))


# --- the arg that receives the base is reserved -------------------------------------------


def test_build_args_cannot_replace_the_base_whatever_the_arg_is_named(tmp_path: Path) -> None:
    repo = uv_monorepo(tmp_path / "repo")
    replace_in(
        repo,
        "images.yaml",
        f"    base: {RUNTIME}\n",
        f"    base: {RUNTIME}\n"
        "    build_args: {RUNTIME_IMAGE: 'registry.example.com/other:1', PY: '3.12'}\n",
    )
    manifest = f"{repo}/images.yaml"
    expected = (
        f"{manifest}: image '{API}', field 'build_args': 'RUNTIME_IMAGE' receives the base"
        f" ({API_DOCKERFILE}:3: `FROM ${{RUNTIME_IMAGE}}`); it is set from 'base'"
        f" ({RUNTIME}): remove it"
    )
    with pytest.raises(ManifestError) as err:
        worktree_versions(repo)
    assert err.value.lines == [expected]
    out = cli(repo, "plan")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"build-assets: error: {expected}"]
    assert out.stdout == ""

    # named explicitly with base_arg: the manifest's own validation says it, in one line
    replace_in(
        repo,
        "images.yaml",
        f"    base: {RUNTIME}\n",
        f"    base: {RUNTIME}\n    base_arg: RUNTIME_IMAGE\n",
    )
    out = cli(repo, "plan")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"build-assets: error: {manifest}: image '{API}', field 'build_args': 'RUNTIME_IMAGE'"
        " is set from 'base', remove it"
    ]


def test_without_a_base_the_same_arg_is_an_ordinary_build_arg(tmp_path: Path) -> None:
    other = "registry.example.com/acme/runtime:2"
    repo = uv_monorepo(tmp_path / "repo")
    replace_in(
        repo,
        "images.yaml",
        f"    base: {RUNTIME}\n",
        f"    build_args: {{RUNTIME_IMAGE: '{other}'}}\n",
    )
    (repo / LOCK_FILE).write_text(f"bases:\n  {TOOLS}: {DIGEST}\n  {other}: {DIGEST}\n")
    api = worktree_versions(repo)[API]
    assert [e.reference for e in api.externals] == [other, TOOLS]
    assert api.pinned_args == {"RUNTIME_IMAGE": pinned_reference(other, DIGEST)}


# --- a later stage on the base arg is the manifest base, not an external base ------------


def test_every_stage_on_the_base_arg_is_the_manifest_base(tmp_path: Path) -> None:
    repo = uv_monorepo(tmp_path / "repo")
    versions = worktree_versions(repo)  # the lock pins python only: no "not pinned" for ghcr
    api = versions[API]
    assert api.base == RUNTIME and api.base_arg == "RUNTIME_IMAGE"
    assert list(api.externals) == [ExternalBase(TOOLS, None, 8)]
    assert api.pinned_args == {}  # the literal FROM is pinned in the shipped Dockerfile
    request = make_request(api, "127.0.0.1:5999/services-api", base_uri="127.0.0.1:5999/rt@x")
    assert "RUNTIME_IMAGE" not in request.build_args  # only the base, as BASE_IMAGE/base_arg
    assert request.base_arg == "RUNTIME_IMAGE" and request.base_image == "127.0.0.1:5999/rt@x"
    edit = api.context.dockerfile_edit
    assert edit is not None
    shipped = edit((repo / API_DOCKERFILE).read_bytes()).decode()
    assert f"FROM python@{DIGEST} AS tools\n" in shipped
    assert shipped.count("FROM ${RUNTIME_IMAGE}") == 2  # both stages receive the base
    # the lock, the upstream assets and the translator's deps read the same bases
    assert upstream.external_bases(versions, API) == [TOOLS]
    assert [u.reference for u in upstream.upstreams(versions, repo / "images.yaml")] == [TOOLS]

    # a lock entry for the arg's default is one no image uses: plan says so, exit 2
    (repo / LOCK_FILE).write_text(f"bases:\n  {TOOLS}: {DIGEST}\n  {DEFAULT}: {DIGEST}\n")
    out = cli(repo, "plan")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"build-assets: error: {repo}/{LOCK_FILE}: '{DEFAULT}' is pinned but no image uses it"
        " any more: run `build-assets bases update`"
    )


def test_a_lock_entry_for_the_base_args_default_is_never_passed_as_the_arg(
    tmp_path: Path,
) -> None:
    """Whatever external bases an image is handed, the arg receiving its manifest base only
    carries that base; an external manifest `base:` is passed in it, pinned."""
    from build_assets.core.versioning import ImageVersion

    api = worktree_versions(uv_monorepo(tmp_path / "repo"))[API]
    pins = {DEFAULT: DIGEST, "x/tools:1": DIGEST}

    def passed(base: str, *externals: ExternalBase) -> dict[str, str]:
        spec = api.spec.replace(base=base)
        return ImageVersion(
            API,
            spec,
            api.version,
            None,
            lambda: None,
            externals=externals,
            pins=pins,
            base_arg="RUNTIME_IMAGE",
        ).pinned_args

    default, tools = ExternalBase(DEFAULT, "RUNTIME_IMAGE", 3), ExternalBase("x/tools:1", "T", 9)
    assert passed(RUNTIME, default, tools) == {"T": f"x/tools@{DIGEST}"}
    assert passed(DEFAULT, default) == {}  # a FROM line's default is not the manifest base
    manifest_base = ExternalBase(DEFAULT, "RUNTIME_IMAGE", None)
    assert passed(DEFAULT, manifest_base) == {"RUNTIME_IMAGE": pinned_reference(DEFAULT, DIGEST)}


def test_dagster_shows_no_upstream_node_for_the_base_args_default(tmp_path: Path) -> None:
    from dagster import AssetKey

    from build_assets.dagster.location import build_definitions
    from build_assets.dagster.resources import ImageBuildResource

    repo = uv_monorepo(tmp_path / "repo")
    resource = ImageBuildResource(repo=str(repo), registry="127.0.0.1:5999")
    graph = build_definitions(resource, with_sensor=False).get_repository_def().asset_graph
    keys = {key for key in graph.get_all_asset_keys() if key.path[0] == "upstream"}
    assert keys == {upstream.upstream_key(TOOLS)}
    api = graph.get(AssetKey(["image", API]))
    assert api.parent_keys == {AssetKey(["image", RUNTIME]), upstream.upstream_key(TOOLS)}


@pytest.mark.parametrize(
    ("text", "build_args", "base_arg", "expected"),
    [
        pytest.param(
            API_TEXT.format(default=DEFAULT, tools=TOOLS),
            {},
            "RUNTIME_IMAGE",
            [(TOOLS, None, None, 8)],
            id="uv-service",
        ),
        pytest.param(
            API_TEXT.format(default=DEFAULT, tools=TOOLS),
            {},
            None,
            [(DEFAULT, None, "RUNTIME_IMAGE", 3), (TOOLS, None, None, 8)],
            id="no-manifest-base-the-default-is-external",
        ),
        pytest.param(
            "ARG B\nFROM $B AS a\nFROM ${B:-x/y:1} AS b\nFROM a\n",
            {},
            "B",
            [],
            id="every-spelling-of-the-base-arg",
        ),
        pytest.param(
            "ARG B=r/base:1\nFROM ${B}-debug\n", {}, "B", [], id="derived-from-the-base-arg"
        ),
        pytest.param(
            "ARG B\nARG T=py:3\nFROM ${B}\nFROM ${T}\n",
            {"T": "py:4"},
            "B",
            [("py:4", None, "T", 4)],
            id="build-args-expand-other-froms",
        ),
        pytest.param(
            f"FROM python@{DIGEST} AS p\nFROM p\nFROM later\nFROM scratch AS later\n",
            {},
            None,
            [("python", DIGEST, None, 1), ("later", None, None, 3)],
            id="digest-earlier-stage-later-name",
        ),
        pytest.param(
            "ARG U\nFROM ${U}\nFROM py:3 AS a\nFROM py:3\n",
            {},
            None,
            [("py:3", None, None, 3)],
            id="unknown-arg-and-repeats",
        ),
    ],
)
def test_one_reading_of_the_froms(text, build_args, base_arg, expected) -> None:
    got = image_froms(parse(text), build_args, base_arg)
    assert [(f.reference, f.digest, f.arg, f.line) for f in got] == expected


def test_lock_and_upstream_agree_on_digest_pinned_froms(tmp_path: Path) -> None:
    """`FROM ref@sha256:…` is an upstream (its pinned digest checked) the lock need not pin."""
    repo = uv_monorepo(tmp_path / "repo", tools=f"{TOOLS}@{DIGEST}", digest=None)
    versions = worktree_versions(repo)  # no lock: nothing is left unpinned
    df = versions[API].dockerfile
    found = lk.image_bases(df, {}, RUNTIME, None, versions.manifest.images)
    assert found == [ExternalBase(TOOLS, None, 8, DIGEST)]
    assert versions[API].externals == ()
    assert upstream.upstreams(versions) == [upstream.Upstream(TOOLS, DIGEST)]
    assert upstream.external_bases(versions, API) == [TOOLS]


# --- on the stack: init, bases update and a real build -------------------------------------


def _image_files(repository: str, tag: str) -> dict[str, bytes]:
    """Path -> content of every regular file of an image in the registry (layers merged)."""
    manifest = reg.get_manifest(repository, tag)
    assert manifest is not None and "layers" in manifest, manifest
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = reg.get_blob(repository, layer["digest"])
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    files["/" + member.name.lstrip("./")] = handle.read()
    return files


@pytest.mark.stack
def test_init_and_bases_update_pin_only_the_real_external_stage(stack_env, tmp_path: Path) -> None:
    ns = f"tools{uuid.uuid4().hex[:8]}"
    tools = f"{stack_env.registry}/{ns}/python:3.12-slim"
    digest = push_scratch(stack_env.registry, f"{ns}/python", "3.12-slim", "tools 1")
    repo = uv_monorepo(tmp_path / "repo", tools=tools, digest=None)
    (repo / "images.yaml").unlink()
    commit_all(repo, "no manifest yet")

    out = cli(repo, "init")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "ghcr.io" not in out.stdout  # the default is never asked for
    text = (repo / "images.yaml").read_text()
    assert f"  {API}:\n" in text and f"    base: {RUNTIME}  # guess:" in text
    assert (repo / LOCK_FILE).read_text() == lk.render_lock({tools: digest})

    update = cli(repo, "bases", "update")
    assert update.returncode == 0, update.stderr
    assert update.stdout.splitlines() == [
        f"{tools}: unchanged at {digest[:19]}…",
        f"{repo / LOCK_FILE} is up to date",
    ]
    assert cli(repo, "plan").returncode == 0


@pytest.mark.stack
def test_both_stages_build_on_the_manifest_base(stack_env, tmp_path: Path) -> None:
    registry = f"{stack_env.registry}/uv{uuid.uuid4().hex[:8]}"
    tools = f"{registry}/ext/python:3.12-slim"
    digest = push_scratch(registry, "ext/python", "3.12-slim", "locked tools")
    repo = uv_monorepo(tmp_path / "repo", tools=tools, digest=digest)
    push_scratch(registry, "ext/python", "3.12-slim", "a newer tools")  # the tag moves on

    project = Project.from_env(repo=str(repo), registry=registry)
    versions = project.versions()
    outcomes = {o.name: o for o in project.scheduler().run(versions, [RUNTIME, API])}
    assert {n: o.status for n, o in outcomes.items()} == {RUNTIME: "built", API: "built"}
    files = _image_files(f"{registry}/{API}", versions[API].tag)
    assert files["/opt/runtime/RELEASE"] == b"runtime 1\n"  # the final stage's base
    assert files["/var/task/built-on"] == b"runtime 1\n"  # the builder stage's base
    assert files["/var/task/services/api/src/api/handler.py"].startswith(b"def handler")
    assert files["/opt/tools-release"] == b"locked tools"  # the external stage, as locked
